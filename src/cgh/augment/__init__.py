"""On-device, batched augmentation (docs/method.md#augmentations), with kornia's image functions.

    AugParams(jitter=..., blur_p=...)     the strong-view recipe numbers (from config.AugConfig, by keyword)
    build_augment(cfg, specs)             the configured ViewAugment: what training, ``cgh views`` and the probes use
    ViewAugment(specs, params, mean, std) nn.Module: a loader Batch (or uint8 tensors) -> list of float views
    EvalTransform(size, mean, std)        nn.Module: uint8 (B,3,H,W) -> normalised float (B,3,size,size)

The views themselves (``ViewSpec``, ``pretrain_views``) are in cgh.config.views, the per-dataset statistics in
cgh.data.normalization; both names are re-exported here.

Everything works on whole batches on the input's device (CPU or GPU); there is no Python loop over samples and no
``.cuda()``. All randomness comes from torch's global RNG, so ``torch.manual_seed`` makes a run reproducible and the
RNG state saved in a training checkpoint covers augmentation too.

Built from kornia's functions (kornia.enhance, kornia.color, kornia.filters), not from kornia.augmentation's modules:
measured on this project's CPUs (benchmarks/augment_throughput.md), the two-view pipeline is 1.4-2.4x faster than the
same recipe from those modules, and 1.9-4.8x faster than a per-sample Pillow pipeline.
- The random resized crop (``cgh.augment.ops.random_resized_crop``) draws boxes with torchvision's algorithm,
  vectorised, resamples all crops at once with torchvision's ``antialias=True`` bilinear semantics (kornia's crop
  does not antialias when it shrinks a crop; PIL, used by the authors, does) and folds the flip into the resampling
  for free: 3.5-7x faster than kornia's crop at 32 px.
- Colour steps run on the whole batch with neutral parameters where a sample's coin flip is off, instead of the
  modules' gather / scatter; the hue step is a closed-form HSV rotation instead of kornia's general
  RGB -> HSV -> RGB round trip, equal to it to 1e-5 (tests/unit/test_augment.py); the jitter is ~2.7x faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.color as KC
import torch
import torch.nn.functional as F

from cgh.augment.ops import color_jitter, gaussian_blur, random_resized_crop, uniform
from cgh.config.views import REFERENCE_SIZE, AugParams, ViewSpec, check_scale, pretrain_views  # noqa: F401 - re-exported
from cgh.data.normalization import IMAGENET, NORMALIZATION, dataset_normalization  # noqa: F401 - re-exported

# ---------------------------------------------------------------------------------------------------------------------
# Modules


def _check_mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ValueError(f"mean and std must be 3 numbers each (RGB), std > 0; got mean={mean}, std={std}")
    return torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), torch.tensor(std, dtype=torch.float32).view(
        1, 3, 1, 1
    )


def _check_uint8_batch(x: object, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of uint8 (B, 3, H, W), got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise ValueError(f"{what} must have dtype torch.uint8 (B, 3, H, W) in [0, 255], got {x.dtype}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{what} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    return x


class ViewAugment(torch.nn.Module):
    """The pretraining augmentation: a list of uint8 batches -> one normalised float view per ``ViewSpec``.

    Input: a loader ``Batch``: ONE uint8 (B, 3, H, W) tensor of full images, from which every view is cropped
    independently per sample (array datasets: CIFAR, STL-10, Tiny-ImageNet), or ``len(specs)`` tensors already
    cropped to each spec's size by the loader workers (file datasets, ``batch.cropped``), in which case only flip and
    colour are applied here. A bare tensor is read as full images.
    Output: float32 (B, 3, size, size) per spec, on the input's device, clamped to [0, 1] and normalised.
    Strong views (docs/method.md#strong-view): crop, ColorJitter with p=jitter_p (kornia's torchvision-formula
    ``ColorJitter``; the order of the four operations is random per batch rather than per image), RandomGrayscale,
    Gaussian blur, horizontal flip. Weak views (docs/method.md#weak-view): crop and flip only. Flip is applied right
    after the crop; every later operation is mirror-symmetric, so the order does not change the distribution.
    """

    def __init__(
        self,
        specs: Sequence[ViewSpec],
        params: AugParams = AugParams(),  # noqa: B008 - frozen dataclass, safe as a default
        mean: Sequence[float] = IMAGENET[0],
        std: Sequence[float] = IMAGENET[1],
    ) -> None:
        super().__init__()
        if len(specs) == 0:
            raise ValueError("ViewAugment needs at least one ViewSpec")
        for i, spec in enumerate(specs):
            if not isinstance(spec, ViewSpec):
                raise ValueError(f"specs[{i}] must be a ViewSpec, got {type(spec).__name__}")
            if spec.size < 1:
                raise ValueError(f"specs[{i}].size must be a positive integer, got {spec.size}")
            check_scale(f"specs[{i}].scale", spec.scale)
            if not 0 < spec.ratio[0] <= spec.ratio[1]:
                raise ValueError(f"specs[{i}].ratio must be (low, high) with 0 < low <= high, got {spec.ratio}")
        self.specs = list(specs)
        self.params = params
        mean_t, std_t = _check_mean_std(mean, std)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

        # Blur sigma is defined at 224 px (AugParams docstring); the global (largest) view sets the resolution.
        rel = max(s.size for s in self.specs) / REFERENCE_SIZE if params.blur_relative else 1.0
        sigma = (params.blur_sigma[0] * rel, params.blur_sigma[1] * rel)
        # The kernel covers +-3 sigma_max and is odd (13 taps at 224 px, 3 at 32 px).
        kernel = 2 * math.ceil(3 * sigma[1]) + 1
        # Reflect padding needs kernel // 2 < size: a tiny view gets the largest odd kernel that fits.
        self._kernel = {
            spec.size: min(kernel, spec.size - 1 if spec.size % 2 == 0 else spec.size) for spec in self.specs
        }
        self.blur_sigma = sigma  # in effect, after scaling; logged by extra_repr
        self.blur_kernel = kernel

    def extra_repr(self) -> str:
        views = ", ".join(f"{s.size}px {'strong' if s.strong else 'weak'} scale={s.scale}" for s in self.specs)
        sigma = tuple(round(v, 4) for v in self.blur_sigma)
        return f"views=[{views}], blur_sigma={sigma}, blur_kernel={self.blur_kernel}"

    def forward(self, batch) -> list[torch.Tensor]:
        """``batch``: a loader ``Batch`` (cgh.data), whose ``cropped`` says whether its views are full images or one
        crop per spec; or one uint8 (B, 3, H, W) tensor of full images; or a list of them (one tensor of full images,
        or one pre-cropped tensor per spec when there are several specs)."""
        if isinstance(batch, torch.Tensor):
            views, precropped = [batch], False
        elif hasattr(batch, "cropped"):
            views, precropped = list(batch.views), bool(batch.cropped)
        else:
            views = list(batch)
            precropped = len(views) == len(self.specs) > 1
        expected = len(self.specs) if precropped else 1
        if len(views) != expected:
            raise ValueError(
                f"ViewAugment expects 1 tensor of full images or {len(self.specs)} pre-cropped tensors (one per "
                f"ViewSpec), got {len(views)}" + (" pre-cropped" if precropped else "")
            )
        for i, v in enumerate(views):
            _check_uint8_batch(v, f"views[{i}]")
        batch = views[0].shape[0]
        if any(v.shape[0] != batch for v in views):
            raise ValueError(f"all input tensors must have the same batch size, got {[v.shape[0] for v in views]}")

        out = []
        if not precropped:
            full = views[0].float().div_(255.0)  # uint8 -> [0, 1] once, shared by all views
            for spec in self.specs:
                x = random_resized_crop(full, spec.size, spec.scale, spec.ratio, self.params.flip_p)
                out.append(self._finish(x, spec))
        else:
            for i, (spec, v) in enumerate(zip(self.specs, views, strict=True)):
                if v.shape[-2:] != (spec.size, spec.size):
                    raise ValueError(
                        f"pre-cropped views[{i}] must be {spec.size}x{spec.size} (specs[{i}].size), "
                        f"got {tuple(v.shape[-2:])}"
                    )
                x = v.float().div_(255.0)
                flip = torch.rand(batch, device=x.device) < self.params.flip_p
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
                out.append(self._finish(x, spec))
        return out

    def _finish(self, x: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
        if spec.strong:
            x = self._strong_colour(x, self._kernel[spec.size])
        # Every step keeps [0, 1] up to rounding; clamp anyway so that every view is exactly in range
        # (docs/method.md#strong-view step 6).
        x = x.clamp_(0.0, 1.0)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return x.sub_(mean).div_(std)

    def _strong_colour(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        """docs/method.md#strong-view steps 2-4 on a float (B, 3, S, S) batch in [0, 1]."""
        p, n, device = self.params, x.shape[0], x.device
        if p.jitter_p > 0 and any(v > 0 for v in p.jitter):
            x = color_jitter(x, p.jitter, p.jitter_p)
        if p.grayscale_p > 0:  # torchvision RandomGrayscale: ITU-R 601 luma copied to the three channels
            grey = torch.rand(n, device=device) < p.grayscale_p
            x = torch.where(grey.view(-1, 1, 1, 1), KC.rgb_to_grayscale(x).expand_as(x), x)
        if p.blur_p > 0 and kernel >= 3:
            sigma = uniform(n, *self.blur_sigma, device)
            chosen = torch.rand(n, device=device) < p.blur_p
            if x.device.type == "cpu":
                # Blur only the chosen samples: at 224 px the blur is the costliest step, and half the batch skips it.
                rows = chosen.nonzero().squeeze(1)
                if rows.numel() > 0:
                    x = x.index_copy(0, rows, gaussian_blur(x.index_select(0, rows), sigma[rows], kernel))
            else:  # on a GPU, selecting the rows would wait for the device (nonzero's size): blur all, keep the chosen
                x = torch.where(chosen.view(-1, 1, 1, 1), gaussian_blur(x, sigma, kernel), x)
        return x


class EvalTransform(torch.nn.Module):
    """Test / memory-bank transform (docs/method.md#test-transforms): uint8 (B, 3, H, W) -> float32 (B, 3, size, size),
    normalised.

    If the images are already ``size`` x ``size`` (CIFAR at 32, Tiny-ImageNet at 64), only convert and normalise, as
    the authors do for small images. Otherwise resize the shorter side to ``resize`` (default
    ``cgh.data.decode.eval_resize(size)``: 256 for 224, the size itself below 224) with antialiased bilinear
    interpolation and take the centre ``size`` crop, e.g. STL-10's 96-px arrays evaluated at 64 px. Sizes and offsets
    follow cgh.data.decode's one evaluation rule (torchvision's ``Resize`` / ``CenterCrop``), as the file loaders do.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *, resize: int | None = None) -> None:
        from cgh.data.decode import eval_resize

        super().__init__()
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        resize = eval_resize(size) if resize is None else resize
        if not isinstance(resize, int) or resize < size:
            raise ValueError(f"resize must be an integer >= size ({size}), got {resize!r}")
        self.size = size
        self.resize = resize
        mean_t, std_t = _check_mean_std(mean, std)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from cgh.data.decode import center_crop_box, resized_shape

        x = _check_uint8_batch(images, "images").float().div_(255.0)
        height, width = x.shape[-2:]
        if (height, width) != (self.size, self.size):
            new_h, new_w = resized_shape(height, width, self.resize)
            if (new_h, new_w) != (height, width):
                x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
            top, left = center_crop_box(new_h, new_w, self.size)
            x = x[..., top : top + self.size, left : left + self.size].clamp_(0.0, 1.0)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std


def aug_params(aug) -> AugParams:
    """The strong-view numbers of a config's ``aug`` section (config.AugConfig)."""
    return AugParams(jitter=tuple(aug.jitter), jitter_p=aug.jitter_p, grayscale_p=aug.grayscale_p, blur_p=aug.blur_p,
                     blur_sigma=tuple(aug.blur_sigma), blur_relative=aug.blur_relative, flip_p=aug.flip_p)


def build_augment(cfg, specs: Sequence[ViewSpec]) -> ViewAugment:
    """The configured augmentation for ``specs``: the recipe numbers of ``cfg.aug`` and the normalisation of
    ``cfg.data`` (its own mean/std, else the dataset's). Training, ``cgh views`` and the probes all build it here."""
    mean, std = dataset_normalization(cfg.data)
    return ViewAugment(specs, aug_params(cfg.aug), mean, std)
