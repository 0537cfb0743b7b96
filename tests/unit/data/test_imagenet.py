"""ImageNet and ImageNet-100 folders (cgh.data.imagenet): class folders, the shipped subset lists, missing
files and classes named."""

from __future__ import annotations

import gzip
import importlib.resources
import os

import pytest

from cgh.data import FileSource, open_source
from cgh.errors import DataError
from tests.helpers import random_hwc, save_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def resource_lines(name):
    data = (importlib.resources.files("cgh") / "resources" / name).read_bytes()
    return gzip.decompress(data).decode().split() if name.endswith(".gz") else data.decode().split()


def test_imagenet_layout(tmp_path):
    wnids = ["n02000000", "n01000000", "n03000000"]
    for w in wnids:
        for k in range(2):
            save_png(str(tmp_path / "train" / w / f"{w}_{k}.JPEG"), random_hwc())
        save_png(str(tmp_path / "val" / w / f"ILSVRC2012_val_{w}.JPEG"), random_hwc())
    (tmp_path / "train" / "n01000000" / "notes.txt").write_text("not an image")
    train = open_source("imagenet", str(tmp_path), "train")
    assert isinstance(train, FileSource) and len(train) == 6 and train.name == "imagenet:train"
    assert train.classes == sorted(wnids) and train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.paths[2] == os.path.join("train", "n02000000", "n02000000_0.JPEG")
    assert train.load(0).mode == "RGB" and train.load(0).size == (8, 8)
    val = open_source("imagenet", str(tmp_path), "val")
    assert val.labels.tolist() == [0, 1, 2]
    # A validation class unknown to train would shift every label: refused.
    save_png(str(tmp_path / "val" / "n04000000" / "x.JPEG"), random_hwc())
    with pytest.raises(DataError, match="1 class folders of .*val are not in .*train.*n04000000"):
        open_source("imagenet", str(tmp_path), "val")
    # The official flat validation folder must be re-organised first.
    flat = tmp_path / "flat"
    save_png(str(flat / "train" / "n01000000" / "a.JPEG"), random_hwc())
    save_png(str(flat / "val" / "ILSVRC2012_val_00000001.JPEG"), random_hwc())
    with pytest.raises(DataError, match="one folder per class"):
        open_source("imagenet", str(flat), "val")
    # train_1pct names files of all 1000 classes: nearly all are missing here.
    with pytest.raises(DataError, match=r"12811 of the 12811 files of the train_1pct list are missing"):
        open_source("imagenet", str(tmp_path), "train_1pct")


def test_imagenet100_subsets(tmp_path):
    classes = sorted(set(resource_lines("imagenet100.txt")))
    assert len(classes) == 100
    wanted = [f for f in resource_lines("imagenet_1percent.txt.gz") if f.split("_")[0] in set(classes)]
    for w in classes:
        (tmp_path / "train" / w).mkdir(parents=True)
        (tmp_path / "val" / w).mkdir(parents=True)
        (tmp_path / "val" / w / f"v_{w}.JPEG").touch()  # listing does not decode: empty files are enough
    for f in wanted:
        (tmp_path / "train" / f.split("_")[0] / f).touch()
    (tmp_path / "train" / "n99999999").mkdir()  # a class outside ImageNet-100 is ignored
    src = open_source("imagenet100", str(tmp_path), "train_1pct")
    assert len(src) == len(wanted) > 1000 and src.classes == classes
    assert src.labels.tolist() == [classes.index(f.split("_")[0]) for f in wanted]
    assert src.paths[0] == os.path.join("train", wanted[0].split("_")[0], wanted[0])
    val = open_source("imagenet100", str(tmp_path), "val")
    assert len(val) == 100 and val.labels.tolist() == list(range(100))
    for f in wanted[:4]:
        os.remove(tmp_path / "train" / f.split("_")[0] / f)
    with pytest.raises(DataError, match=f"4 of the {len(wanted)} files .* missing.*{wanted[0]}"):
        open_source("imagenet100", str(tmp_path), "train_1pct")
    os.remove(tmp_path / "val" / classes[5] / f"v_{classes[5]}.JPEG")
    with pytest.raises(DataError, match=f"{classes[5]} holds no image"):
        open_source("imagenet100", str(tmp_path), "val")
