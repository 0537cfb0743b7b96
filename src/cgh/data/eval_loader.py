"""The evaluation loader: every sample of a split once, in dataset order, sharded over processes; file sources are
resized and centre-cropped in worker processes (the rule of cgh.data.decode), array sources sliced as they are."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from cgh.data.base import FileSource, Source
from cgh.data.decode import eval_resize, load_image, resize_center_crop, to_uint8_chw
from cgh.data.loaders import CORRUPT_MODES, _FileDataset, _to_device
from cgh.data.sampler import GlobalBatchSampler
from cgh.errors import DataError
from cgh.runtime.device import loader_workers


class _EvalDataset(_FileDataset):
    """Index -> (3, S, S) uint8: Resize(eval_resize(S)), then CenterCrop(S) (docs/method.md#test-transforms; the rule of
    cgh.data.decode); an undecodable file raises (corrupt 'error') or comes back as ``None`` and its path ('skip')."""

    def __init__(self, source: FileSource, image_size: int, corrupt: str):
        super().__init__(source)
        self.size = image_size
        self.short = eval_resize(image_size)
        self.corrupt = corrupt

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int | str, int]:
        try:
            img = resize_center_crop(load_image(self.path(i)), self.short, self.size)  # DataError names the file
        except DataError:
            if self.corrupt == "error":
                raise
            return None, self.path(i), i
        return to_uint8_chw(img), int(self.labels[i]), i


class _CollateEval:
    """Stack a batch, leaving out the undecodable samples (an evaluation cannot replace an image by another, as
    pretraining does); returns (images, labels, [(index, path) of each one left out])."""

    def __init__(self, image_size: int):
        self.size = image_size

    def __call__(self, samples: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
        skipped = [(i, path) for image, path, i in samples if image is None]
        samples = [s for s in samples if s[0] is not None]
        if not samples:  # this rank's share of a final batch smaller than the world size, or every file corrupt
            return (torch.empty((0, 3, self.size, self.size), dtype=torch.uint8), torch.empty(0, dtype=torch.int64),
                    skipped)
        return (torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples], dtype=torch.int64),
                skipped)


class EvalLoader:
    """(images uint8 (B, 3, H, W), labels (B,) int64) on the device, in dataset order, every sample once over the
    ranks; see :func:`build_eval_loader`. ``skipped``: (index, path) of the files the last pass left out (corrupt
    'skip'), this process's share."""

    def __init__(self, source: Source, image_size: int, sampler: GlobalBatchSampler, *, num_workers: int,
                 device: torch.device, corrupt: str = "error"):
        self.source, self.sampler, self.device = source, sampler, device
        self.skipped: list[tuple[int, str]] = []
        self._loader: DataLoader | None = None
        if isinstance(source, FileSource):
            self._loader = DataLoader(
                _EvalDataset(source, image_size, corrupt), batch_sampler=sampler,
                num_workers=loader_workers(num_workers),
                collate_fn=_CollateEval(image_size), pin_memory=device.type == "cuda",
                generator=torch.Generator(),  # leave the global generator alone (see the pretraining loader)
            )

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.skipped = []
        if self._loader is not None:
            for images, labels, skipped in self._loader:
                self.skipped += skipped
                yield _to_device(images, self.device), _to_device(labels, self.device)
            return
        for step in range(len(self.sampler)):
            rows = self.sampler.rank_positions(step)  # no shuffle, no interleave: a contiguous slice of the dataset
            yield (_to_device(self.source.images[rows], self.device),  # (B, 3, H, W) at native size
                   _to_device(self.source.labels[rows], self.device))


def build_eval_loader(
    source: Source, image_size: int, batch_size: int, *, num_workers: int = 0, device: str | torch.device = "cpu",
    rank: int = 0, world_size: int = 1, corrupt: str = "error",
) -> EvalLoader:
    """Evaluation batches in dataset order, each sample exactly once.

    ``batch_size`` is per process: with W processes, step i covers samples [i*B*W, (i+1)*B*W) and rank r takes the
    r-th contiguous chunk of it (the final, smaller global batch is split as evenly as possible, possibly leaving a
    rank an empty batch, so that all ranks run the same number of steps). Array sources are sliced at their native
    size (resizing, if any, is done on the device); file sources are resized and centre-cropped to ``image_size`` in
    ``num_workers`` workers (docs/method.md#test-transforms). An undecodable file is a DataError naming it
    (``corrupt="error"``), or with ``corrupt="skip"`` left out of its batch and recorded in ``loader.skipped`` for
    the caller to report: an evaluation must not change its test set silently.
    """
    if corrupt not in CORRUPT_MODES:
        raise DataError(f"corrupt must be one of {', '.join(CORRUPT_MODES)}, got {corrupt!r}")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if num_workers < 0:
        raise DataError(f"num_workers must be >= 0, got {num_workers}")
    sampler = GlobalBatchSampler(len(source), batch_size * world_size, rank, world_size, shuffle=False,
                                 drop_last=False, interleave=False)
    return EvalLoader(source, image_size, sampler, num_workers=num_workers, device=torch.device(device),
                      corrupt=corrupt)
