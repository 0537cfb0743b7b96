"""The two kinds of dataset source, and the checks every opener shares.

A source is either an :class:`ArraySource` (the whole dataset as ONE uint8 tensor, for CIFAR, STL-10, Tiny-ImageNet,
npz arrays, the synthetic set and small folders: the loader indexes it with no per-sample Python work and the crops
are done on device) or a :class:`FileSource` (image files decoded and cropped in loader workers, for ImageNet-sized
folders). Both carry int64 labels with -1 for unlabelled images and the class names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from cgh.data.decode import load_image
from cgh.errors import DataError

# Extensions recognised as images by the folder sources (compared lower-case). torchvision's ImageFolder list,
# minus pgm (grayscale-only) and plus tif/webp which Pillow decodes.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


@dataclass
class ArraySource:
    """A dataset held in memory as one uint8 tensor.

    images: (N, 3, H, W) uint8, contiguous, on the CPU.
    labels: (N,) int64, -1 where unlabelled; label i names ``classes[i]``.
    classes: class names (empty list for an unlabelled set).
    name: ``"<dataset>:<split>"``, e.g. ``"cifar10:train"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        # Internal invariant of every opener in this package, checked once here so that a new opener cannot hand the
        # loader a float or NHWC tensor by mistake.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DataError(f"{self.name}: images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.name}: labels must be int64 ({self.images.shape[0]},), got {self.labels.dtype} "
                            f"{tuple(self.labels.shape)}")
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:  # the default would print the pixels
        _, c, h, w = self.images.shape
        return f"ArraySource({self.name!r}, {len(self)} images {c}x{h}x{w}, {len(self.classes)} classes)"

    def subset(self, indices, name: str | None = None) -> ArraySource:
        """The images ``indices`` (a sequence, array or tensor of ints), in that order, as a new ArraySource named
        ``name`` (default: this source's name)."""
        idx = _as_indices(indices)
        return ArraySource(self.images[idx].contiguous(), self.labels[idx], list(self.classes), name or self.name)


@dataclass
class FileSource:
    """A dataset of image files, decoded on demand (ImageNet-sized sets that do not fit in memory as pixels).

    root: the dataset folder; ``paths`` are relative to it (an absolute path also works, ``os.path.join`` keeps it).
    labels: (N,) int64, -1 where unlabelled; label i names ``classes[i]``.
    """

    root: str
    paths: list[str]
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.paths),):
            raise DataError(f"{self.name}: labels must be int64 ({len(self.paths)},), got {self.labels.dtype} "
                            f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:  # the default would print every path
        return f"FileSource({self.name!r}, {len(self)} files under {self.root!r}, {len(self.classes)} classes)"

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.paths[i])

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` as RGB; an undecodable or truncated file raises DataError naming its path."""
        return load_image(self.path(i))

    def subset(self, indices, name: str | None = None) -> FileSource:
        """The files ``indices`` (a sequence, array or tensor of ints), in that order, as a new FileSource named
        ``name`` (default: this source's name)."""
        idx = _as_indices(indices)
        return FileSource(self.root, [self.paths[i] for i in idx.tolist()], self.labels[idx], list(self.classes),
                          name or self.name)


def _as_indices(indices) -> torch.Tensor:
    return torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (n,)


Source = ArraySource | FileSource


def check_split(dataset: str, split: str, valid: Sequence[str]) -> None:
    if split not in valid:
        raise DataError(f"unknown split {split!r} for dataset {dataset!r}; valid splits: {', '.join(valid)}")


def require_path(dataset: str, path: str | None) -> str:
    """The user's path with ``~`` expanded; DataError when it is not given or does not exist."""
    if path is None or str(path) == "":
        raise DataError(f"dataset {dataset!r} needs a path (data.path)")
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise DataError(f"dataset {dataset!r}: path {path} does not exist")
    return path


def find_dataset_dir(dataset: str, path: str, subdir: str, marker: str) -> str:
    """Accept either the dataset's own folder (``subdir``, e.g. ``cifar-10-batches-py``) or its parent.

    The folder chosen is the first of ``path/subdir`` and ``path`` that holds ``marker`` (a file or folder every copy
    of the dataset has), so that users can point at wherever they unpacked the archive.
    """
    for candidate in (os.path.join(path, subdir), path):
        if os.path.exists(os.path.join(candidate, marker)):
            return candidate
    raise DataError(f"dataset {dataset!r}: no {marker} in {path} nor in {os.path.join(path, subdir)}; "
                    f"point the path at the {subdir} folder or at its parent")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
