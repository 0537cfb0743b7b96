"""Pillow images of any mode as 8-bit RGB pixels: the one conversion every decode path uses (cgh.data.decode: the
folder and ImageNet loaders, ``decode_all`` for in-memory folders and Tiny-ImageNet, the evaluation loader, the view
grid).

Pillow's ``convert("RGB")`` is right for 8-bit modes (L, P, 1, CMYK, YCbCr, ...) and is used for them, but not for:

- **16-bit and 32-bit greyscale** (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, ``I``: 16-bit greyscale PNGs and
  TIFFs): ``convert`` clips every value above 255 to 255, so a 16-bit image became all white. Here 16 bits are scaled
  to 8 as round(v / 257), which maps 0..65535 exactly onto 0..255; ``I`` (32-bit, how older Pillow opens 16-bit PNGs)
  is read on the same 16-bit scale, clipped to [0, 65535].
- **floating-point greyscale** (``F``: float TIFFs): a range [0, 1] when its maximum is at most 1, else [0, 255];
  clipped, NaN read as 0.
- **transparency** (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa`` / ``La``, and ``P``, ``L`` or ``RGB`` with a
  transparent colour): ``convert`` drops the alpha channel and keeps whatever colour a transparent pixel stores, which
  is usually black. Here pixels are composited on ``ALPHA_BACKGROUND`` (white), as an image viewer shows them. This
  departs from torchvision's ``ImageFolder`` loader, which drops alpha like ``convert``, so the first image with
  transparent pixels that a command meets is named in a one-line note on stderr (``TRANSPARENCY_NOTE``: once per
  command, also when loader workers meet it; ``cgh.cli`` re-arms it per command).

16-bit RGB and RGBA PNGs need nothing here: Pillow opens them as 8-bit RGB / RGBA (the high byte of each sample).
"""

from __future__ import annotations

import mmap
import sys

import numpy as np
from PIL import Image

# Transparent pixels are composited on this colour (RGB, 0..255).
ALPHA_BACKGROUND = (255, 255, 255)


class Once:
    """A flag shared with the loader workers this process forks (one anonymous shared page), so that a note is
    printed once however many workers meet its cause. Workers started by 'spawn' (macOS, Windows) get a page of their
    own: at most one note each. Two workers meeting the cause at the same instant may both print: a duplicate line,
    never a missing one."""

    def __init__(self):
        self._page = mmap.mmap(-1, 1)

    def first(self) -> bool:
        """True the first time (and sets the flag), False after."""
        if self._page[0]:
            return False
        self._page[0] = 1
        return True

    def rearm(self) -> None:
        self._page[0] = 0


TRANSPARENCY_NOTE = Once()

_GREY_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def rgb_pixels(img: Image.Image, path: str = "") -> np.ndarray:
    """The (H, W, 3) uint8 RGB pixels of a loaded Pillow image of any mode (see the module docstring); ``path``
    names the file in the note about transparent pixels."""
    if img.mode in _GREY_16:
        grey = np.rint(np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257.0).astype(np.uint8)  # (H, W)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)  # (H, W)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        grey = np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)  # (H, W, 4)
        alpha = rgba[:, :, 3:]
        background = np.asarray(ALPHA_BACKGROUND, dtype=np.uint32)
        if (alpha < 255).any() and TRANSPARENCY_NOTE.first():
            print(f"note: {path or 'an image'} has transparent pixels: they are composited on white (RGB "
                  f"{ALPHA_BACKGROUND}), as a viewer shows them (torchvision's ImageFolder keeps their stored colour, "
                  f"often black); noted once, for the first such image", file=sys.stderr, flush=True)
        # rgb * a + background * (1 - a), in integers rounded to nearest: exact for a = 0 and a = 255
        return ((rgba[:, :, :3] * alpha + background * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
