"""A PNG grid of the views the model is trained on, to check an augmentation recipe by eye (``cgh views``, in
cgh.commands.views).

One row per image; columns are the original, the teacher view, the student view and the local crops
(docs/method.md#multi-crop-views), in the order of the ``ViewSpec`` list. Views come from the same ``ViewAugment`` the
training loop uses (``cgh.augment.build_augment``), so what the picture shows is what the network sees, de-normalised
for display.

    grid_images(source, indices, size)       uint8 (n, 3, H, W) of the chosen images (file images: a centre square)
    draw_views(images, augment, seed)        the augmented views, one float (n, 3, s, s) tensor per spec
    save_view_grid(path, images, views, ...) the PNG
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from cgh.augment import ViewAugment
from cgh.config.views import ViewSpec
from cgh.data.decode import resize_center_crop, to_uint8_chw

_CELL_INCHES = 1.7  # each image cell; at 100 dpi a 170-px square, large enough to see a 32-px image's pixels
_DPI = 100


def grid_images(source, indices: Sequence[int], size: int) -> torch.Tensor:
    """The images ``indices`` of ``source`` as uint8 (n, 3, H, W): an ArraySource's as stored; a FileSource's decoded,
    resized so the shorter side is ``size`` and centre-cropped to ``size`` x ``size`` (the evaluation rule of
    cgh.data.decode). Training crops the full image in the loader workers instead; a centre square is what fits a
    grid cell."""
    if hasattr(source, "images"):  # ArraySource: uint8 (N, 3, H, W) in memory
        return source.images[list(indices)]
    return torch.stack([to_uint8_chw(resize_center_crop(source.load(i).convert("RGB"), size, size))
                        for i in indices])  # (n, 3, size, size)


@torch.no_grad()
def draw_views(images: torch.Tensor, augment: ViewAugment, seed: int) -> list[torch.Tensor]:
    """The views of ``images`` (uint8 (n, 3, H, W)) that ``augment`` draws after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return augment([images])


def _to_display(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """Normalised float (3, H, W) -> float (H, W, 3) in [0, 1]."""
    return (x * std + mean).clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def save_view_grid(path: str | os.PathLike, images: torch.Tensor, views: list[torch.Tensor],
                   specs: Sequence[ViewSpec], *, mean: Sequence[float], std: Sequence[float], teacher: str,
                   title: str, row_labels: Sequence[str], original: str = "original") -> str:
    """Write the grid as a PNG at ``path`` (parent folders created) and return its absolute path.

    images: the originals, uint8 (n, 3, H, W); views: one normalised float (n, 3, s, s) per spec of ``specs``
    ([teacher, student, *locals]); mean / std: the normalisation to undo; teacher: "weak" or "strong" (the teacher
    column's title); row_labels: one per image (e.g. its class name).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state; Figure.savefig renders with Agg

    n = images.shape[0]
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    titles = [
        f"{original}\n{images.shape[-1]}x{images.shape[-2]}",
        f"{teacher} view (teacher)\n{specs[0].size} px",
        f"strong view (student)\n{specs[1].size} px",
    ]
    titles += [f"local crop {i + 1}\n{spec.size} px" for i, spec in enumerate(specs[2:])]
    cols = len(titles)
    fig = Figure(figsize=(cols * _CELL_INCHES, n * _CELL_INCHES + 0.8), dpi=_DPI, layout="constrained")
    fig.suptitle(title, fontsize=11)
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        cells = [images[r].permute(1, 2, 0).numpy()] + [_to_display(v[r], mean_t, std_t) for v in views]
        for c, cell in enumerate(cells):
            ax = axes[r][c]
            # Nearest: a 32-px view is shown as its real pixels, not smoothed into something the model never sees.
            ax.imshow(cell, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r][0].set_ylabel(row_labels[r], fontsize=9)
    out = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, format="png")
    return out
