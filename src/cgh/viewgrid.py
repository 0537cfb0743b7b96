"""``cgh views``: a PNG grid of the views the model is trained on, to check an augmentation recipe by eye.

One row per image; columns are the original, the teacher view, the student view and, with ``--local N``, the first N
local crops (SPEC 3.3). Views come from the same ``ViewAugment`` the training loop uses, so what the picture shows is
what the network sees, de-normalised for display.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

from cgh.augment import NORMALIZATION, AugParams, ViewAugment, pretrain_views
from cgh.errors import CGHError, ConfigError

# Default global crop per dataset where it is not the stored image size (SPEC 4.2: STL-10's 96-px images are trained
# at 64 px). Array sets otherwise use their own size (CIFAR 32, Tiny-ImageNet 64); file sets use ImageNet's 224.
_DEFAULT_SIZE = {"stl10": 64}
_FILE_DEFAULT_SIZE = 224
_MAX_LOCAL = 4  # SPEC 3.3 defines four local crops
_CELL_INCHES = 1.7  # each image cell; at 100 dpi a 170-px square, large enough to see a 32-px image's pixels
_DPI = 100
_SYNTHETIC_IMAGES = 500


def _bounded_int(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help="dataset name: synthetic, cifar10, cifar100, stl10, tinyimagenet, imagenet, imagenet100, "
        "folder or npz (default: synthetic)",
    )
    parser.add_argument("--path", default=None, help="dataset root or file (not needed for synthetic)")
    parser.add_argument("--split", default="train", help="split to draw images from (default: train)")
    parser.add_argument(
        "--image-size",
        type=_bounded_int(8),
        default=None,
        metavar="PX",
        help="global crop size; default: the images' own size for array datasets (STL-10: 64, "
        "SPEC 4.2), 224 for file datasets",
    )
    parser.add_argument(
        "--num-images",
        type=_bounded_int(1, 64),
        default=8,
        metavar="N",
        help="rows of the grid, one image each (default: 8)",
    )
    parser.add_argument(
        "--local",
        type=_bounded_int(0, _MAX_LOCAL),
        default=0,
        metavar="N",
        help=f"also show N local crops, 0..{_MAX_LOCAL} (SPEC 3.3; default: 0)",
    )
    parser.add_argument(
        "--teacher",
        choices=("weak", "strong"),
        default="weak",
        help="teacher view: weak = crop+flip (ReSSL/CGH), strong = MoCo-v2's (default: weak)",
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the images and the augmentations (default: 0)")
    parser.add_argument("--out", default="views.png", metavar="PATH.png", help="output PNG (default: views.png)")


def _open(args: argparse.Namespace):
    try:
        from cgh.data import open_source
    except ImportError as e:  # the data package is another module of this project; say so instead of a traceback
        raise CGHError(f"cannot load datasets: cgh.data.open_source is unavailable ({e})") from e
    # The synthetic set is generated, not read: render a few hundred images to pick from instead of the 10000 of its
    # train split (seconds), since a picture of the augmentation needs only images of the same distribution.
    options = {"size": _SYNTHETIC_IMAGES} if args.dataset == "synthetic" else {}
    return open_source(args.dataset, args.path, args.split, **options)


def _file_images(source, indices: list[int], side: int) -> torch.Tensor:
    """Decode file images and bring them to one ``side`` x ``side`` size for the grid: shorter side resized to
    ``side`` (bilinear, antialiased by Pillow), centre square kept. Training crops the full image in the loader
    workers instead; a centre square is what fits a grid cell."""
    out = []
    for i in indices:
        img = source.load(i).convert("RGB")
        w, h = img.size
        scale = side / min(w, h)
        img = img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BILINEAR)
        w, h = img.size
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        out.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
    return torch.stack(out)  # (n, 3, side, side) uint8


def _to_display(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """Normalised float (3, H, W) -> float (H, W, 3) in [0, 1]."""
    return (x * std + mean).clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def run(args: argparse.Namespace) -> int:
    from matplotlib.figure import Figure  # no pyplot: no global backend state; Figure.savefig renders with Agg

    source = _open(args)
    if len(source) == 0:
        raise CGHError(f"{source.name}: the dataset is empty")
    n = min(args.num_images, len(source))
    rng = np.random.default_rng(args.seed)
    indices = sorted(int(i) for i in rng.choice(len(source), size=n, replace=False))

    if hasattr(source, "images"):  # ArraySource: uint8 (N, 3, H, W) in memory
        images = source.images[indices]
        size = args.image_size or _DEFAULT_SIZE.get(args.dataset, min(images.shape[-2:]))
    else:  # FileSource: decode a few files
        size = args.image_size or _FILE_DEFAULT_SIZE
        images = _file_images(source, indices, size)

    mean, std = NORMALIZATION.get(args.dataset, NORMALIZATION["folder"])
    try:
        specs = pretrain_views(size, teacher=args.teacher, num_local=args.local)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    augment = ViewAugment(specs, AugParams(), mean=mean, std=std)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        views = augment([images])
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    teacher = "weak" if args.teacher == "weak" else "strong"
    original = "original" if hasattr(source, "images") else "original, resized"
    titles = [
        f"{original}\n{images.shape[-1]}x{images.shape[-2]}",
        f"{teacher} view (teacher)\n{size} px",
        f"strong view (student)\n{size} px",
    ]
    titles += [f"local crop {i + 1}\n{spec.size} px" for i, spec in enumerate(specs[2:])]
    cols = len(titles)
    fig = Figure(figsize=(cols * _CELL_INCHES, n * _CELL_INCHES + 0.8), dpi=_DPI, layout="constrained")
    fig.suptitle(f"{source.name}: views seen in pretraining (seed {args.seed})", fontsize=11)
    axes = fig.subplots(n, cols, squeeze=False)
    labels = getattr(source, "labels", None)
    classes = getattr(source, "classes", [])
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
        label = int(labels[indices[r]]) if labels is not None else -1
        name = classes[label] if 0 <= label < len(classes) else f"#{indices[r]}"
        axes[r][0].set_ylabel(name, fontsize=9)

    out = os.path.abspath(os.path.expanduser(args.out))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, format="png")
    print(out)
    return 0
