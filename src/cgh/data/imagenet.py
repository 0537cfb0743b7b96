"""ImageNet-1k and ImageNet-100 in the usual re-organised layout, as file sources (docs/method.md#imagenet-recipe,
docs/method.md#small-datasets, docs/evaluation.md#semi-supervised).

Layout: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG`` (the validation images moved into one folder per
class, e.g. by the well-known ``valprep.sh``). Class index = position of the wnid in sorted order (torchvision
ImageFolder convention, what the authors' code uses); the class list comes from ``train`` (or from the split's own
folder when ``train`` is absent), so that ``train`` and ``val`` always agree.

Splits: ``train``, ``val``, and the standard semi-supervised subsets ``train_1pct`` / ``train_10pct``
(docs/evaluation.md#semi-supervised: the SimCLR lists of 12811 / 128116 file names, shipped gzipped in
``cgh/resources``; the class of ``n04235860_14959.JPEG`` is the prefix before ``_``). ``imagenet100`` keeps only the 100
classes of ``cgh/resources/imagenet100.txt`` (the CMC list the authors ship), indexed 0..99 in sorted wnid order.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os

import torch

from cgh.data.base import FileSource, check_split, require_path
from cgh.data.folder import scan_class_folders
from cgh.errors import DataError

SPLITS = ("train", "val", "train_1pct", "train_10pct")
_SUBSETS = {"train_1pct": "imagenet_1percent.txt.gz", "train_10pct": "imagenet_10percent.txt.gz"}


def _resource_lines(name: str) -> list[str]:
    data = (importlib.resources.files("cgh") / "resources" / name).read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


def imagenet100_classes() -> list[str]:
    """The 100 wnids of ImageNet-100, sorted (= class index order)."""
    return sorted(set(_resource_lines("imagenet100.txt")))


def _folder_classes(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _open(dataset: str, path: str | None, split: str, subset_classes: list[str] | None) -> FileSource:
    check_split(dataset, split, SPLITS)
    root = require_path(dataset, path)
    folder = os.path.join(root, "val" if split == "val" else "train")
    if not os.path.isdir(folder):
        raise DataError(f"{dataset}: missing folder {folder} (expected {root}/train/<wnid>/*.JPEG and "
                        f"{root}/val/<wnid>/*.JPEG)")
    if not _folder_classes(folder):
        flat = any(e.is_file() for e in os.scandir(folder))
        hint = " (the validation images must be moved into one folder per class, val/<wnid>/)" if flat else ""
        raise DataError(f"{dataset}: no class folders in {folder}{hint}")
    train_dir = os.path.join(root, "train")
    if subset_classes is not None:
        classes = subset_classes
    else:
        classes = _folder_classes(train_dir if os.path.isdir(train_dir) else folder)
        extra = sorted(set(_folder_classes(folder)) - set(classes))
        if extra:
            raise DataError(f"{dataset}: {len(extra)} class folders of {folder} are not in {train_dir}, e.g. "
                            f"{', '.join(extra[:5])}; train and val must hold the same classes")

    name = f"{dataset}:{split}"
    if split in ("train", "val"):
        rel, labels = scan_class_folders(folder, classes, dataset)
        prefix = os.path.basename(folder)
        paths = [os.path.join(prefix, p) for p in rel]
        return FileSource(root, paths, torch.tensor(labels, dtype=torch.int64), classes, name)

    index = {w: i for i, w in enumerate(classes)}
    paths, labels = [], []
    for fname in _resource_lines(_SUBSETS[split]):
        wnid = fname.split("_")[0]
        if subset_classes is not None and wnid not in index:
            continue  # ImageNet-100 keeps the listed files of its 100 classes only
        paths.append(os.path.join("train", wnid, fname))
        labels.append(index.get(wnid, -1))  # a wnid without a train folder: its files are reported missing below
    missing = [p for p in paths if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise DataError(f"{dataset}: {len(missing)} of the {len(paths)} files of the {split} list are missing "
                        f"under {root}, e.g. {', '.join(missing[:3])}")
    return FileSource(root, paths, torch.tensor(labels, dtype=torch.int64), classes, name)


def open_imagenet(path: str | None, split: str) -> FileSource:
    """ImageNet-1k: ``train`` (1281167), ``val`` (50000), ``train_1pct`` (12811), ``train_10pct`` (128116)."""
    return _open("imagenet", path, split, None)


def open_imagenet100(path: str | None, split: str) -> FileSource:
    """ImageNet-100 (the CMC class list) read from a full ImageNet root: the same splits, 100 classes."""
    return _open("imagenet100", path, split, imagenet100_classes())
