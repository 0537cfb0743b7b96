"""The built-in synthetic dataset: procedurally drawn shapes, generated deterministically from a seed, no files.

Why it exists: no real dataset can be downloaded on the development machines, yet demos and
learning tests need images whose classes a self-supervised encoder can learn and raw pixels cannot give away.

A class is a (shape, texture) pair: class c has shape ``SHAPES[c % 5]`` and texture ``TEXTURES[c // 5]``, so 10
classes are the 5 shapes solid and striped, and 20 classes add checkered and dotted ones. Everything else is a random
nuisance, drawn per image:
- colours: a background and two object colours with random hue, the background's saturation cut to a quarter and
  the object's to 60 % (vivid backgrounds let a crop-only teacher view group images by colour); their luminances
  sit in separated bands with a fixed polarity (background dark, object light: no augmentation inverts luminance, so
  a random polarity is a nuisance an augmentation-invariant encoder cannot drop), a texture's second colour in the
  middle band, a solid object anywhere from the middle to the light band so that its mean contrast is distributed
  like a textured object's and raw pixels cannot tell solid from textured; object and texture stay visible in
  grayscale and under colour jitter;
- background: a linear gradient between two colours in a random direction plus low-frequency colour noise;
- object: centre (up to half its radius may leave the image), scale (diameter 50-80 % of the image side, so that a
  RandomResizedCrop of scale 0.2-1 usually still holds part of it), rotation, aspect (3/4..4/3), and the texture's
  phase.
Textures are drawn in the object's frame with a period of 0.8 object radii, i.e. about 6.5-10 px at 32 px (it
scales with ``image_size``), coarse enough to survive mild blur. Images are rendered with hard edges at twice the
size and box-averaged 2x2 (antialiasing), vectorised over chunks of 1000 images, each class's images in one slice.

Measured (seed 0 / seed 1, 10 classes, 32 px, train 10000 -> test 2000, the 2-core development machine):
- generation of the 10000 training images: 0.7-1.0 s;
- raw-pixel kNN (k = 20, cosine; chance 10 %): majority vote 27.4 % / 27.5 % on pixels standardised per channel,
  27.1 % / 26.1 % on plain L2-normalised pixels; 35.1 % / 34.7 % with DINO-style weights exp(cos / 0.07); the
  residue is mostly the ring, whose hole raw pixels can see, and the object's size;
- learnability: a 4-layer CNN trained 4 epochs with labels (and channel shuffles for colour invariance) reaches
  99.0 % with the same kNN (majority) on its pooled features, so an encoder invariant to crops and colour can learn
  the classes;
- determinism: the same (seed, split, size, image_size, num_classes) gives bit-identical images and labels (all
  random numbers are drawn up front, so chunking does not matter); ``test`` uses seed 2*seed+1 and ``train``
  2*seed, so the splits never share a generator stream.

Look at it with ``save_sample_sheet(make_synthetic(size=500), "synthetic.png")``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from cgh.data.base import ArraySource, check_split
from cgh.errors import DataError

SHAPES = ("disk", "square", "triangle", "cross", "ring")
TEXTURES = ("solid", "stripes", "checker", "dots")
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
SPLITS = ("train", "test")
DEFAULT_SIZE = {"train": 10000, "test": 2000}

_TEXTURE_PERIOD = 0.8  # in object radii: 4.5 px at the smallest scale at 32 px, 9 px at the largest
_RADIUS = (0.50, 0.80)  # object radius in half-sides: a diameter of 50-80 % of the image side
# Saturation kept (at equal luminance) of the background and object colours. Background colour is the nuisance a
# weak (crop + flip) teacher view keeps intact, so vivid backgrounds made ReSSL's and CGH's relation targets encode
# colour similarity instead of shape (measured: ReSSL kNN 20 % at full saturation, 27 % here, same budget).
_BG_SATURATION, _FG_SATURATION = 0.25, 0.6
_CHUNK = 1000  # images rendered at once: about 100 MB of float32 at 2 x 32 px


def class_names(num_classes: int) -> list[str]:
    return [f"{SHAPES[c % len(SHAPES)]}-{TEXTURES[c // len(SHAPES)]}" for c in range(num_classes)]


def _split_seed(seed: int, split: str) -> int:
    # Train and test get disjoint seeds for every user seed: 2*seed and 2*seed+1.
    return 2 * seed + SPLITS.index(split)


def _desaturate(rgb: torch.Tensor, factor: float) -> torch.Tensor:
    """Move colours (..., 3) towards the grey of their own Rec. 601 luminance, keeping ``factor`` of the saturation;
    the luminance is unchanged (a mix with a grey of the same luminance)."""
    lum = (rgb * rgb.new_tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    return lum + factor * (rgb - lum)


def _with_luminance(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Move colours (..., 3) in [0, 1] to the luminance ``target`` (...) by mixing with white or scaling to black;
    both are linear, so the result's Rec. 601 luminance equals the target exactly and the hue is kept."""
    weights = torch.tensor([0.299, 0.587, 0.114])
    lum = (rgb * weights).sum(-1, keepdim=True).clamp(1e-4, 1 - 1e-4)  # (..., 1)
    t = target.unsqueeze(-1)
    lighter = rgb + (1 - rgb) * (t - lum) / (1 - lum)
    darker = rgb * t / lum
    return torch.where(t > lum, lighter, darker)


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral, vertex up, circumradius 1.2: inside when within the three edges (inradius 0.6).
    return torch.maximum(torch.maximum(-v, 0.866 * u + 0.5 * v), -0.866 * u + 0.5 * v) <= 0.6


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= 0.34) & (av <= 1.0)) | ((av <= 0.34) & (au <= 1.0))


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r2 = u * u + v * v
    return (r2 <= 1.05**2) & (r2 >= 0.55**2)


