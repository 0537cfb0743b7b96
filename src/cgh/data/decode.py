"""Decoding image files (simplejpeg for JPEGs, Pillow for the rest), and the torchvision geometry we re-implement on
them (torchvision does not import on the development machines).

- :func:`load_image`: decode one file as 8-bit RGB (any mode: 16-bit, float and transparent images as
  cgh.data.image_modes says), DataError naming the file when it is not an image or is truncated;
  :func:`open_image` (:class:`EncodedImage`) + ``decode``, the same in two steps, so that a JPEG can be decoded at
  a reduced scale chosen from its size (:func:`draft_scale`).
- :func:`random_resized_crop_box`: torchvision ``RandomResizedCrop.get_params`` (10 tries, then a centre crop), and
  the crop itself: :func:`resized_crop` (torchvision ``F.resized_crop``, on a uint8 tensor) and
  :func:`resized_crop_scaled` (the same box on a reduced decode).
- the evaluation resize rule, the one copy every test transform follows (the on-device ``EvalTransform``, the file
  loaders, the view grid): :func:`eval_resize` (the shorter side before the centre crop), :func:`resized_shape`
  (torchvision ``Resize(short)``'s output size) and :func:`center_crop_box` (torchvision ``CenterCrop``'s offsets);
- :func:`resize_center_crop`: that rule on a Pillow image, torchvision ``Resize(short)`` then ``CenterCrop(size)``.
- :func:`decode_all`: decode a list of files into one uint8 tensor (Tiny-ImageNet, small folders), with loader
  workers, a progress bar and an optional on-disk cache.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from cgh.data.image_modes import rgb_pixels
from cgh.errors import DataError
from cgh.runtime.device import loader_workers, usable_cpus

try:  # a dependency of cgh; without it every image is decoded by Pillow
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    simplejpeg = None

# Bumped whenever the pixels decode_all produces could change, so that stale caches are never read.
_CACHE_VERSION = 2  # 2: 16-bit, float and transparent images decoded by cgh.data.image_modes


def _pil_error(path: str, e: Exception) -> DataError:
    # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ... per codec
    return DataError(f"cannot decode image {path}: {type(e).__name__}: {e}")


class EncodedImage:
    """An image file read into memory but not decoded, its size known from its header, so that the decode can be
    asked for a reduced scale chosen from that size (:meth:`decode`).

    JPEGs are decoded by simplejpeg (libjpeg-turbo straight into a NumPy array: the same pixels as Pillow's decode,
    tests/unit/data/test_decode.py, in about 60 % of its time, benchmarks/folder_loader.md). Other formats, the
    JPEGs libjpeg-turbo cannot turn into RGB (CMYK, YCCK), JPEGs larger than Pillow's decompression-bomb limit, any
    JPEG simplejpeg refuses, and every image when simplejpeg is not installed go through Pillow, whose errors name
    the file. Raises DataError naming the file when it cannot be read or is not an image.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                self.data = f.read()
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from e
        self.size: tuple[int, int] = (0, 0)  # (width, height)
        self.jpeg = simplejpeg is not None and self.data[:3] == b"\xff\xd8\xff"
        if self.jpeg:
            try:
                height, width, colorspace, _ = simplejpeg.decode_jpeg_header(self.data)
                self.size = (width, height)
                limit = Image.MAX_IMAGE_PIXELS
                self.jpeg = colorspace not in ("CMYK", "YCCK") and not (limit and width * height > limit)
            except ValueError:
                self.jpeg = False  # let Pillow try, and name the problem if it fails too
        if not self.jpeg:
            try:
                self.size = Image.open(io.BytesIO(self.data)).size  # the header only
            except Exception as e:
                raise _pil_error(path, e) from e

    def decode(self, scale: int = 1) -> tuple[np.ndarray, int]:
        """The (H, W, 3) uint8 RGB pixels, decoded at 1/``scale`` when ``scale`` is 2, 4 or 8 and the file is a JPEG
        (libjpeg's DCT scaling: the image is then ceil(W/scale) x ceil(H/scale), and original pixel coordinate x
        lies at x / scale), and the scale applied (1 for other formats). A truncated or corrupt file raises
        DataError naming it."""
        width, height = self.size
        if self.jpeg:
            try:
                if scale > 1:
                    hwc = simplejpeg.decode_jpeg(self.data, "RGB", min_height=-(-height // scale),
                                                 min_width=-(-width // scale), min_factor=scale)
                    if hwc.shape[:2] == (-(-height // scale), -(-width // scale)):
                        return hwc, scale
                return simplejpeg.decode_jpeg(self.data, "RGB"), 1
            except ValueError:
                pass  # e.g. a truncated file: Pillow's error names the problem
        try:
            with Image.open(io.BytesIO(self.data)) as img:
                applied = 1
                if scale > 1 and img.format == "JPEG":
                    img.draft("RGB", (width // scale, height // scale))  # Pillow picks exactly 1/scale for this
                    applied = scale if img.size == (-(-width // scale), -(-height // scale)) else 1
                img.load()  # Pillow decodes lazily: a truncated file fails here
                return rgb_pixels(img, self.path), applied  # 16-bit, float, transparent (cgh.data.image_modes)
        except Exception as e:
            raise _pil_error(self.path, e) from e


def open_image(path: str) -> EncodedImage:
    """Read ``path`` and its header (:class:`EncodedImage`); DataError naming the file on failure."""
    return EncodedImage(path)


def load_image(path: str) -> Image.Image:
    """Decode ``path`` fully as an RGB Pillow image; DataError naming the file when it is not an image or is
    truncated."""
    return Image.fromarray(open_image(path).decode()[0])


def to_uint8_chw(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> (3, H, W) uint8 tensor."""
    hwc = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W, 3)
    return hwc.permute(2, 0, 1).contiguous()  # (3, H, W)


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params``, drawing from ``rng``: returns (top, left, h, w).

    Ten attempts at an area uniform in ``scale`` x image area and a log-uniform aspect ratio in ``ratio``; if none
    fits, the largest centred crop whose aspect ratio is clamped to ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


DRAFT_SCALES = (8, 4, 2)  # the reductions libjpeg's DCT scaling offers (Pillow's JPEG draft mode)


def draft_scale(boxes: list[tuple[int, int, int, int]], sizes: list[int]) -> int:
    """The largest JPEG decode reduction (8, 4, 2, else 1) at which every crop box (top, left, h, w) still spans at
    least its output ``size`` in both directions, so that each crop is still only shrunk (never enlarged) to its
    output size from the reduced decode."""
    for scale in DRAFT_SCALES:
        if all(min(h, w) >= scale * size for (_, _, h, w), size in zip(boxes, sizes, strict=True)):
            return scale
    return 1


def resized_crop(hwc: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """torchvision ``F.resized_crop`` on a (H, W, 3) uint8 image: crop (top, left, h, w), then resize to size x size,
    bilinear with antialiasing. Returns (3, size, size) uint8 (a strided view, made contiguous by the collate).

    torch's uint8 antialiased kernel is a port of Pillow's resampling and agrees with torchvision's PIL path (crop,
    then ``resize``) within one grey level (tests/unit/data/test_decode.py), at about a third of its time on one core
    (benchmarks/folder_loader.md).
    """
    top, left, h, w = box
    crop = hwc.permute(2, 0, 1)[None, :, top:top + h, left:left + w]  # (1, 3, h, w), channels-last strides
    if (h, w) == (size, size):
        return crop[0]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def resized_crop_scaled(img: Image.Image, box: tuple[int, int, int, int], size: int, scale: int) -> torch.Tensor:
    """:func:`resized_crop` of a box given in original pixels on an image decoded at 1/``scale``
    (:meth:`EncodedImage.decode`): Pillow resamples the box's exact fractional extent, box / scale, so that no
    rounding shifts the crop (torch's kernel takes whole pixels only). Returns (3, size, size) uint8."""
    top, left, h, w = box
    region = (left / scale, top / scale, (left + w) / scale, (top + h) / scale)
    return to_uint8_chw(img.resize((size, size), resample=Image.Resampling.BILINEAR, box=region))


# The test transform's centre crop keeps 7/8 of the shorter side (Resize 256 + CenterCrop 224,
# docs/method.md#test-transforms) from this crop size up; smaller images are resized to the crop size itself (CIFAR's 32
# px stay 32 px).
EVAL_CROP_FRACTION = (7, 8)
EVAL_CENTRE_CROP_FROM = 224


def eval_resize(image_size: int) -> int:
    """The shorter side the test transform resizes to before its centre ``image_size`` crop
    (docs/method.md#test-transforms): 256 for 224 (``image_size * 8 // 7``) when ``image_size >= 224``, else
    ``image_size`` itself."""
    num, den = EVAL_CROP_FRACTION
    return image_size * den // num if image_size >= EVAL_CENTRE_CROP_FROM else image_size


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) after torchvision ``Resize(short)``: the shorter side becomes ``short``, the longer one
    ``int(short * long / shorter)`` (truncated, as torchvision does)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def center_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision ``CenterCrop(size)`` in a ``height`` x ``width`` image, rounded as it does."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def resize_center_crop(img: Image.Image, short: int, size: int) -> Image.Image:
    """torchvision ``Resize(short)`` (bilinear, :func:`resized_shape`) then ``CenterCrop(size)``
    (:func:`center_crop_box`). ``short`` must be >= ``size``."""
    w, h = img.size
    new_h, new_w = resized_shape(h, w, short)
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), resample=Image.Resampling.BILINEAR)
    if (new_w, new_h) == (size, size):
        return img
    top, left = center_crop_box(new_h, new_w, size)
    return img.crop((left, top, left + size, top + size))


class _DecodeDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], size: int):
        self.paths = paths
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = resize_center_crop(load_image(self.paths[i]), self.size, self.size)
        return to_uint8_chw(img)  # (3, size, size)


def default_decode_workers() -> int:
    return min(8, usable_cpus())


def _cache_file(cache_dir: str, paths: list[str], size: int) -> str:
    """Cache name from the files' names, sizes and modification times, so that an edited dataset is re-decoded."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION} size={size} n={len(paths)}\n".encode())
    for p in paths:
        st = os.stat(p)
        digest.update(f"{os.path.abspath(p)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return os.path.join(os.path.expanduser(cache_dir), f"decoded-{size}px-{digest.hexdigest()[:20]}.npy")


def decode_all(
    paths: list[str], size: int, *, num_workers: int | None = None, desc: str = "decoding",
    cache_dir: str | None = None,
) -> torch.Tensor:
    """Decode every file to RGB, resize its shorter side to ``size`` and centre-crop ``size`` (a size x size image is
    kept as is; grayscale and palette images become RGB). Returns (N, 3, size, size) uint8.

    Decoding runs in a torch DataLoader with ``num_workers`` processes (default min(8, cores)) behind a tqdm bar. With
    ``cache_dir`` (e.g. ``~/.cache/cgh``) the result is saved as an .npy file keyed on the files' names, sizes and
    mtimes, and loaded instead of decoding next time. An undecodable file raises DataError naming it.
    """
    if size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {size}")
    cache_path = _cache_file(cache_dir, paths, size) if cache_dir else None
    if cache_path and os.path.exists(cache_path):
        try:
            cached = np.load(cache_path, mmap_mode=None, allow_pickle=False)
            if cached.dtype == np.uint8 and cached.shape == (len(paths), 3, size, size):
                return torch.from_numpy(cached)
        except (OSError, ValueError) as e:
            warnings.warn(f"ignoring unreadable decode cache {cache_path}: {e}", stacklevel=2)
    workers = default_decode_workers() if num_workers is None else loader_workers(num_workers)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)  # (N, 3, S, S)
    loader = torch.utils.data.DataLoader(_DecodeDataset(paths, size), batch_size=256, num_workers=workers)
    pos = 0
    with tqdm(total=len(paths), desc=desc, unit="img", disable=None) as bar:
        for chunk in loader:  # (b, 3, S, S)
            out[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
            bar.update(len(chunk))
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = f"{cache_path}.{os.getpid()}.tmp.npy"
        np.save(tmp, out.numpy())
        os.replace(tmp, cache_path)  # atomic: a concurrent reader never sees a half-written cache
    return out
