"""Image folders: labelled (class sub-folders, torchvision ImageFolder convention) or flat (unlabelled).

Where a split's images are, for ``path`` = PHOTOS:
- a folder of splits: when every non-hidden sub-folder of PHOTOS is named ``train``, ``val`` or ``test``
  (``PHOTOS/train/<class>/...``, ``PHOTOS/val/<class>/...``, the layout people keep), split ``s`` is ``PHOTOS/s``
  and a split it does not hold is a DataError naming the ones it does. ``folder_splits=False`` turns this off, for
  a folder whose classes really are named train and val (``split_dir``);
- ``path`` may contain the placeholder ``{split}`` (``/data/pets/{split}``), replaced by the split name;
- otherwise the same folder is used for every split (its images are then both trained on and tested on: the kNN
  monitor and the evaluation commands refuse or warn, cgh.data.configured.split_location).

The evaluation test split ``auto`` of a folder is ``test`` where PHOTOS holds a test split, else ``val``
(``auto_test_split``).

Rules for one split's folder (class sub-folders, or flat and unlabeled):
- if any non-hidden sub-folder holds images (searched recursively, like ImageFolder), the folder is labelled: class
  index = position of the sub-folder name in sorted order, and a class sub-folder with no image is an error (as in
  ImageFolder, so that class indices cannot shift silently between splits); image files lying directly in the
  folder are then ignored;
- otherwise the image files directly in the folder form an unlabelled set (labels -1, ``classes == []``);
- extensions: jpg jpeg png bmp webp tif tiff ppm, case-insensitive.

By default the result is a :class:`FileSource` (decoded and cropped in loader workers). ``in_memory=True`` with
``image_size=S`` decodes everything once into an :class:`ArraySource` of S x S images (shorter side resized to S,
then centre-cropped), which makes small folders as fast as CIFAR.
"""

from __future__ import annotations

import os

import torch

from cgh.data.base import ArraySource, FileSource, Source, is_image_file, require_path
from cgh.data.decode import decode_all
from cgh.errors import DataError


def list_images(folder: str) -> list[str]:
    """Image files under ``folder``, recursively, as paths relative to it, in sorted (deterministic) order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, folder)
        found += [os.path.normpath(os.path.join(rel, f)) for f in sorted(filenames) if is_image_file(f)]
    return found


def scan_class_folders(root: str, classes: list[str], dataset: str) -> tuple[list[str], list[int]]:
    """Images of each class folder ``root/<class>`` as paths relative to ``root`` and their class indices (the
    position in ``classes``). A missing or image-less class folder is a DataError."""
    missing = [c for c in classes if not os.path.isdir(os.path.join(root, c))]
    if missing:
        raise DataError(f"{dataset}: {len(missing)} class folders are missing under {root}, e.g. "
                        f"{', '.join(missing[:5])}")
    return _label_files(root, {c: list_images(os.path.join(root, c)) for c in classes}, dataset)


def _label_files(root: str, files: dict[str, list[str]], dataset: str) -> tuple[list[str], list[int]]:
    paths: list[str] = []
    labels: list[int] = []
    for index, (cls, names) in enumerate(files.items()):
        if not names:
            raise DataError(f"{dataset}: class folder {os.path.join(root, cls)} holds no image file "
                            f"(recognised extensions: jpg jpeg png bmp webp tif tiff ppm)")
        paths += [os.path.join(cls, f) for f in names]
        labels += [index] * len(names)
    return paths, labels


SPLIT_NAMES = ("train", "val", "test")
AUTO_TEST_SPLITS = ("test", "val")  # what eval_test_split=auto takes, in this order of preference


def splits_in(path: str) -> list[str]:
    """The split sub-folders of ``path`` when it is a folder of splits (every non-hidden sub-folder named train, val
    or test), else []."""
    if not os.path.isdir(path):
        return []
    subdirs = [e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    return sorted(subdirs, key=SPLIT_NAMES.index) if subdirs and set(subdirs) <= set(SPLIT_NAMES) else []


def split_dir(path: str | None, split: str, splits: bool = True) -> str:
    """The folder holding ``split``'s images (the module docstring's rules); ``splits``: whether a folder of splits
    is read as one. DataError for a missing path, or a split a folder of splits does not hold."""
    pattern = "{split}" in str(path or "")
    path = require_path("folder", None if path is None else str(path).replace("{split}", split))
    if pattern or not splits:
        return path
    found = splits_in(path)
    if not found:
        return path
    if split not in found:
        raise DataError(f"folder: {path} holds the splits {', '.join(f'{s}/' for s in found)} and no {split}/; "
                        f"add {os.path.join(path, split, '<class>')}/ or choose one of its splits")
    return os.path.join(path, split)


def auto_test_split(path: str | None, splits: bool = True) -> str | None:
    """The test split ``auto`` means for a folder: ``test`` where ``path`` (a folder of splits or a ``{split}``
    pattern) holds one, else ``val``; None when it holds neither. A plain folder (every split the same images):
    ``test``."""
    path = os.path.expanduser(str(path or ""))
    if "{split}" in path:
        found = [s for s in AUTO_TEST_SPLITS if os.path.isdir(path.replace("{split}", s))]
    elif splits and splits_in(path):
        found = [s for s in AUTO_TEST_SPLITS if s in splits_in(path)]
    else:
        return AUTO_TEST_SPLITS[0]
    return found[0] if found else None


def open_folder(
    path: str | None, split: str, *, folder_splits: bool = True, in_memory: bool = False,
    image_size: int | None = None, num_workers: int | None = None, cache_dir: str | None = None,
) -> Source:
    """A folder of images, labelled by sub-folder or flat (see the module docstring). ``folder_splits``: read a
    folder whose sub-folders are train/, val/, test/ as a folder of splits (``split_dir``)."""
    path = split_dir(path, split, folder_splits)
    if not os.path.isdir(path):
        raise DataError(f"folder: {path} is not a directory")
    subdirs = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    per_class = {d: list_images(os.path.join(path, d)) for d in subdirs}  # sorted names: index = sorted position
    if any(per_class.values()):
        classes = subdirs
        paths, labels = _label_files(path, per_class, "folder")
    else:
        classes = []
        paths = sorted(e.name for e in os.scandir(path) if e.is_file() and is_image_file(e.name))
        labels = [-1] * len(paths)
    if not paths:
        raise DataError(f"folder: no image files in {path} nor in its sub-folders "
                        f"(recognised extensions: jpg jpeg png bmp webp tif tiff ppm)")
    name = f"folder:{split}"
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    if not in_memory:
        return FileSource(path, paths, label_tensor, classes, name)
    if image_size is None:
        raise DataError("folder: in_memory=True needs image_size (the side every image is resized and cropped to)")
    images = decode_all([os.path.join(path, p) for p in paths], int(image_size), num_workers=num_workers,
                        desc=name, cache_dir=cache_dir)
    return ArraySource(images, label_tensor, classes, name)
