"""Image folders: labelled (class sub-folders, torchvision ImageFolder convention) or flat (unlabelled).

``path`` may contain the placeholder ``{split}`` (``/data/pets/{split}``), replaced by the split name, so one config
serves ``train`` and ``test``; without it the same folder is used for every split.

Rules (an image folder: class sub-folders, or flat and unlabeled):
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


def open_folder(
    path: str | None, split: str, *, in_memory: bool = False, image_size: int | None = None,
    num_workers: int | None = None, cache_dir: str | None = None,
) -> Source:
    """A folder of images, labelled by sub-folder or flat (see the module docstring)."""
    path = require_path("folder", None if path is None else str(path).replace("{split}", split))
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
