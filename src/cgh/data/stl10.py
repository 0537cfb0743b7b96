"""STL-10 from the official binary archive ``stl10_binary`` (docs/method.md#small-datasets: pretraining on
``train+unlabeled``, 105000 images with the unlabelled ones labelled -1; linear evaluation on ``train``; testing on
``test``).

Format (the dataset's README and torchvision's ``STL10``): ``<split>_X.bin`` is raw uint8, 3 x 96 x 96 = 27648 bytes
per image, channel planes in R, G, B order, each plane stored column-major (so a (3, 96, 96) reshape gives (C, W, H)
and needs a transpose of the last two axes); ``<split>_y.bin`` holds one uint8 label 1..10 per image;
``class_names.txt`` one name per line.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from cgh.data.base import ArraySource, check_split, find_dataset_dir, require_path
from cgh.errors import DataError

SPLITS = ("train", "test", "unlabeled", "train+unlabeled")
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE  # 27648
_CHUNK = 4096  # images copied (and transposed) per step, so that 100000 images never need a second full copy


def _images(path: str) -> np.memmap:
    if not os.path.isfile(path):
        raise DataError(f"missing STL-10 file {path}")
    size = os.path.getsize(path)
    if size == 0 or size % _IMAGE_BYTES:
        raise DataError(f"{path}: size {size} bytes is not a positive multiple of {_IMAGE_BYTES} (3x96x96 uint8 "
                        f"images); the file is truncated or not an STL-10 image file")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size // _IMAGE_BYTES, 3, _SIDE, _SIDE))  # (N, 3, W, H)


def _labels(path: str, n: int) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(f"missing STL-10 file {path}")
    y = np.fromfile(path, dtype=np.uint8)
    if y.shape != (n,):
        raise DataError(f"{path}: {y.size} labels for {n} images in the matching _X.bin file")
    if n and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: STL-10 labels must lie in 1..10, got {y.min()}..{y.max()}")
    return y.astype(np.int64) - 1  # 1..10 -> 0..9


def open_stl10(path: str | None, split: str) -> ArraySource:
    """STL-10, splits ``train`` (5000), ``test`` (8000), ``unlabeled`` (100000, labels -1) and ``train+unlabeled``
    (train first, then unlabeled). ``path`` is the ``stl10_binary`` folder or its parent."""
    check_split("stl10", split, SPLITS)
    root = find_dataset_dir("stl10", require_path("stl10", path), "stl10_binary", "class_names.txt")
    with open(os.path.join(root, "class_names.txt"), encoding="utf-8") as f:
        classes = [line.strip() for line in f if line.strip()]
    if len(classes) != 10:
        raise DataError(f"{os.path.join(root, 'class_names.txt')}: expected 10 class names, got {len(classes)}")

    parts = ["train", "unlabeled"] if split == "train+unlabeled" else [split]
    arrays, labels = [], []
    for part in parts:
        x = _images(os.path.join(root, f"{part}_X.bin"))
        arrays.append(x)
        if part == "unlabeled":
            labels.append(np.full(len(x), -1, dtype=np.int64))
        else:
            labels.append(_labels(os.path.join(root, f"{part}_y.bin"), len(x)))

    out = torch.empty((sum(len(x) for x in arrays), 3, _SIDE, _SIDE), dtype=torch.uint8)  # (N, 3, H, W)
    pos = 0
    for x in arrays:
        for start in range(0, len(x), _CHUNK):
            chunk = torch.from_numpy(np.array(x[start:start + _CHUNK]))  # (n, 3, W, H): planes column-major
            out[pos:pos + len(chunk)] = chunk.transpose(2, 3)  # (n, 3, H, W)
            pos += len(chunk)
    return ArraySource(out, torch.from_numpy(np.concatenate(labels)), classes, f"stl10:{split}")
