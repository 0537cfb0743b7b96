"""The configured dataset (cgh.data.configured): the test split 'auto', where a split's images are (so that a test
split holding the training images is seen), the class check between two splits, and a checkpoint's folder reading."""

from __future__ import annotations

import shutil

import pytest

from cgh.config import load_config
from cgh.data import open_split
from cgh.data.configured import check_same_classes, resolve_split, saved_folder_splits, split_location
from cgh.errors import DataError
from tests.helpers import photo_folder


def config(*overrides: str):
    return load_config("cifar10", list(overrides))


def test_auto_is_each_datasets_held_out_split(tmp_path):
    assert resolve_split(config(), "auto") == "test" and resolve_split(config(), "train") == "train"
    for name in ("imagenet", "imagenet100", "tinyimagenet"):
        assert resolve_split(config(f"data.name={name}"), "auto") == "val"
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(1, 1))
    assert resolve_split(config("data.name=folder", f"data.path={photos}"), "auto") == "val"
    assert open_split(config("data.name=folder", f"data.path={photos}"), "auto").name == "folder:val"
    (tmp_path / "x_val.npz").write_bytes(b"")
    assert resolve_split(config("data.name=npz", f"data.path={tmp_path}/x_{{split}}.npz"), "auto") == "val"
    assert resolve_split(config("data.name=npz", f"data.path={tmp_path}/x.npz"), "auto") == "test"
    only_train = tmp_path / "only_train"
    photo_folder(only_train, splits=("train",), per_split=(1,))
    cfg = config("data.name=folder", f"data.path={only_train}")
    assert resolve_split(cfg, "auto") is None
    with pytest.raises(DataError, match=rf"folder: {only_train} has no test nor val split for the evaluation test "
                                        rf"split 'auto'; add one \({only_train}/val/<class>/\)"):
        open_split(cfg, "auto")


def test_split_location_tells_the_same_images_apart(tmp_path):
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(1, 1))
    splits = config("data.name=folder", f"data.path={photos}")
    assert split_location(splits, "train") == str(photos / "train") != split_location(splits, "auto")
    plain = config("data.name=folder", f"data.path={photos / 'train'}")  # class folders only: one set of images
    assert split_location(plain, "train") == split_location(plain, "auto") == str(photos / "train")
    old = config("data.name=folder", f"data.path={photos}", "data.folder_splits=false")
    assert split_location(old, "train") == split_location(old, "val") == str(photos)
    assert split_location(config(), "train") != split_location(config(), "test")
    tiny = config("data.name=tinyimagenet", "data.path=/d")
    assert split_location(tiny, "test") == split_location(tiny, "val")  # its test split is val


def test_splits_with_different_classes_are_an_error_naming_them(tmp_path):
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(1, 1))
    shutil.rmtree(photos / "val" / "hopper")
    shutil.rmtree(photos / "val" / "china_left")
    (photos / "val" / "dog").mkdir()
    shutil.copy(photos / "train" / "hopper" / "00.jpg", photos / "val" / "dog" / "00.jpg")
    cfg = config("data.name=folder", f"data.path={photos}")
    with pytest.raises(DataError, match=r"folder:train and folder:val have different classes \(only in folder:train: "
                                        r"china_left, hopper; only in folder:val: dog\)"):
        check_same_classes(open_split(cfg, "train"), open_split(cfg, "val"))


def test_a_checkpoint_saved_before_folder_splits_keeps_its_reading():
    assert saved_folder_splits({"data": {"name": "folder"}}) is False  # cgh 0.1: sub-folders were classes
    assert saved_folder_splits({"data": {"folder_splits": True}}) is True
