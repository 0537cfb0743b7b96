"""On-device, batched augmentation (docs/method.md#augmentations), with kornia's image functions.

    AugParams(jitter=..., blur_p=...)     the strong-view recipe numbers (from config.AugConfig, by keyword)
    build_augment(cfg, specs)             the configured ViewAugment: what training, ``cgh views`` and the probes use
    ViewAugment(specs, params, mean, std) nn.Module: a loader Batch (or uint8 tensors) -> list of float views
    EvalTransform(size, mean, std)        nn.Module: uint8 (B,3,H,W) -> normalised float (B,3,size,size)

The views themselves (``ViewSpec``, ``pretrain_views``) are in cgh.views, the per-dataset statistics in
cgh.data.normalization; both names are re-exported here.

Everything works on whole batches on the input's device (CPU or GPU); there is no Python loop over samples and no
``.cuda()``. All randomness comes from torch's global RNG, so ``torch.manual_seed`` makes a run reproducible and the
RNG state saved in a training checkpoint covers augmentation too.

Built from kornia's functions (kornia.enhance, kornia.color, kornia.filters), not from kornia.augmentation's modules:
measured on this project's CPUs (benchmarks/augment_throughput.md), the two-view pipeline is 1.4-2.4x faster than the
same recipe from those modules, and 1.9-4.8x faster than a per-sample Pillow pipeline.
- The random resized crop (``_random_resized_crop``) draws boxes with torchvision's algorithm, vectorised, resamples
  all crops at once with torchvision's ``antialias=True`` bilinear semantics (kornia's crop does not antialias when
  it shrinks a crop; PIL, used by the authors, does) and folds the flip into the resampling for free: 3.5-7x faster
  than kornia's crop at 32 px.
- Colour steps run on the whole batch with neutral parameters where a sample's coin flip is off, instead of the
  modules' gather / scatter; the hue step is a closed-form HSV rotation instead of kornia's general
  RGB -> HSV -> RGB round trip, equal to it to 1e-5 (tests/unit/test_augment.py); the jitter is ~2.7x faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.color as KC
import kornia.enhance as KE
import kornia.filters as KF
import torch
import torch.nn.functional as F

from cgh.data.normalization import IMAGENET, NORMALIZATION, dataset_normalization  # noqa: F401 - re-exported
from cgh.views import REFERENCE_SIZE, AugParams, ViewSpec, check_scale, pretrain_views  # noqa: F401 - re-exported

# ---------------------------------------------------------------------------------------------------------------------
# Batched RandomResizedCrop


def _crop_boxes(
    batch: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer crop boxes (top, left, h, w), each (B,), drawn with torchvision's ``RandomResizedCrop.get_params``:
    up to 10 tries of area ~ U(scale) * H * W and log-aspect ~ U(log ratio); the first try that fits is used,
    otherwise a centre crop of the whole image clamped to ``ratio``. Vectorised: all 10 tries are drawn at once."""
    tries = 10
    area = height * width
    target = torch.empty(batch, tries, device=device).uniform_(scale[0], scale[1]) * area  # (B, T)
    log_ratio = torch.empty(batch, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))  # (B, T)
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first try that fits (0 if none)
    w = w.gather(1, first).squeeze(1)  # (B,)
    h = h.gather(1, first).squeeze(1)
    any_fit = fits.any(dim=1)

    # Fallback (torchvision): whole image, clamped to the ratio range, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    h = torch.where(any_fit, h, torch.full_like(h, fh))

    # torch.randint(0, H - h + 1) per sample, as a uniform draw scaled by each sample's own range.
    top = torch.floor(torch.rand(batch, device=device) * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(torch.rand(batch, device=device) * (width - w + 1)).clamp_(max=width - w)
    top = torch.where(any_fit, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_fit, left, torch.full_like(left, (width - fw) // 2))
    return top, left, h, w


def _grid_coords(start: torch.Tensor, length: torch.Tensor, out: int, full: int) -> torch.Tensor:
    """Normalised ``grid_sample`` coordinates (align_corners=False) along one axis, (B, out), for enlarging a crop.

    Output pixel u of the crop [start, start + length) samples input pixel p = start + (u + 0.5) * length / out - 0.5
    (half-pixel centres, as torchvision's and PIL's resize), clamped to the crop's first and last pixel centres so
    that, as in torchvision's crop-then-resize, no pixel outside the crop leaks in at its edges."""
    u = torch.arange(out, device=start.device, dtype=torch.float32)
    p = start.unsqueeze(1) + (u + 0.5) * (length / out).unsqueeze(1) - 0.5  # (B, out), input pixel centres
    p = torch.minimum(torch.maximum(p, start.unsqueeze(1)), (start + length - 1).unsqueeze(1))
    return (2.0 * p + 1.0) / full - 1.0


def _resample_matrix(start: torch.Tensor, length: torch.Tensor, out: int, full: int) -> torch.Tensor:
    """(B, out, full) row-stochastic matrix that resizes the crop [start, start + length) of an axis of length ``full``
    to ``out`` pixels with antialiased bilinear weights: PIL's and torchvision's ``antialias=True`` triangle filter,
    whose support widens by length / out when shrinking, restricted to the crop and renormalised."""
    scale = (length / out).unsqueeze(1)  # (B, 1) input pixels per output pixel
    u = torch.arange(out, device=start.device, dtype=torch.float32)
    centre = start.unsqueeze(1) + (u + 0.5) * scale  # (B, out), edge-based input coordinate
    x = torch.arange(full, device=start.device, dtype=torch.float32) + 0.5  # input pixel centres
    t = (x.view(1, 1, -1) - centre.unsqueeze(2)) / scale.clamp(min=1.0).unsqueeze(2)  # (B, out, full)
    w = (1.0 - t.abs()).clamp_(min=0.0)
    inside = (x.view(1, 1, -1) > start.view(-1, 1, 1)) & (x.view(1, 1, -1) < (start + length).view(-1, 1, 1))
    w = w * inside
    return w / w.sum(dim=2, keepdim=True)


def _random_resized_crop(
    images: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float], flip_p: float
) -> torch.Tensor:
    """Float (B, C, H, W) -> (B, C, size, size): an independent random resized crop per sample, then a horizontal
    flip with probability ``flip_p`` folded into the resampling (mirrored x coordinates), so it costs nothing.

    Semantics are torchvision's ``RandomResizedCrop`` on tensors with ``antialias=True`` (bilinear; antialiased when a
    crop is shrunk, like PIL's resize in the authors' code). Two batched implementations, picked per call by speed
    (measured in benchmarks/augment_throughput.md): when no crop in the batch is shrunk (always on CIFAR, where crops
    of a 32-px image are resized to 32 px) one ``grid_sample``, whose bilinear is exact there; otherwise a separable
    resampling as two batched matrix products with the antialiased weights (``grid_sample`` cannot antialias)."""
    batch, _, height, width = images.shape
    top, left, h, w = _crop_boxes(batch, height, width, scale, ratio, images.device)
    flip = (torch.rand(batch, device=images.device) < flip_p).view(-1, 1)
    # The static test first: it avoids a device sync when the images are no larger than the output (CIFAR).
    if (height <= size and width <= size) or (bool((h <= size).all()) and bool((w <= size).all())):
        ys = _grid_coords(top, h, size, height)  # (B, S)
        xs = _grid_coords(left, w, size, width)
        xs = torch.where(flip, xs.flip(1), xs)
        grid = torch.stack((xs.unsqueeze(1).expand(-1, size, -1), ys.unsqueeze(2).expand(-1, -1, size)), dim=-1)
        return F.grid_sample(  # (B, C, S, S)
            images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False
        )
    ry = _resample_matrix(top, h, size, height).to(images.dtype)  # (B, S, H)
    rx = _resample_matrix(left, w, size, width).to(images.dtype)  # (B, S, W)
    rx = torch.where(flip.unsqueeze(2), rx.flip(1), rx)
    rows = torch.matmul(images, rx.transpose(1, 2).unsqueeze(1))  # (B, C, H, S)
    return torch.matmul(ry.unsqueeze(1), rows)  # (B, C, S, S)


# ---------------------------------------------------------------------------------------------------------------------
# Colour: torchvision's ColorJitter / RandomGrayscale formulas and a Gaussian blur, batched with per-sample parameters.
# Each step runs on the whole batch with neutral parameters for the samples its coin flip leaves out, instead of
# kornia.augmentation's modules, which gather and scatter the chosen samples and (for hue) go through a general
# RGB -> HSV -> RGB round trip; measured 2.6-2.7x faster on CPU (benchmarks/augment_throughput.md).

_HUE_OFFSETS = (5.0, 3.0, 1.0)  # R, G, B sectors of the closed-form HSV -> RGB


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB ``x`` (B, 3, H, W) in [0, 1] by ``shift`` (B,), a fraction of the circle in
    [-0.5, 0.5]: torchvision's ``adjust_hue`` (= ``kornia.enhance.adjust_hue`` with ``2 pi shift``), with the hue
    computed as torchvision does (ties resolved R, then G) and converted back in closed form:
    channel n = V - C * clamp(min(k, 4 - k), 0, 1), k = (offset_n + 6 h) mod 6, with V the max and C the chroma."""
    maxc, minc = x.amax(dim=1), x.amin(dim=1)  # (B, H, W)
    chroma = maxc - minc
    r, g, b = x.unbind(dim=1)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))  # grey pixels: any hue, chroma 0 keeps them grey
    hue6 = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue6 = hue6 + 6.0 * shift.view(-1, 1, 1)  # hue in sixths of the circle, (B, H, W)
    offsets = torch.tensor(_HUE_OFFSETS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(offsets + hue6.unsqueeze(1), 6.0)  # (B, 3, H, W)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def _color_jitter(x: torch.Tensor, jitter: tuple[float, float, float, float], p: float) -> torch.Tensor:
    """torchvision ``ColorJitter(b, c, s, h)`` applied with probability ``p`` per sample: factors drawn per sample
    from [max(0, 1 - v), 1 + v] (hue: [-h, h]); the four steps in a random order drawn once per batch (torchvision
    draws it per image; kornia per batch, as here). Steps are kornia.enhance's torchvision formulas, hue ours."""
    n, device = x.shape[0], x.device
    b, c, s, h = jitter
    on = torch.rand(n, device=device) < p
    factors = [torch.where(on, _uniform(n, max(0.0, 1.0 - v), 1.0 + v, device), 1.0) for v in (b, c, s)]
    factors.append(torch.where(on, _uniform(n, -h, h, device), 0.0))
    steps = (
        KE.adjust_brightness_accumulative,  # x * f, clamped (torchvision adjust_brightness)
        KE.adjust_contrast_with_mean_subtraction,  # blend with the grey mean of the image (adjust_contrast)
        KE.adjust_saturation_with_gray_subtraction,  # blend with the grey image (adjust_saturation)
        _adjust_hue,
    )
    for i in torch.randperm(4).tolist():
        if jitter[i] > 0:
            x = steps[i](x, factors[i])
    return x


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per sample (B,), ``kernel`` taps, reflect padding (kornia's
    ``gaussian_blur2d`` with a per-sample sigma), as one grouped convolution per axis."""
    n, ch, height, width = x.shape
    r = kernel // 2
    weights = KF.get_gaussian_kernel1d(kernel, sigma.view(-1, 1), device=x.device, dtype=x.dtype)  # (B, k)
    weights = weights.repeat_interleave(ch, dim=0)  # (B*C, k): one filter per channel of each sample
    padded = F.pad(x, (r, r, r, r), mode="reflect").reshape(1, n * ch, height + 2 * r, width + 2 * r)
    y = F.conv2d(padded, weights.view(n * ch, 1, 1, kernel), groups=n * ch)  # along x: (1, B*C, H + 2r, W)
    y = F.conv2d(y, weights.view(n * ch, 1, kernel, 1), groups=n * ch)  # along y: (1, B*C, H, W)
    return y.view(n, ch, height, width)


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
                x = _random_resized_crop(full, spec.size, spec.scale, spec.ratio, self.params.flip_p)
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
            x = _color_jitter(x, p.jitter, p.jitter_p)
        if p.grayscale_p > 0:  # torchvision RandomGrayscale: ITU-R 601 luma copied to the three channels
            grey = torch.rand(n, device=device) < p.grayscale_p
            x = torch.where(grey.view(-1, 1, 1, 1), KC.rgb_to_grayscale(x).expand_as(x), x)
        if p.blur_p > 0 and kernel >= 3:
            sigma = _uniform(n, *self.blur_sigma, device)
            chosen = (torch.rand(n, device=device) < p.blur_p).nonzero().squeeze(1)
            # Blur only the chosen samples: at 224 px the blur is the costliest step, and half the batch skips it.
            if chosen.numel() > 0:
                x = x.index_copy(0, chosen, _gaussian_blur(x.index_select(0, chosen), sigma[chosen], kernel))
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
