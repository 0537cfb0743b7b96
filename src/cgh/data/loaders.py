"""The pretraining loader (the sampler is cgh.data.sampler's, the evaluation loader cgh.data.eval_loader's).

Exactness ("exact resume" and "the same result on 1 or N processes"):
- the batches are ``GlobalBatchSampler``'s (cgh.data.sampler): one permutation per epoch, the same on every rank, so
  one process with batch G sees exactly the rows that W processes with G/W each see and resuming at step s replays
  the same batches;
- file-source crops draw from a per-sample RNG seeded by (seed, epoch, index): they do not depend on the worker that
  decodes them, on the number of workers, nor on where a run was resumed.

Array sources (CIFAR, STL-10, Tiny-ImageNet, npz, synthetic) have no per-sample Python work: the step's index tensor
selects rows of the uint8 array, and the batch goes to the device as one tensor of full images, whose crops and
colour augmentation are done on the device (``cgh.augment``). File sources (ImageNet, large folders) are decoded once
per sample in DataLoader workers, which cut one uint8 RandomResizedCrop per :class:`ViewSpec` (torchvision's
parameter algorithm re-implemented on Pillow); colour and flip augmentation are still done on the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from cgh.config.views import ViewSpec
from cgh.data.base import FileSource, Source
from cgh.data.decode import draft_scale, open_image, random_resized_crop_box, resized_crop, resized_crop_scaled
from cgh.data.sampler import GlobalBatchSampler
from cgh.errors import DataError
from cgh.runtime.device import loader_workers

CORRUPT_MODES = ("skip", "error")


class Batch(NamedTuple):
    """One training step's data on the target device.

    views: uint8 (B, 3, H, W) tensors: ONE tensor of full images for an array source (cropped on the device later),
        or one tensor per ViewSpec for a file source (cropped in the loader workers).
    labels: (B,) int64, -1 for unlabelled images.
    index: (B,) int64 dataset indices (of the replacement, where a corrupt file was replaced).
    bad_files: paths of the corrupt files of this batch that were replaced by another sample of the batch.
    cropped: True when ``views`` are already cropped, one tensor per ViewSpec (file sources). ``ViewAugment`` takes
        the whole batch and reads it: with a single ViewSpec, one cropped tensor and one tensor of full images look
        alike, and only the loader knows which it made.
    """

    views: list[torch.Tensor]
    labels: torch.Tensor
    index: torch.Tensor
    bad_files: list[str]
    cropped: bool = False


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        if not x.is_pinned():
            x = x.pin_memory()  # page-locked, so that the copy below is asynchronous
        return x.to(device, non_blocking=True)
    return x.to(device)


# ----------------------------------------------------------------------------------------------------------------------
# Worker side of file sources
# ----------------------------------------------------------------------------------------------------------------------


class _FileDataset(Dataset):
    """Shared by the pretraining and evaluation datasets: the paths as one numpy bytes array (not a list of str:
    forked workers would touch every str's refcount and copy the list's memory, the well-known DataLoader "leak")."""

    def __init__(self, source: FileSource):
        self.root = source.root
        self.paths = np.array([p.encode("utf-8") for p in source.paths], dtype=np.bytes_)
        self.labels = source.labels.numpy().copy()

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.paths[i].decode("utf-8"))


class _CropDataset(_FileDataset):
    """Item (epoch, index) -> one (3, size, size) uint8 crop per ViewSpec, or the path of an undecodable file.

    The crop boxes are drawn from the image's header size before any pixel is decoded, so that a JPEG whose every
    box spans at least twice its output size is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) and its
    crops resampled from there; other images are decoded fully and cropped with torch's uint8
    kernel. The boxes, and so their distribution, do not depend on the path taken (benchmarks/folder_loader.md).
    ``jpeg_draft=False`` always decodes fully.
    """

    def __init__(self, source: FileSource, specs: list[ViewSpec], seed: int, corrupt: str, jpeg_draft: bool = True):
        super().__init__(source)
        self.specs, self.seed, self.corrupt, self.draft = list(specs), seed, corrupt, jpeg_draft
        self.sizes = [spec.size for spec in self.specs]

    def boxes(self, epoch: int, i: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The RandomResizedCrop boxes (top, left, h, w) of sample ``i`` in ``epoch``, one per ViewSpec, from a
        per-sample RNG seeded by (seed, epoch, index): the same whatever worker decodes it and wherever a run
        resumed."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFFFFFF, epoch, i])
        return [random_resized_crop_box(width, height, spec.scale, spec.ratio, rng) for spec in self.specs]

    def __getitem__(self, item: tuple[int, int]) -> tuple[Any, ...]:
        epoch, i = item
        path = self.path(i)
        try:
            encoded = open_image(path)
            boxes = self.boxes(epoch, i, *encoded.size)
            hwc, scale = encoded.decode(draft_scale(boxes, self.sizes) if self.draft else 1)  # (h, w, 3) uint8
        except DataError:
            if self.corrupt == "error":
                raise
            return (None, path)
        if scale > 1:
            img = Image.fromarray(hwc)
            crops = [resized_crop_scaled(img, box, size, scale) for box, size in zip(boxes, self.sizes, strict=True)]
        else:
            full = torch.from_numpy(hwc)
            crops = [resized_crop(full, box, size) for box, size in zip(boxes, self.sizes, strict=True)]
        return (crops, int(self.labels[i]), i)  # each crop (3, size, size) uint8


class _CollateCrops:
    """Stack a batch of crops, replacing each corrupt sample by the next valid one of the same batch (cyclically),
    so that the batch size stays fixed (the queue and the BN splits depend on it)."""

    def __init__(self, specs: list[ViewSpec]):
        self.sizes = [s.size for s in specs]

    def __call__(self, samples: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        valid = [k for k, s in enumerate(samples) if s[0] is not None]
        bad = [s[1] for s in samples if s[0] is None]
        if samples and not valid:
            raise DataError(f"every image of a batch of {len(samples)} failed to decode, e.g. {', '.join(bad[:3])}; "
                            f"check the dataset files")
        filled = []
        for k, s in enumerate(samples):
            if s[0] is None:
                s = samples[next((v for v in valid if v > k), valid[0])]
            filled.append(s)
        views = [_stack([s[0][v] for s in filled], n) for v, n in enumerate(self.sizes)]  # each (B, 3, n, n)
        labels = torch.tensor([s[1] for s in filled], dtype=torch.int64)  # (B,)
        index = torch.tensor([s[2] for s in filled], dtype=torch.int64)  # (B,)
        return views, labels, index, bad


def _stack(crops: list[torch.Tensor], size: int) -> torch.Tensor:
    """Stack (3, size, size) uint8 crops into (B, 3, size, size). torch's default collate does it, which in a loader
    worker writes the batch straight into shared memory and so saves the copy the worker queue would otherwise make."""
    if not crops:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return default_collate(crops)


class _EpochTaggedSampler:
    """The GlobalBatchSampler's batches as (epoch, index) pairs, so that workers (which hold their own copy of the
    dataset, kept alive across epochs with persistent workers) know the epoch of each sample."""

    def __init__(self, sampler: GlobalBatchSampler):
        self.sampler = sampler
        self.start = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.sampler.iter_from(self.start):
            yield [(epoch, i) for i in batch]


# ----------------------------------------------------------------------------------------------------------------------
# Pretraining loader
# ----------------------------------------------------------------------------------------------------------------------


class PretrainLoader:
    """Batches of one epoch for pretraining; see :func:`build_pretrain_loader`.

    ``set_epoch(e)`` before each epoch (it also empties ``bad_files``, the per-epoch list of corrupt files replaced
    so far); ``iter_from(step)`` resumes mid-epoch exactly; ``len()`` is the number of steps per epoch.
    """

    def __init__(self, source: Source, specs: list[ViewSpec], sampler: GlobalBatchSampler, *, num_workers: int,
                 device: torch.device, corrupt: str, prefetch_factor: int = 2, jpeg_draft: bool = True):
        self.source, self.specs, self.sampler, self.device = source, list(specs), sampler, device
        self.bad_files: list[str] = []
        self._loader: DataLoader | None = None
        if isinstance(source, FileSource):
            workers = loader_workers(num_workers)  # at most one per usable CPU (cgh.runtime.device)
            self._tagged = _EpochTaggedSampler(sampler)
            self._loader = DataLoader(
                _CropDataset(source, specs, sampler.seed, corrupt, jpeg_draft), batch_sampler=self._tagged,
                num_workers=workers, collate_fn=_CollateCrops(specs), pin_memory=device.type == "cuda",
                persistent_workers=workers > 0, prefetch_factor=prefetch_factor if workers > 0 else None,
                # A DataLoader iterator draws its workers' base seed from torch's *global* generator unless given
                # its own; that would shift the on-device augmentation's random stream by where a run resumed.
                generator=torch.Generator(),
            )

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.bad_files = []

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, step: int = 0) -> Iterator[Batch]:
        if self._loader is None:
            yield from self._iter_array(step)
            return
        self._tagged.start = step
        for views, labels, index, bad in self._loader:
            self.bad_files += bad
            yield Batch([_to_device(v, self.device) for v in views], _to_device(labels, self.device),
                        _to_device(index, self.device), bad, cropped=True)

    def _iter_array(self, step: int) -> Iterator[Batch]:
        images, labels = self.source.images, self.source.labels
        pin = self.device.type == "cuda"
        for idx in self.sampler.index_tensors(step):  # (B,) int64
            # (B, 3, H, W) uint8 full images (the crops are done on the device), gathered straight into page-locked
            # memory on CUDA so that the copy to the device is asynchronous without a second host copy.
            x = torch.empty((len(idx), *images.shape[1:]), dtype=torch.uint8, pin_memory=pin)
            torch.index_select(images, 0, idx, out=x)
            yield Batch([_to_device(x, self.device)], _to_device(labels[idx], self.device),
                        _to_device(idx, self.device), [])


def build_pretrain_loader(
    source: Source, specs: list[ViewSpec], global_batch: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
    num_workers: int = 0, device: str | torch.device = "cpu", corrupt: str = "skip", prefetch_factor: int = 2,
    jpeg_draft: bool = True,
) -> PretrainLoader:
    """The pretraining loader: shuffled global batches of ``global_batch`` (``global_batch / world_size`` per rank),
    the final partial batch dropped (see :class:`GlobalBatchSampler`).

    Array sources yield ``Batch.views == [full images]``; file sources yield one crop tensor per ViewSpec, decoded in
    ``num_workers`` processes (persistent across epochs). ``corrupt="skip"`` replaces an undecodable file by another
    sample of its batch and records its path (``Batch.bad_files`` and ``loader.bad_files``); ``corrupt="error"``
    raises a DataError naming it. A batch whose every file is corrupt is always an error. ``prefetch_factor``: batches
    each worker prepares ahead; ``jpeg_draft``: decode JPEGs at a reduced scale where every crop allows it
    (:class:`_CropDataset`).
    """
    if corrupt not in CORRUPT_MODES:
        raise DataError(f"corrupt must be one of {', '.join(CORRUPT_MODES)}, got {corrupt!r}")
    specs = list(specs)
    if not specs or not all(isinstance(s, ViewSpec) for s in specs):
        raise DataError(f"specs must be a non-empty list of ViewSpec, got {specs!r}")
    if num_workers < 0:
        raise DataError(f"num_workers must be >= 0, got {num_workers}")
    if prefetch_factor < 1:
        raise DataError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
    sampler = GlobalBatchSampler(len(source), global_batch, rank, world_size, seed, shuffle=True, drop_last=True)
    if len(sampler) == 0:
        raise DataError(f"{source.name} has {len(source)} images, fewer than one global batch of {global_batch}; "
                        f"lower the batch size")
    return PretrainLoader(source, specs, sampler, num_workers=num_workers, device=torch.device(device),
                          corrupt=corrupt, prefetch_factor=prefetch_factor, jpeg_draft=jpeg_draft)
