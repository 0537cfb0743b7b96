"""scikit-learn's digits (cgh.data.digits): the fixed stratified split, sizes, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from cgh.data import open_source
from cgh.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_digits_ships_with_scikit_learn_and_splits_stratified():
    train, test = open_source("digits", "", "train"), open_source("digits", "", "test")
    assert (len(train), len(test)) == (1300, 497) and train.name == "digits:train"
    assert train.images.shape == (1300, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey, replicated to three channels
    counts = torch.bincount(train.labels, minlength=10)
    assert counts.min() >= 125 and counts.max() <= 133  # ~130 of each digit, every class present in both splits
    assert set(test.labels.tolist()) == set(range(10))
    again = open_source("digits", None, "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)  # a fixed split
    small = open_source("digits", "", "test", image_size=8)
    assert small.images.shape == (497, 3, 8, 8) and int(small.images.max()) == 255  # ink is bright


def test_digits_refuses_a_path_and_unknown_splits():
    with pytest.raises(DataError, match="reads no files.*leave it empty"):
        open_source("digits", "/data/digits", "train")
    with pytest.raises(DataError, match="unknown split 'val'.*train, test"):
        open_source("digits", "", "val")
