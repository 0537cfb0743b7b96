"""The pretraining view recipe: which crops a step sees, shared by the loaders (which cut file crops in workers) and
the on-device augmentation (which crops array images and applies colour). Nothing here touches pixels.

    ViewSpec(size, scale, strong, ratio=(3/4, 4/3))  one view: RandomResizedCrop(size, scale, ratio), then the strong
                                                     recipe (jitter, grayscale, blur) when ``strong``, and a flip
    pretrain_views(image_size, teacher=...)          [teacher view, student view, *local views]

Each method declares its teacher view (``teacher_view`` on the method class, cgh.methods): weak for ReSSL and CGH,
strong for MoCo-v2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The resolution the authors' recipe numbers (blur sigma, local crop sizes) are defined at.
REFERENCE_SIZE = 224


@dataclass(frozen=True)
class ViewSpec:
    """One augmented view: RandomResizedCrop to ``size`` with area ``scale`` and aspect ``ratio``, then either the
    strong MoCo-v2 recipe (colour jitter, grayscale, blur, flip) or, when ``strong`` is False, a flip only."""

    size: int
    scale: tuple[float, float]
    strong: bool
    ratio: tuple[float, float] = (3 / 4, 4 / 3)



# SPEC 3.3: local crop sizes and area scales of the multi-crop transform, defined for a 224-px global crop.
_LOCAL_SIZES_224 = (192, 160, 128, 96)
_LOCAL_SCALES = ((0.172, 0.86), (0.143, 0.715), (0.114, 0.571), (0.086, 0.429))
_MIN_LOCAL_SIZE = 8


def check_scale(name: str, scale: Sequence[float]) -> tuple[float, float]:
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {tuple(scale)}")
    return (float(scale[0]), float(scale[1]))


def pretrain_views(
    image_size: int,
    *,
    teacher: str = "weak",
    weak_scale: tuple[float, float] = (0.2, 1.0),
    strong_scale: tuple[float, float] = (0.2, 1.0),
    num_local: int = 0,
    local_sizes: Sequence[int] | None = None,
    local_scales: Sequence[tuple[float, float]] | None = None,
) -> list[ViewSpec]:
    """The pretraining views, in the order the methods consume them: ``[teacher, student, *locals]``.

    ``teacher="weak"``: crop + flip only for the teacher (ReSSL and CGH, SPEC 3.2), scale ``weak_scale``.
    ``teacher="strong"``: two identically distributed strong views (MoCo-v2's ``ssl_transforms``, SPEC 3.2), both
    with ``strong_scale``. The student view is always strong with ``strong_scale`` (SPEC 3.1: (0.2, 1.0)).
    Local views (SPEC 3.3) are strong. Without ``local_sizes`` their sizes are 192, 160, 128, 96 scaled by
    ``image_size / 224`` (rounded, at least 8 px: 32 px gives 27, 23, 18, 14), so ``num_local`` is at most 4;
    ``local_sizes`` are absolute pixels. Without ``local_scales`` the scales are SPEC 3.3's, for at most 4 locals.
    """
    if not isinstance(image_size, int) or image_size < _MIN_LOCAL_SIZE:
        raise ValueError(f"image_size must be an integer >= {_MIN_LOCAL_SIZE}, got {image_size!r}")
    if teacher not in ("weak", "strong"):
        raise ValueError(f"teacher must be 'weak' (ReSSL/CGH) or 'strong' (MoCo-v2), got {teacher!r}")
    weak_scale = check_scale("weak_scale", weak_scale)
    strong_scale = check_scale("strong_scale", strong_scale)
    if not isinstance(num_local, int) or num_local < 0:
        raise ValueError(f"num_local must be a non-negative integer, got {num_local!r}")

    if local_sizes is None:
        if num_local > len(_LOCAL_SIZES_224):
            raise ValueError(
                f"num_local={num_local} needs explicit local_sizes: SPEC 3.3 defines {len(_LOCAL_SIZES_224)} local "
                f"crops {list(_LOCAL_SIZES_224)} (at 224 px)"
            )
        local_sizes = [max(_MIN_LOCAL_SIZE, round(s * image_size / REFERENCE_SIZE)) for s in _LOCAL_SIZES_224]
        local_sizes = local_sizes[:num_local]
    elif len(local_sizes) != num_local or any(not isinstance(s, int) or s < 1 for s in local_sizes):
        raise ValueError(f"local_sizes must be {num_local} positive integers (num_local), got {list(local_sizes)}")
    if local_scales is None:
        if num_local > len(_LOCAL_SCALES):
            raise ValueError(
                f"num_local={num_local} needs explicit local_scales: SPEC 3.3 defines {len(_LOCAL_SCALES)} "
                f"local scales {list(_LOCAL_SCALES)}"
            )
        local_scales = _LOCAL_SCALES[:num_local]
    elif len(local_scales) != num_local:
        raise ValueError(f"local_scales must have {num_local} (low, high) pairs (num_local), got {list(local_scales)}")

    if teacher == "weak":
        views = [ViewSpec(image_size, weak_scale, strong=False), ViewSpec(image_size, strong_scale, strong=True)]
    else:
        views = [ViewSpec(image_size, strong_scale, strong=True), ViewSpec(image_size, strong_scale, strong=True)]
    for i, (size, scale) in enumerate(zip(local_sizes, local_scales, strict=True)):
        views.append(ViewSpec(int(size), check_scale(f"local_scales[{i}]", scale), strong=True))
    return views
