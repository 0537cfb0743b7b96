"""Tiny-ImageNet (cgh.data.tinyimagenet): class order and names, the val annotations, greyscale images,
the decode cache; bad annotations and files named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cgh.data import open_source
from cgh.errors import DataError
from tests.helpers import RNG, random_hwc, save_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_tiny(root) -> dict:
    base = root / "tiny-imagenet-200"
    wnids = ["n09999999", "n01443537", "n02124075"]  # wnids.txt is not sorted in the real archive either
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\n"
                                    "n00000001\tentity\n")
    pix = {}
    for w in wnids:
        for k in range(2):
            hwc = random_hwc(64, 64)
            path = base / "train" / w / "images" / f"{w}_{k}.JPEG"
            save_png(str(path), hwc)
            pix[str(path)] = hwc
        (base / "train" / w / f"{w}_boxes.txt").parent.mkdir(parents=True, exist_ok=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for k, w in enumerate(["n02124075", "n09999999", "n01443537"]):
        path = base / "val" / "images" / f"val_{k}.JPEG"
        hwc = random_hwc(64, 64)
        save_png(str(path), hwc)
        pix[str(path)] = hwc
        lines.append(f"val_{k}.JPEG\t{w}\t0\t1\t60\t62")
    # A grayscale JPEG of another size: must come out as 64x64 RGB.
    Image.fromarray(RNG.integers(0, 256, (80, 100), dtype=np.uint8), mode="L").save(base / "val" / "images" /
                                                                                    "val_3.JPEG")
    lines.append("val_3.JPEG\tn01443537\t0\t0\t10\t10")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return pix


def test_tinyimagenet_round_trip_and_cache(tmp_path):
    pix = write_tiny(tmp_path)
    base = tmp_path / "tiny-imagenet-200"
    train = open_source("tinyimagenet", str(tmp_path), "train", num_workers=0)
    assert train.images.shape == (6, 3, 64, 64) and train.name == "tinyimagenet:train"
    # Sorted wnids -> class index; names from words.txt, the wnid itself when words.txt lacks it.
    assert train.classes == ["goldfish", "Egyptian cat", "n09999999"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    first = pix[str(base / "train" / "n01443537" / "images" / "n01443537_0.JPEG")]
    assert np.array_equal(train.images[0].permute(1, 2, 0).numpy(), first)
    val = open_source("tinyimagenet", str(base), "val", num_workers=0)
    assert val.labels.tolist() == [1, 2, 0, 0]
    assert np.array_equal(val.images[1].permute(1, 2, 0).numpy(), pix[str(base / "val" / "images" / "val_1.JPEG")])
    gray = val.images[3]
    assert gray.shape == (3, 64, 64) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    test = open_source("tinyimagenet", str(base), "test", num_workers=0)  # alias of val (the test set is unlabelled)
    assert torch.equal(test.images, val.images) and test.name == "tinyimagenet:val"

    cache = tmp_path / "cache"
    first_run = open_source("tinyimagenet", str(base), "val", num_workers=0, cache_dir=str(cache))
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    again = open_source("tinyimagenet", str(base), "val", num_workers=0, cache_dir=str(cache))
    assert torch.equal(first_run.images, again.images) and torch.equal(again.images, val.images)


def test_tinyimagenet_errors(tmp_path):
    write_tiny(tmp_path)
    base = tmp_path / "tiny-imagenet-200"
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn12345678\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt:1.*n12345678"):
        open_source("tinyimagenet", str(base), "val", num_workers=0)
    (base / "val" / "val_annotations.txt").write_text("gone.JPEG\tn01443537\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="1 images listed .* missing.*gone.JPEG"):
        open_source("tinyimagenet", str(base), "val", num_workers=0)
    broken = base / "train" / "n01443537" / "images" / "n01443537_1.JPEG"
    broken.write_bytes(broken.read_bytes()[:50])
    with pytest.raises(DataError, match="n01443537_1.JPEG"):
        open_source("tinyimagenet", str(base), "train", num_workers=0)
