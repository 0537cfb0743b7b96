"""Image folders (cgh.data.folder): labelled, flat and ``{split}`` folders, folders of splits (train/, val/, test/)
and the test split 'auto' picks in them, recursive listing, in-memory decoding; errors named."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from cgh.data import ArraySource, FileSource, open_source
from cgh.data.folder import auto_test_split, splits_in
from cgh.errors import DataError
from tests.helpers import PHOTO_CLASSES, photo_folder, random_hwc, save_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_folder_labelled_flat_and_split_placeholder(tmp_path):
    pix = {}
    for split in ("train", "test"):
        for cls in ("zebra", "ant"):
            for k, ext in enumerate((".png", ".PNG", ".Jpeg")):
                hwc = random_hwc(6, 10)
                path = tmp_path / split / cls / ("deep" if k == 2 else "") / f"{k}{ext}"
                save_png(str(path), hwc)
                pix[(split, cls, k)] = hwc
    (tmp_path / "train" / "ant" / "readme.txt").write_text("ignored")
    (tmp_path / "train" / ".hidden").mkdir()
    src = open_source("folder", str(tmp_path / "{split}"), "test")
    assert isinstance(src, FileSource) and src.classes == ["ant", "zebra"] and src.name == "folder:test"
    assert src.labels.tolist() == [0, 0, 0, 1, 1, 1] and len(src) == 6
    assert np.array_equal(np.asarray(src.load(0)), pix[("test", "ant", 0)])
    assert src.paths[2] == os.path.join("ant", "deep", "2.Jpeg")  # recursive, like ImageFolder

    mem = open_source("folder", str(tmp_path / "{split}"), "train", in_memory=True, image_size=6, num_workers=0)
    assert isinstance(mem, ArraySource) and mem.images.shape == (6, 3, 6, 6)
    # Shorter side already 6: only the centre crop of the 10-wide image (offset round((10 - 6) / 2) = 2).
    assert np.array_equal(mem.images[3].permute(1, 2, 0).numpy(), pix[("train", "zebra", 0)][:, 2:8])
    pooled = open_source("folder", str(tmp_path / "{split}"), "train", in_memory=True, image_size=6, num_workers=2)
    assert torch.equal(pooled.images, mem.images)  # decoding in worker processes changes nothing
    with pytest.raises(DataError, match="in_memory=True needs image_size"):
        open_source("folder", str(tmp_path / "train"), "train", in_memory=True)

    flat = tmp_path / "flat"
    for k in range(3):
        save_png(str(flat / f"img{k}.bmp"), random_hwc())
    (flat / "notes.md").write_text("x")
    unl = open_source("folder", str(flat), "train")
    assert unl.classes == [] and unl.labels.tolist() == [-1, -1, -1] and unl.paths == ["img0.bmp", "img1.bmp",
                                                                                         "img2.bmp"]


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"no image files in {tmp_path / 'empty'}"):
        open_source("folder", str(tmp_path / "empty"), "train")
    with pytest.raises(DataError, match=str(tmp_path / "val")):
        open_source("folder", str(tmp_path / "{split}"), "val")
    save_png(str(tmp_path / "two" / "cat" / "a.png"), random_hwc())
    (tmp_path / "two" / "dog").mkdir()
    with pytest.raises(DataError, match="class folder .*dog holds no image"):
        open_source("folder", str(tmp_path / "two"), "train")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is not a directory"):
        open_source("folder", str(tmp_path / "file.png"), "train")


def test_a_folder_of_splits_is_read_as_splits(tmp_path):
    """PHOTOS/train/<class>/ and PHOTOS/val/<class>/, the layout people keep: ``data.path=PHOTOS`` gives the splits,
    not two classes named train and val (cgh 0.1 trained on both and tested on the same images)."""
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(2, 1))
    train = open_source("folder", str(photos), "train")
    assert train.name == "folder:train" and train.root == str(photos / "train") and len(train) == 10
    assert train.classes == list(PHOTO_CLASSES) and train.labels.tolist() == [c for c in range(5) for _ in range(2)]
    val = open_source("folder", str(photos), "val")
    assert val.root == str(photos / "val") and val.classes == train.classes and len(val) == 5
    # the {split} placeholder reads the same folders
    assert open_source("folder", str(photos / "{split}"), "val").paths == val.paths
    with pytest.raises(DataError, match=rf"folder: {re.escape(str(photos))} holds the splits train/, val/ and no "
                                        r"test/; add .*test/<class>/ or choose one of its splits"):
        open_source("folder", str(photos), "test")
    # data.folder_splits=false: cgh 0.1's reading, for a folder whose classes really are named train and val
    classes = open_source("folder", str(photos), "train", folder_splits=False)
    assert classes.classes == ["train", "val"] and len(classes) == 15
    # a class folder that merely contains a sub-folder named like a split is not a folder of splits
    (photos / "train" / "val").mkdir()
    assert splits_in(str(photos / "train")) == []


def test_auto_test_split_is_test_where_there_is_one_else_val(tmp_path):
    photos = tmp_path / "photos"
    photo_folder(photos, splits=("train",), per_split=(1,))
    assert auto_test_split(str(photos)) is None  # only train/: no split to test on
    photo_folder(photos, splits=("train", "val"), per_split=(1, 1))
    assert auto_test_split(str(photos)) == "val" and auto_test_split(str(photos / "{split}")) == "val"
    photo_folder(photos, splits=("train", "val", "test"), per_split=(1, 1, 1))
    assert auto_test_split(str(photos)) == "test" and splits_in(str(photos)) == ["train", "val", "test"]
    assert auto_test_split(str(photos / "train")) == "test"  # a plain folder: every split is the same images
    assert auto_test_split(str(photos), splits=False) == "test"
