"""Arrays in an ``.npz`` file (``images`` uint8, N x H x W x 3 or N x 3 x H x W, and optional
``labels``).

Keys:
- ``images``: uint8, rank 4. Layout rule: if the LAST axis has size 3 the array is NHWC; otherwise, if axis 1 has size
  3, it is NCHW; otherwise it is an error. So an array whose axes 1 and 3 both have size 3 is read as NHWC (3 rows
  of 3-pixel-wide images are not a real use; NHWC is what numpy, Pillow and most exporters write).
- ``labels`` (optional): integers, shape (N,), values in 0..MAX_CLASSES - 1; without it every label is -1
  (unlabelled).
- ``classes`` (optional): N_classes strings naming the labels; without it the names are "0", "1", ...

``path`` may contain ``{split}`` (``/data/x_{split}.npz``), replaced by the split name; without it the same file is
used for every split. The file is read with ``allow_pickle=False``, so it cannot run code.
"""

from __future__ import annotations

import numpy as np
import torch

from cgh.data.base import ArraySource, require_path
from cgh.errors import DataError

MAX_CLASSES = 1_000_000  # far above any real label set (ImageNet-21k: 21841)


def _images_nchw(images: np.ndarray, path: str) -> torch.Tensor:
    if images.dtype != np.uint8:
        raise DataError(f"{path}: key 'images' must be uint8, got {images.dtype} (convert with "
                        f"(x * 255).round().astype(np.uint8) for floats in [0, 1])")
    if images.ndim != 4:
        raise DataError(f"{path}: key 'images' must have rank 4, (N, H, W, 3) or (N, 3, H, W), got shape "
                        f"{images.shape}")
    if images.shape[3] == 3:
        images = images.transpose(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    elif images.shape[1] != 3:
        raise DataError(f"{path}: key 'images' must have 3 colour channels, (N, H, W, 3) or (N, 3, H, W), got "
                        f"shape {images.shape}")
    if min(images.shape[2:]) == 0:
        raise DataError(f"{path}: key 'images' holds images of zero height or width, shape {images.shape} as (N, 3, "
                        f"H, W)")
    return torch.from_numpy(np.ascontiguousarray(images))  # (N, 3, H, W)


def open_npz(path: str | None, split: str) -> ArraySource:
    """Images (and labels) from an .npz file; see the module docstring for the keys and the layout rule."""
    path = require_path("npz", None if path is None else str(path).replace("{split}", split))
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: expected an .npz archive with key 'images', got a single .npy array")
        with f:
            if "images" not in f.files:
                raise DataError(f"{path}: missing key 'images'; keys present: {', '.join(f.files) or 'none'}")
            arrays = {k: f[k] for k in ("images", "labels", "classes") if k in f.files}
    except DataError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # truncated, not a zip, pickled object array; a damaged member raises zlib.error,
        # NotImplementedError (zip version), struct.error, ... depending on which byte broke
        raise DataError(f"{path} is not a readable .npz file (truncated, wrong format, or holds pickled objects): "
                        f"{type(e).__name__}: {e}") from e

    images = _images_nchw(arrays["images"], path)
    n = images.shape[0]
    if "labels" in arrays:
        labels = arrays["labels"]
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: key 'labels' must hold integers, got {labels.dtype}")
        if labels.shape != (n,):
            raise DataError(f"{path}: key 'labels' must have shape ({n},) (one per image), got {labels.shape}")
        if n and labels.min() < 0:
            raise DataError(f"{path}: key 'labels' must be >= 0, got minimum {labels.min()}")
        if n and labels.max() >= MAX_CLASSES:  # class indices; a huge one would make a list of that many names
            raise DataError(f"{path}: key 'labels' must be class indices below {MAX_CLASSES}, got maximum "
                            f"{labels.max()}")
        label_tensor = torch.from_numpy(labels.astype(np.int64))
        num_classes = int(labels.max()) + 1 if n else 0
        if "classes" in arrays:
            classes = [str(c) for c in arrays["classes"].reshape(-1)]
            if len(classes) < num_classes:
                raise DataError(f"{path}: key 'classes' names {len(classes)} classes but labels go up to "
                                f"{num_classes - 1}")
        else:
            classes = [str(i) for i in range(num_classes)]
    else:
        label_tensor = torch.full((n,), -1, dtype=torch.int64)
        classes = []
    if n == 0:
        raise DataError(f"{path}: key 'images' holds no image")
    return ArraySource(images, label_tensor, classes, f"npz:{split}")
