"""The batched image operations of the augmentation (cgh.augment): torchvision's RandomResizedCrop, ColorJitter,
RandomGrayscale and a Gaussian blur, on whole batches with per-sample parameters, with kornia's image functions.
All randomness comes from torch's global RNG."""

from __future__ import annotations

import math

import kornia.enhance as KE
import kornia.filters as KF
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------------
# Batched RandomResizedCrop


def crop_boxes(
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


def grid_coords(start: torch.Tensor, length: torch.Tensor, out: int, full: int) -> torch.Tensor:
    """Normalised ``grid_sample`` coordinates (align_corners=False) along one axis, (B, out), for enlarging a crop.

    Output pixel u of the crop [start, start + length) samples input pixel p = start + (u + 0.5) * length / out - 0.5
    (half-pixel centres, as torchvision's and PIL's resize), clamped to the crop's first and last pixel centres so
    that, as in torchvision's crop-then-resize, no pixel outside the crop leaks in at its edges."""
    u = torch.arange(out, device=start.device, dtype=torch.float32)
    p = start.unsqueeze(1) + (u + 0.5) * (length / out).unsqueeze(1) - 0.5  # (B, out), input pixel centres
    p = torch.minimum(torch.maximum(p, start.unsqueeze(1)), (start + length - 1).unsqueeze(1))
    return (2.0 * p + 1.0) / full - 1.0


def resample_matrix(start: torch.Tensor, length: torch.Tensor, out: int, full: int) -> torch.Tensor:
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


# Devices whose tensors the host reads without waiting for queued kernels (tests empty it to follow a GPU's path).
READ_FREE_DEVICES = ("cpu",)


def random_resized_crop(
    images: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float], flip_p: float
) -> torch.Tensor:
    """Float (B, C, H, W) -> (B, C, size, size): an independent random resized crop per sample, then a horizontal
    flip with probability ``flip_p`` folded into the resampling (mirrored x coordinates), so it costs nothing.

    Semantics are torchvision's ``RandomResizedCrop`` on tensors with ``antialias=True`` (bilinear; antialiased when a
    crop is shrunk, like PIL's resize in the authors' code). Two batched implementations, picked per call by speed
    (measured in benchmarks/augment_throughput.md): when no crop in the batch is shrunk (always on CIFAR, where crops
    of a 32-px image are resized to 32 px) one ``grid_sample``, whose bilinear is exact there; otherwise a separable
    resampling as two batched matrix products with the antialiased weights (``grid_sample`` cannot antialias). On a
    GPU the second is used whenever the images are larger than the output: which crops shrink is not read back."""
    batch, _, height, width = images.shape
    top, left, h, w = crop_boxes(batch, height, width, scale, ratio, images.device)
    flip = (torch.rand(batch, device=images.device) < flip_p).view(-1, 1)
    # The static test first (CIFAR: images no larger than the output). Looking at the drawn boxes is free on the CPU
    # only; on a GPU it would wait for the queue of kernels every step, so there the antialiased path, exact for
    # enlarged crops too, takes every batch with larger images.
    if (height <= size and width <= size) or (
            images.device.type in READ_FREE_DEVICES and bool((h <= size).all()) and bool((w <= size).all())):
        ys = grid_coords(top, h, size, height)  # (B, S)
        xs = grid_coords(left, w, size, width)
        xs = torch.where(flip, xs.flip(1), xs)
        grid = torch.stack((xs.unsqueeze(1).expand(-1, size, -1), ys.unsqueeze(2).expand(-1, -1, size)), dim=-1)
        return F.grid_sample(  # (B, C, S, S)
            images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False
        )
    ry = resample_matrix(top, h, size, height).to(images.dtype)  # (B, S, H)
    rx = resample_matrix(left, w, size, width).to(images.dtype)  # (B, S, W)
    rx = torch.where(flip.unsqueeze(2), rx.flip(1), rx)
    rows = torch.matmul(images, rx.transpose(1, 2).unsqueeze(1))  # (B, C, H, S)
    return torch.matmul(ry.unsqueeze(1), rows)  # (B, C, S, S)


# ---------------------------------------------------------------------------------------------------------------------
# Colour: torchvision's ColorJitter / RandomGrayscale formulas and a Gaussian blur, batched with per-sample parameters.
# Each step runs on the whole batch with neutral parameters for the samples its coin flip leaves out, instead of
# kornia.augmentation's modules, which gather and scatter the chosen samples and (for hue) go through a general
# RGB -> HSV -> RGB round trip; measured 2.6-2.7x faster on CPU (benchmarks/augment_throughput.md).


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
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
    # the R, G, B sector offsets 5, 3, 1 of the closed form, made on the device (torch.tensor((5.0, 3.0, 1.0),
    # device=...) was a host-to-device copy that waited for the kernel queue, for every strong view)
    offsets = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(offsets + hue6.unsqueeze(1), 6.0)  # (B, 3, H, W)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def color_jitter(x: torch.Tensor, jitter: tuple[float, float, float, float], p: float) -> torch.Tensor:
    """torchvision ``ColorJitter(b, c, s, h)`` applied with probability ``p`` per sample: factors drawn per sample
    from [max(0, 1 - v), 1 + v] (hue: [-h, h]); the four steps in a random order drawn once per batch (torchvision
    draws it per image; kornia per batch, as here). Steps are kornia.enhance's torchvision formulas, hue ours."""
    n, device = x.shape[0], x.device
    b, c, s, h = jitter
    on = torch.rand(n, device=device) < p
    factors = [torch.where(on, uniform(n, max(0.0, 1.0 - v), 1.0 + v, device), 1.0) for v in (b, c, s)]
    factors.append(torch.where(on, uniform(n, -h, h, device), 0.0))
    steps = (
        KE.adjust_brightness_accumulative,  # x * f, clamped (torchvision adjust_brightness)
        KE.adjust_contrast_with_mean_subtraction,  # blend with the grey mean of the image (adjust_contrast)
        KE.adjust_saturation_with_gray_subtraction,  # blend with the grey image (adjust_saturation)
        adjust_hue,
    )
    for i in torch.randperm(4).tolist():
        if jitter[i] > 0:
            x = steps[i](x, factors[i])
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
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
