"""The pretraining view recipe: which crops a step sees, shared by the loaders (which cut file crops in workers) and
the on-device augmentation (which crops array images and applies colour). Nothing here touches pixels.

    ViewSpec(size, scale, strong, ratio=(3/4, 4/3))  one view: RandomResizedCrop(size, scale, ratio), then the strong
                                                     recipe (jitter, grayscale, blur) when ``strong``, and a flip
    pretrain_views(image_size, teacher=...)          [teacher view, student view, *local views]
    AugParams(jitter=..., blur_p=...)                the strong recipe's numbers, checked here (the one place)

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



@dataclass(frozen=True)
class AugParams:
    """The strong-view recipe numbers. Defaults are docs/method.md#strong-view (MoCo-v2 ``aug+`` = ReSSL's strong view).

    ``blur_sigma`` is in pixels at 224 px: the authors' code applies a PIL ``GaussianBlur`` whose radius (PIL's radius
    *is* the Gaussian's standard deviation) is drawn from U[0.1, 2.0] to 224-px crops (docs/method.md#strong-view step
    4). With ``blur_relative`` (default) sigma and the kernel are scaled by ``global size / 224``, where the global size
    is the largest view of the ``ViewAugment`` (its 224 crop on ImageNet, so local crops get the same absolute blur
    as in the authors' multi-crop code, docs/method.md#multi-crop-views). Why: blur is meant to remove fine detail
    relative to the object; a sigma of 2 px on a 32-px CIFAR image is a sigma of 14 px at 224 and erases the image. At
    32 px the scaled sigma is at most 0.29 px, almost a no-op, which is close to the MoCo CIFAR-10 recipe that uses no
    blur at all (docs/method.md#moco-cifar-recipe); set ``blur_p=0`` for exactly that.
    ``blur_relative=False`` uses sigma as given.
    """

    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
                                                                      # (docs/method.md#strong-view step 2)
    jitter_p: float = 0.8  # docs/method.md#strong-view step 2
    grayscale_p: float = 0.2  # docs/method.md#strong-view step 3
    blur_p: float = 0.5  # docs/method.md#strong-view step 4
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # docs/method.md#strong-view step 4, pixels at 224 px
    blur_relative: bool = True  # scale sigma by global size / 224 (see the class docstring)
    flip_p: float = 0.5  # docs/method.md#strong-view step 5 and docs/method.md#weak-view

    def __post_init__(self) -> None:
        # Accept lists (the YAML config's type) and store tuples, so that the dataclass stays hashable.
        object.__setattr__(self, "jitter", tuple(float(v) for v in self.jitter))
        object.__setattr__(self, "blur_sigma", tuple(float(v) for v in self.blur_sigma))
        problems = aug_problems(jitter=self.jitter, jitter_p=self.jitter_p, grayscale_p=self.grayscale_p,
                                blur_p=self.blur_p, blur_sigma=self.blur_sigma, flip_p=self.flip_p)
        if problems:
            raise ValueError("; ".join(f"AugParams.{k} must be {want}, got {value}" for k, value, want in problems))


def aug_problems(**values) -> list[tuple[str, object, str]]:
    """The range checks of the augmentation numbers, in one place: (name, value, what was expected) for each value
    out of range. Names are AugParams' / config.AugConfig's (jitter, jitter_p, grayscale_p, blur_p, blur_sigma,
    flip_p, weak_scale, strong_scale); only the names given are checked."""
    out = []
    for name in ("jitter_p", "grayscale_p", "blur_p", "flip_p"):
        if name in values and not 0.0 <= values[name] <= 1.0:
            out.append((name, values[name], "a probability in [0, 1]"))
    jitter = values.get("jitter")
    if jitter is not None:
        if len(jitter) != 4 or any(x < 0 for x in jitter):
            out.append(("jitter", jitter, "four non-negative numbers [brightness, contrast, saturation, hue]"))
        elif jitter[3] > 0.5:
            out.append(("jitter", jitter, "a hue (the fourth number) in [0, 0.5]"))
    sigma = values.get("blur_sigma")
    if sigma is not None and not (len(sigma) == 2 and 0 < sigma[0] <= sigma[1]):
        out.append(("blur_sigma", sigma, "a pair [low, high] with 0 < low <= high"))
    for name in ("weak_scale", "strong_scale"):
        scale = values.get(name)
        if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            out.append((name, scale, "a pair [low, high] with 0 < low <= high <= 1"))
    return out


# docs/method.md#multi-crop-views: local crop sizes and area scales of the multi-crop transform, defined for a 224-px
# global crop.
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

    ``teacher="weak"``: crop + flip only for the teacher (ReSSL and CGH, docs/method.md#weak-view), scale
    ``weak_scale``. ``teacher="strong"``: two identically distributed strong views (MoCo-v2's ``ssl_transforms``,
    docs/method.md#weak-view), both with ``strong_scale``. The student view is always strong with ``strong_scale``
    (docs/method.md#strong-view: (0.2, 1.0)). Local views (docs/method.md#multi-crop-views) are strong. Without
    ``local_sizes`` their sizes are 192, 160, 128, 96 scaled by ``image_size / 224`` (rounded, at least 8 px: 32 px
    gives 27, 23, 18, 14), so ``num_local`` is at most 4; ``local_sizes`` are absolute pixels. Without ``local_scales``
    the scales are those of docs/method.md#multi-crop-views, for at most 4 locals.
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
                f"num_local={num_local} needs explicit local_sizes: docs/method.md#multi-crop-views defines "
                f"{len(_LOCAL_SIZES_224)} local "
                f"crops {list(_LOCAL_SIZES_224)} (at 224 px)"
            )
        local_sizes = [max(_MIN_LOCAL_SIZE, round(s * image_size / REFERENCE_SIZE)) for s in _LOCAL_SIZES_224]
        local_sizes = local_sizes[:num_local]
    elif len(local_sizes) != num_local or any(not isinstance(s, int) or s < 1 for s in local_sizes):
        raise ValueError(f"local_sizes must be {num_local} positive integers (num_local), got {list(local_sizes)}")
    if local_scales is None:
        if num_local > len(_LOCAL_SCALES):
            raise ValueError(
                f"num_local={num_local} needs explicit local_scales: docs/method.md#multi-crop-views defines "
                f"{len(_LOCAL_SCALES)} "
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
