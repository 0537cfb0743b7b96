"""Dataset sources: each real on-disk format written small in tmp_path, read back exactly; bad input is a DataError
naming the culprit (DESIGN.md section 5)."""

from __future__ import annotations

import gzip
import importlib.resources
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from cgh.data import SOURCES, ArraySource, FileSource, open_source
from cgh.errors import DataError

RNG = np.random.default_rng(0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_png(path, hwc: np.ndarray) -> None:
    """Lossless PNG content (whatever the extension says), so that pixels round-trip exactly."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(hwc).save(path, format="PNG")


def random_hwc(h=8, w=8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python-2 ``str`` opcodes (BINSTRING), like the genuine CIFAR files, instead of Python 3's
    ``_codecs.encode`` call."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<I", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def dump(obj, path, py2: bool) -> None:
    with open(path, "wb") as f:
        if not py2:
            pickle.dump(obj, f, protocol=2)
            return
        Py2Pickler(f, protocol=2).dump(obj)
    if py2:  # numpy 1.x (what the files were written with) names the module numpy.core
        data = open(path, "rb").read().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        open(path, "wb").write(data)


def write_cifar10(root, n=3, py2=False) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump({b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072}, folder / "batches.meta", py2)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
        dump(batch, folder / name, py2)
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("py2", [False, True], ids=["py3-protocol2", "py2-strings"])
def test_cifar10_round_trip(tmp_path, py2):
    written = write_cifar10(tmp_path, py2=py2)
    train = open_source("cifar10", str(tmp_path), "train")  # parent folder accepted
    test = open_source("cifar10", str(tmp_path / "cifar-10-batches-py"), "test")  # the folder itself too
    assert isinstance(train, ArraySource) and train.name == "cifar10:train" and len(train) == 15
    assert train.images.dtype == torch.uint8 and train.images.shape == (15, 3, 32, 32)
    assert train.images.is_contiguous() and train.labels.dtype == torch.int64
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and len(train.classes) == 10
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32.
    assert train.images[7, 1, 5, 9].item() == data[7, 1024 + 5 * 32 + 9]
    assert np.array_equal(train.images.numpy().reshape(15, 3072), data)
    assert train.labels.tolist() == labels
    assert np.array_equal(test.images.numpy().reshape(3, 3072), written["test_batch"][0])


def test_cifar100_round_trip(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"class_{i}".encode() for i in range(100)]
    dump({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, folder / "meta", py2=True)
    data = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
    dump({b"data": data, b"fine_labels": [0, 99, 5, 42], b"coarse_labels": [0, 1, 2, 3]}, folder / "test", True)
    src = open_source("cifar100", str(tmp_path), "test")
    assert src.labels.tolist() == [0, 99, 5, 42] and src.classes[99] == "class_99"
    assert np.array_equal(src.images.numpy().reshape(4, 3072), data)
    with pytest.raises(DataError, match="train"):  # the train file is missing: named
        open_source("cifar100", str(tmp_path), "train")


class RunsCode:
    """A pickle payload that would create a marker file when unpickled by an unrestricted unpickler."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsEval:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [RunsCode, RunsEval])
def test_cifar_crafted_pickle_is_refused_without_running(tmp_path, payload):
    write_cifar10(tmp_path / "d")
    marker = tmp_path / "pwned"
    evil = tmp_path / "d" / "cifar-10-batches-py" / "data_batch_3"
    with open(evil, "wb") as f:
        pickle.dump({b"data": payload(marker), b"labels": [0]}, f, protocol=2)
    # The payload is live: an unrestricted unpickler runs it (on another marker).
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(payload(control), protocol=2))
    assert control.exists()
    refused = r"data_batch_3.*refusing to unpickle global (posix|os|nt|__builtin__|builtins)\."
    with pytest.raises(DataError, match=refused):
        open_source("cifar10", str(tmp_path / "d"), "train")
    assert not marker.exists()


def test_cifar_bad_files(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(DataError, match="data_batch_2.*truncated or wrong format"):
        open_source("cifar10", str(tmp_path), "train")
    (folder / "test_batch").write_text("not a pickle at all")
    with pytest.raises(DataError, match="test_batch"):
        open_source("cifar10", str(tmp_path), "test")
    dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, folder / "test_batch", py2=False)
    with pytest.raises(DataError, match=r"test_batch.*\(N, 3072\)"):
        open_source("cifar10", str(tmp_path), "test")
    dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, folder / "test_batch", py2=False)
    with pytest.raises(DataError, match="test_batch.*2 integers"):
        open_source("cifar10", str(tmp_path), "test")
    dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, folder / "test_batch", py2=False)
    with pytest.raises(DataError, match=r"test_batch.*0\.\.9"):
        open_source("cifar10", str(tmp_path), "test")
    dump([1, 2], folder / "test_batch", py2=False)
    with pytest.raises(DataError, match="test_batch.*dict"):
        open_source("cifar10", str(tmp_path), "test")


def test_missing_paths_and_unknown_names(tmp_path):
    missing = tmp_path / "nowhere"
    for name in ("cifar10", "cifar100", "stl10", "tinyimagenet", "imagenet", "imagenet100", "folder", "npz"):
        with pytest.raises(DataError, match=str(missing)):
            SOURCES[name](str(missing), "train")
        with pytest.raises(DataError, match="needs a path"):
            SOURCES[name](None, "train")
    with pytest.raises(DataError, match="batches.meta"):  # a folder that is not CIFAR
        open_source("cifar10", str(tmp_path), "train")
    with pytest.raises(DataError, match="unknown dataset 'mnist'; known datasets: cifar10"):
        open_source("mnist", None, "train")
    with pytest.raises(DataError, match="unknown split 'valid' .*valid splits: train, test"):
        open_source("cifar10", str(tmp_path), "valid")
    with pytest.raises(DataError, match="unknown split 'val'.*train, test, unlabeled, train\\+unlabeled"):
        open_source("stl10", str(tmp_path), "val")
    with pytest.raises(DataError, match="unknown option.*colour.*synthetic"):
        open_source("synthetic", None, "train", colour=True)


# ----------------------------------------------------------------------------------------------------------------------
# STL-10
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# ImageNet
# ----------------------------------------------------------------------------------------------------------------------


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


def test_file_source_load_reports_undecodable(tmp_path):
    save_png(str(tmp_path / "a" / "ok.png"), random_hwc())
    (tmp_path / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    src = open_source("folder", str(tmp_path), "train")
    bad = src.paths.index(os.path.join("a", "bad.png"))
    with pytest.raises(DataError, match=f"cannot decode image .*{os.path.join('a', 'bad.png')}"):
        src.load(bad)


# ----------------------------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------------------------------------------------


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
