"""The distributed sampler of pretraining and evaluation: ``GlobalBatchSampler``, this rank's indices for each step.

Exactness ("exact resume" and "the same result on 1 or N processes"): every epoch draws ONE permutation of the dataset
from ``seed + epoch``, the same on every rank; global batch i is ``perm[i*G:(i+1)*G]`` and in pretraining rank r takes
its rows r, r + W, r + 2W, ... (the interleaved split of ``DistributedSampler``, which ``cgh.runtime.dist`` and
``SplitBatchNorm`` follow). So one process with batch G sees exactly the rows that W processes with G/W each see, in
the same global order, and resuming at step s replays the same batches. The loaders (cgh.data.loaders,
cgh.data.eval_loader) iterate it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from cgh.errors import DataError


class GlobalBatchSampler:
    """This rank's dataset indices for each step of an epoch.

    Each epoch uses one permutation ``torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))``
    (``arange(n)`` when ``shuffle`` is False), identical on every rank. Global batch i is ``perm[i*G:(i+1)*G]``, of size
    m (G except perhaps for the last). With ``interleave`` (pretraining) rank r gets its rows r, r + W, r + 2W, ...:
    the rows that split r of a ``SplitBatchNorm`` with W splits normalises on one process, and the order in which
    ``cgh.runtime.dist.gather_rows`` reassembles the global batch. Without it (evaluation, where dataset order is
    convenient) rank r gets the contiguous chunk ``[r*m//W : (r+1)*m//W]``. Either way a full batch gives G/W samples
    per rank; ``global_batch`` must be divisible by ``world_size``.

    With ``drop_last`` (pretraining) the final partial global batch is dropped. Without it (evaluation) it is kept and
    split by the same rule, so ranks get shares whose sizes differ by at most one (some may be empty when it holds
    fewer than W samples); every rank has the same number of steps and every sample is seen exactly once.

    Resuming mid-epoch: ``iter_from(step)`` yields the steps from ``step`` on, equal to the tail of a full
    iteration; ``__iter__`` starts at the attribute ``start_step`` (0 by default, reset to 0 by ``set_epoch``).
    """

    def __init__(self, n: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True, interleave: bool = True):
        if n < 0:
            raise DataError(f"dataset size must be >= 0, got {n}")
        if global_batch < 1:
            raise DataError(f"global batch size must be >= 1, got {global_batch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank must lie in 0..world_size-1, got rank {rank} of world size {world_size}")
        if global_batch % world_size:
            raise DataError(f"global batch {global_batch} is not divisible by the world size {world_size}; "
                            f"every process must get the same batch")
        self.n, self.global_batch, self.rank, self.world_size = n, global_batch, rank, world_size
        self.seed, self.shuffle, self.drop_last, self.interleave = seed, shuffle, drop_last, interleave
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start_step = 0

    def __len__(self) -> int:
        return self.n // self.global_batch if self.drop_last else math.ceil(self.n / self.global_batch)

    def order(self) -> torch.Tensor:
        """This epoch's dataset order: (n,) int64, the same on every rank."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def rank_positions(self, step: int) -> slice:
        """Positions in this epoch's order that this rank takes at ``step`` (a slice, strided when interleaving)."""
        start = step * self.global_batch
        m = min(self.global_batch, self.n - start)  # size of this global batch (smaller only for the last one)
        if self.interleave:
            return slice(start + self.rank, start + m, self.world_size)
        return slice(start + self.rank * m // self.world_size, start + (self.rank + 1) * m // self.world_size)

    def index_tensors(self, step: int = 0) -> Iterator[torch.Tensor]:
        """Like ``iter_from`` but yields (b,) int64 tensors (no Python lists, for array sources)."""
        order = self.order()
        for s in range(max(step, 0), len(self)):
            yield order[self.rank_positions(s)]

    def iter_from(self, step: int = 0) -> Iterator[list[int]]:
        for idx in self.index_tensors(step):
            yield idx.tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return self.iter_from(self.start_step)
