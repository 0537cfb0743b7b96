"""scikit-learn's handwritten digits as a small real dataset that needs no download.

scikit-learn ships the test set of the UCI "Optical Recognition of Handwritten Digits" data inside its wheel
(``sklearn.datasets.load_digits``: 1797 images of 8x8 pixels, 17 grey levels 0..16, 10 classes, written by 43 people).
It is the one labelled image set on these machines that is real (not generated) and installed with a dependency, so
it is the project's check that learning carries over from the synthetic set to real images.

The images are enlarged to ``image_size`` (32 by default, the CIFAR geometry the small-data presets expect) with
bilinear interpolation, ink bright on a dark background, and replicated to three channels. The split is fixed and
stratified: a seeded permutation of each class puts the first ``TRAIN_FRACTION`` of it (1,300 images in all) in
``train`` and the rest (497) in ``test``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cgh.data.base import ArraySource, check_split
from cgh.errors import DataError

SPLITS = ("train", "test")
TRAIN_SIZE = 1300  # of 1797; the rest is the test split
SPLIT_SEED = 0  # the permutation that draws the split; fixed so that every run sees the same test images


def _split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: each class contributes round(TRAIN_SIZE * its share) training images (sums to TRAIN_SIZE)."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = round(TRAIN_SIZE * len(idx) / len(labels))
        train.append(idx[:n])
        test.append(idx[n:])
    train_idx, test_idx = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    assert len(train_idx) == TRAIN_SIZE, len(train_idx)
    return train_idx, test_idx


def open_digits(path: str | None, split: str, *, image_size: int = 32) -> ArraySource:
    """The ``split`` ('train' or 'test') of scikit-learn's digits at ``image_size`` px; ``path`` must be empty."""
    if path not in (None, ""):
        raise DataError(f"digits: the dataset comes with scikit-learn and reads no files, but path {path!r} was "
                        f"given; leave it empty")
    check_split("digits", split, SPLITS)
    if not 8 <= image_size <= 512:
        raise DataError(f"digits: image_size = {image_size}: expected 8..512 pixels")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # a dependency of this package, so only a broken environment gets here
        raise DataError(f"digits: scikit-learn is needed to read the digits ({e})") from None
    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)  # (1797, 8, 8) in 0..16
    train_idx, test_idx = _split_indices(labels)
    idx = train_idx if split == "train" else test_idx
    x = torch.from_numpy(images[idx] / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1], ink = 1
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()  # (N, 3, S, S)
    return ArraySource(x, torch.from_numpy(labels[idx]), [str(i) for i in range(10)], f"digits:{split}")
