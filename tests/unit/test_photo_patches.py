"""benchmarks/photo_patches.py, the photo set of the long-budget study: validation patches never share a pixel with
training patches, and the folder it writes is one cgh reads as a user's train/ + val/ folder."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import photo_patches as pp  # noqa: E402


def test_train_and_val_regions_do_not_overlap():
    train_right = max(pp.TRAIN_X) + pp.PATCH
    val_left = min(pp.VAL_X)
    assert train_right <= val_left, (train_right, val_left)
    assert max(pp.VAL_X) + pp.PATCH <= pp.SIZE and max(pp.TRAIN_Y) + pp.PATCH <= pp.SIZE


def test_the_folder_reads_as_train_and_val_splits(tmp_path, monkeypatch):
    from cgh.data.folder import auto_test_split, open_folder

    # the three photographs of the runtime dependencies (scikit-image, the other seven, is an optional extra)
    monkeypatch.setattr(pp, "PHOTOS", {k: v for k, v in pp.PHOTOS.items() if v[0] != "skimage"})
    manifest = pp.build(tmp_path)
    assert manifest["classes"] == ["china", "flower", "grace_hopper"]
    assert auto_test_split(str(tmp_path)) == "val"
    for split in ("train", "val"):
        source = open_folder(str(tmp_path), split)
        assert source.classes == sorted(manifest["classes"])
        assert len(source) == sum(manifest["counts"][split].values()) > 100
    # built again: the same pixels, nothing rewritten
    stamp = (tmp_path / "train" / "china" / "000.png").stat().st_mtime_ns
    assert pp.build(tmp_path) == manifest
    assert (tmp_path / "train" / "china" / "000.png").stat().st_mtime_ns == stamp


def test_flat_patches_are_dropped():
    img = np.zeros((pp.SIZE, pp.SIZE, 3), np.uint8)
    img[:, 160:] = np.random.default_rng(0).integers(0, 255, (pp.SIZE, pp.SIZE - 160, 3))
    kept = pp.patches(img, range(0, 288, 32), [0])
    assert len(kept) == 4  # the patches at x = 160..256: the flat black ones on the left are dropped


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(pp.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"skimage.*pip install -e '\.\[photos\]'"):
        pp.photo_path("skimage", "data/astronaut.png")