# Inside-masks in the object frame (unit radius), one per entry of SHAPES; areas are within 25 % of the disk's.
_SHAPE_FNS = (
    lambda u, v: u * u + v * v <= 1.0,  # disk
    lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.82,  # square
    _triangle,
    _cross,
    _ring,
)


def _period_position(u: torch.Tensor) -> torch.Tensor:
    return torch.remainder(u, _TEXTURE_PERIOD) / _TEXTURE_PERIOD  # position within one period, in [0, 1)


# Where each texture shows its second colour, in the object frame (u, v already carry the random phase), one per
# entry of TEXTURES.
_TEXTURE_FNS = (
    lambda u, v: torch.zeros_like(u, dtype=torch.bool),  # solid
    lambda u, v: _period_position(u) < 0.5,  # stripes
    lambda u, v: (_period_position(u) < 0.5) ^ (_period_position(v) < 0.5),  # checker
    lambda u, v: (_period_position(u) - 0.5) ** 2 + (_period_position(v) - 0.5) ** 2 <= 0.3**2,  # dots
)


def _masks(fns: tuple, ids: list[int], bounds: list[int], u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Images ``bounds[g]:bounds[g+1]`` (one class, contiguous) get ``fns[ids[g]]``: (B, R, R) bool. Working on
    contiguous slices avoids copying coordinates, and each image pays for its own shape only."""
    out = torch.empty(u.shape, dtype=torch.bool)
    for g, k in enumerate(ids):
        a, b = bounds[g], bounds[g + 1]
        if b > a:
            out[a:b] = fns[k](u[a:b], v[a:b])
    return out


def _render(params: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Render one chunk of images from their parameters: (B, 3, size, size) uint8."""
    # Work in label order (each class a contiguous slice, see _masks) and put the images back in order at the end.
    order = torch.argsort(params["label"], stable=True)
    params = {k: t[order] for k, t in params.items()}
    b = len(order)

    def grid(res: int) -> tuple[torch.Tensor, torch.Tensor]:
        coords = (torch.arange(res, dtype=torch.float32) * 2 + 1) / res - 1  # pixel centres in [-1, 1]
        return coords.view(1, res, 1), coords.view(1, 1, res)  # y, x

    # Background, smooth, so drawn directly at the final size: a gradient between two colours along a random
    # direction, plus 4x4 colour noise upsampled.
    y, x = grid(size)
    bg_dir = params["bg_angle"].view(b, 1, 1)
    g = ((x * torch.cos(bg_dir) + y * torch.sin(bg_dir)) / math.sqrt(2) + 1) / 2  # (B, S, S) in [0, 1]
    c0, c1 = params["bg0"].view(b, 3, 1, 1), params["bg1"].view(b, 3, 1, 1)
    bg = c0 + (c1 - c0) * g.unsqueeze(1)  # (B, 3, S, S)
    bg = bg + F.interpolate(params["bg_noise"], size=(size, size), mode="bicubic", align_corners=False)

    # Object frame at twice the size: translate, rotate, stretch, scale to unit radius. The anisotropic stretch
    # (aspect 3/4..4/3, area kept) is a nuisance that the rotation-symmetric shapes carry too.
    y, x = grid(2 * size)
    cx, cy = params["cx"].view(b, 1, 1), params["cy"].view(b, 1, 1)
    cos, sin = torch.cos(params["angle"]).view(b, 1, 1), torch.sin(params["angle"]).view(b, 1, 1)
    stretch = params["aspect"].sqrt().view(b, 1, 1)
    radius = params["radius"].view(b, 1, 1)
    u = ((x - cx) * cos + (y - cy) * sin) / (radius * stretch)  # (B, 2S, 2S)
    v = (-(x - cx) * sin + (y - cy) * cos) * stretch / radius  # (B, 2S, 2S)
    counts = torch.bincount(params["label"]).tolist()
    bounds = [0] + torch.tensor(counts).cumsum(0).tolist()
    shapes = [c % len(SHAPES) for c in range(len(counts))]
    textures = [c // len(SHAPES) for c in range(len(counts))]
    inside = _masks(_SHAPE_FNS, shapes, bounds, u, v)  # (B, 2S, 2S)
    phase = params["phase"].view(b, 2, 1, 1)
    second = _masks(_TEXTURE_FNS, textures, bounds, u + phase[:, 0], v + phase[:, 1]) & inside  # (B, 2S, 2S)

    # Composite at the final size with the 2x2 coverages (box antialiasing of the hard-edged 2x render).
    cover = F.avg_pool2d(inside.unsqueeze(1).float(), 2)  # (B, 1, S, S): object
    cover2 = F.avg_pool2d(second.unsqueeze(1).float(), 2)  # (B, 1, S, S): its second colour
    fg0, fg1 = params["fg0"].view(b, 3, 1, 1), params["fg1"].view(b, 3, 1, 1)
    img = bg * (1 - cover) + fg0 * (cover - cover2) + fg1 * cover2  # (B, 3, S, S)
    out = torch.empty((b, 3, size, size), dtype=torch.uint8)
    out[order] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def _draw_params(n: int, num_classes: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Every random number of the dataset, drawn up front in a fixed order (so chunking cannot change the images)."""

    def uniform(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    # Exactly balanced classes (counts differ by at most one), in random order.
    label = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    # Luminance bands: background [0.02, 0.25], main object colour [0.75, 0.98], the texture's second colour
    # [0.42, 0.58]. The gaps keep every pair apart in grayscale. The polarity is fixed (dark background, light object):
    # no augmentation inverts luminance, so a random polarity would be a nuisance that an encoder invariant to the
    # augmentations cannot drop; with it, 2-means on a trained encoder's features split the images by polarity alone.
    bg_lum = uniform(n, lo=0.02, hi=0.25)
    bg_lum1 = (bg_lum + uniform(n, lo=-0.07, hi=0.07)).clamp(0.02, 0.98)
    fg_lum = uniform(n, lo=0.75, hi=0.98)
    # A solid object's colour spans the far and middle bands, so that its mean contrast with the background is
    # distributed like a textured object's (half far, half middle): otherwise raw pixels tell solid from textured.
    solid_lum = uniform(n, lo=0.42, hi=0.98)
    fg_lum = torch.where(label < len(SHAPES), solid_lum, fg_lum)
    mid_lum = uniform(n, lo=0.42, hi=0.58)
    radius = uniform(n, lo=_RADIUS[0], hi=_RADIUS[1])
    # Centre: up to half of the object's radius may leave the image, so position varies a lot for raw pixels while a
    # crop of a large object still usually holds part of it.
    reach = 1 - 0.5 * radius
    return {
        "label": label,
        "bg0": _desaturate(_with_luminance(uniform(n, 3), bg_lum), _BG_SATURATION),
        "bg1": _desaturate(_with_luminance(uniform(n, 3), bg_lum1), _BG_SATURATION),
        "bg_angle": uniform(n, hi=2 * math.pi),
        "bg_noise": uniform(n, 3, 4, 4, lo=-0.06, hi=0.06) * _BG_SATURATION,
        "fg0": _desaturate(_with_luminance(uniform(n, 3), fg_lum), _FG_SATURATION),
        "fg1": _desaturate(_with_luminance(uniform(n, 3), mid_lum), _FG_SATURATION),
        "radius": radius,
        "cx": uniform(n, lo=-1, hi=1) * reach,
        "cy": uniform(n, lo=-1, hi=1) * reach,
        "angle": uniform(n, hi=2 * math.pi),
        "aspect": torch.exp(uniform(n, lo=math.log(3 / 4), hi=math.log(4 / 3))),
        "phase": uniform(n, 2, hi=_TEXTURE_PERIOD),
    }


def make_synthetic(
    split: str = "train", *, size: int | None = None, image_size: int = 32, num_classes: int = 10, seed: int = 0
) -> ArraySource:
    """Generate the synthetic dataset (see the module docstring). ``size`` defaults to 10000 for ``train`` and 2000
    for ``test``; ``image_size`` >= 16; 2 <= ``num_classes`` <= 20."""
    check_split("synthetic", split, SPLITS)
    n = DEFAULT_SIZE[split] if size is None else int(size)
    if n < 1:
        raise DataError(f"synthetic: size must be a positive number of images, got {size}")
    if int(image_size) < 16:
        raise DataError(f"synthetic: image_size must be >= 16 pixels, got {image_size}")
    if not 2 <= int(num_classes) <= MAX_CLASSES:
        raise DataError(f"synthetic: num_classes must lie in 2..{MAX_CLASSES}, got {num_classes}")
    gen = torch.Generator().manual_seed(_split_seed(int(seed), split))
    params = _draw_params(n, int(num_classes), gen)
    images = torch.empty((n, 3, int(image_size), int(image_size)), dtype=torch.uint8)  # (N, 3, S, S)
    for start in range(0, n, _CHUNK):
        chunk = {k: t[start:start + _CHUNK] for k, t in params.items()}
        images[start:start + _CHUNK] = _render(chunk, int(image_size))
    return ArraySource(images, params["label"].to(torch.int64), class_names(int(num_classes)), f"synthetic:{split}")


def open_synthetic(path: str | None, split: str, **options) -> ArraySource:
    """Opener for ``open_source("synthetic", None, split, size=..., image_size=..., num_classes=..., seed=...)``;
    ``path`` must be None or empty (the dataset has no files)."""
    if path not in (None, ""):
        raise DataError(f"synthetic: the built-in dataset reads no files, but path {path!r} was given; leave it empty")
    return make_synthetic(split, **options)


def save_sample_sheet(source: ArraySource, path: str, *, per_class: int = 10, zoom: int = 3) -> str:
    """Write a PNG grid of ``per_class`` images of each class (one row per class, named on the left) of a labelled
    array source, enlarged ``zoom`` times with nearest-neighbour. Returns ``path``. For a look at the synthetic set:
    ``save_sample_sheet(make_synthetic(size=500), "synthetic.png")``."""
    classes = source.classes or ["unlabelled"]
    side = source.images.shape[-1] * zoom
    gap, margin = 2, 90
    sheet = Image.new("RGB", (margin + per_class * (side + gap), len(classes) * (side + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(classes):
        label = row if source.classes else -1
        picks = (source.labels == label).nonzero().flatten()[:per_class]
        top = row * (side + gap)
        draw.text((4, top + side // 2 - 5), name, fill=(0, 0, 0))
        for col, i in enumerate(picks.tolist()):
            tile = Image.fromarray(source.images[i].permute(1, 2, 0).numpy()).resize((side, side), Image.NEAREST)
            sheet.paste(tile, (margin + col * (side + gap), top))
    sheet.save(path)
    return path
