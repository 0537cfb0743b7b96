"""npz archives (cgh.data.npz): NHWC and NCHW layouts, labels and class names; wrong arrays, pickled objects
and damaged archives are a DataError naming the file and the key, also through ``cgh pretrain``.

Fuzzed: tests/system/test_fuzz.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from cgh.cli import main
from cgh.data import open_source
from cgh.errors import CGHError, DataError
from tests.helpers import RNG, npz_bytes, one_error_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_npz_layouts_round_trip(tmp_path):
    nchw = RNG.integers(0, 256, (5, 3, 7, 9), dtype=np.uint8)
    labels = np.array([0, 2, 1, 2, 0], dtype=np.int32)
    np.savez(tmp_path / "x_train.npz", images=nchw.transpose(0, 2, 3, 1), labels=labels)  # NHWC
    np.savez(tmp_path / "x_test.npz", images=nchw, labels=labels, classes=np.array(["a", "b", "c"]))  # NCHW
    a = open_source("npz", str(tmp_path / "x_{split}.npz"), "train")
    b = open_source("npz", str(tmp_path / "x_{split}.npz"), "test")
    for src in (a, b):
        assert src.images.shape == (5, 3, 7, 9) and src.images.is_contiguous()
        assert np.array_equal(src.images.numpy(), nchw) and src.labels.tolist() == labels.tolist()
        assert src.labels.dtype == torch.int64
    assert a.classes == ["0", "1", "2"] and b.classes == ["a", "b", "c"]
    # Both axis 1 and axis 3 of size 3: NHWC wins (the documented rule).
    amb = RNG.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "amb.npz", images=amb)
    src = open_source("npz", str(tmp_path / "amb.npz"), "train")
    assert np.array_equal(src.images.numpy(), amb.transpose(0, 3, 1, 2))
    assert src.labels.tolist() == [-1, -1] and src.classes == []


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "key 'images' must be uint8, got float32"),
    ({"images": np.zeros((4, 4, 3), np.uint8)}, r"key 'images' must have rank 4.*\(4, 4, 3\)"),
    ({"images": np.zeros((2, 4, 4, 4), np.uint8)}, r"3 colour channels.*\(2, 4, 4, 4\)"),
    ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0, 1, 2])}, r"key 'labels'.*\(2,\)"),
    ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0, -1])}, "key 'labels' must be >= 0"),
    ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0.0, 1.0])}, "key 'labels' must hold int"),
    ({"pixels": np.zeros((2, 4, 4, 3), np.uint8)}, "missing key 'images'; keys present: pixels"),
    ({"images": np.zeros((0, 4, 4, 3), np.uint8)}, "holds no image"),
])
def test_npz_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=f"{path}.*{message}"):
        open_source("npz", str(path), "train")


def test_npz_unreadable(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([{"a": 1}], dtype=object))  # pickled objects: refused, never unpickled
    with pytest.raises(DataError, match=f"{path}.*pickled objects"):
        open_source("npz", str(path), "train")
    np.savez(tmp_path / "ok.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.npz is not a readable .npz"):
        open_source("npz", str(tmp_path / "cut.npz"), "train")
    np.save(tmp_path / "single.npy", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="single.npy: expected an .npz archive"):
        open_source("npz", str(tmp_path / "single.npy"), "train")


def test_npz_with_wrong_arrays_through_the_cli(tmp_path, capsys):
    cases = {
        "float.npz": (np.zeros((8, 32, 32, 3), np.float32), "key 'images' must be uint8, got float32"),
        "gray.npz": (np.zeros((8, 32, 32), np.uint8), r"key 'images' must have rank 4.*\(8, 32, 32\)"),
        "rgba.npz": (np.zeros((8, 32, 32, 4), np.uint8), r"key 'images' must have 3 colour channels.*\(8, 32, 32, 4\)"),
    }
    for name, (images, message) in cases.items():
        np.savez(tmp_path / name, images=images)
        assert main(["pretrain", "cifar10", "data.name=npz", f"data.path={tmp_path / name}",
                     f"out_dir={tmp_path / 'run'}", "train.device=cpu"]) == 2
        err = one_error_line(capsys.readouterr().err)
        assert re.match(rf"error: {re.escape(str(tmp_path / name))}: {message}", err), err


def test_damaged_npz_regressions(tmp_path):
    """The two damages the fuzzer (tests/system/test_fuzz.py)
    found first: the first member's local header with its extra-field length zeroed,
    so that reading starts inside the zip64 field (was zlib.error: invalid stored block lengths), and its
    central-directory entry asking for zip version 25.5 (was NotImplementedError)."""
    raw = npz_bytes(True)
    assert raw[:4] == b"PK\x03\x04" and raw[28] > 0  # local header of images.npy, with an extra field
    central = raw.index(b"PK\x01\x02")  # its central-directory entry
    for name, (offset, value), error in (("extra", (28, 0x00), "error"),
                                         ("version", (central + 6, 0xFF), "NotImplementedError")):
        damaged = bytearray(raw)
        damaged[offset] = value
        path = tmp_path / f"{name}.npz"
        path.write_bytes(bytes(damaged))
        with pytest.raises(CGHError, match=rf"{path} is not a readable \.npz file .*{error}"):
            open_source("npz", str(path), "train")
