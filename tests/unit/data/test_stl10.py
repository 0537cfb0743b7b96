"""STL-10 binaries (cgh.data.stl10): column-major planes, 1-based labels, the unlabeled split; bad files named."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cgh.data import open_source
from cgh.errors import DataError
from tests.helpers import RNG

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_stl10(root, n_train=3, n_test=2, n_unlabeled=2) -> dict:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "class_names.txt").write_text("\n".join(
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    out = {}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        chw = RNG.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # the true (C, H, W) images
        # On disk each channel plane is column-major: write (C, W, H) in C order.
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(chw.transpose(0, 1, 3, 2)).tobytes())
        labels = RNG.integers(1, 11, n).astype(np.uint8)
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        out[split] = (chw, labels)
    return out


def test_stl10_round_trip(tmp_path):
    written = write_stl10(tmp_path)
    train = open_source("stl10", str(tmp_path), "train")
    assert train.images.shape == (3, 3, 96, 96) and train.name == "stl10:train"
    assert np.array_equal(train.images.numpy(), written["train"][0])  # column-major planes transposed back
    assert train.labels.tolist() == (written["train"][1].astype(int) - 1).tolist()  # 1..10 -> 0..9
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    both = open_source("stl10", str(tmp_path / "stl10_binary"), "train+unlabeled")
    assert both.images.shape == (5, 3, 96, 96) and both.images.is_contiguous()
    assert np.array_equal(both.images[3:].numpy(), written["unlabeled"][0])
    assert both.labels[3:].tolist() == [-1, -1]
    unl = open_source("stl10", str(tmp_path), "unlabeled")
    assert unl.labels.tolist() == [-1, -1]
    assert np.array_equal(open_source("stl10", str(tmp_path), "test").images.numpy(), written["test"][0])


def test_stl10_bad_files(tmp_path):
    write_stl10(tmp_path)
    folder = tmp_path / "stl10_binary"
    raw = (folder / "train_X.bin").read_bytes()
    (folder / "train_X.bin").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="train_X.bin.*not a positive multiple of 27648"):
        open_source("stl10", str(tmp_path), "train")
    (folder / "train_X.bin").write_bytes(raw)
    (folder / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(DataError, match="train_y.bin: 2 labels for 3 images"):
        open_source("stl10", str(tmp_path), "train")
    (folder / "train_y.bin").write_bytes(bytes([0, 2, 3]))
    with pytest.raises(DataError, match=r"train_y.bin.*1\.\.10"):
        open_source("stl10", str(tmp_path), "train")
    os.remove(folder / "test_X.bin")
    with pytest.raises(DataError, match="missing STL-10 file .*test_X.bin"):
        open_source("stl10", str(tmp_path), "test")
