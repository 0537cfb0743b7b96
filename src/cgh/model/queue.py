"""A FIFO queue of past teacher features: one layout (K, D), one verb (``push``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgh.runtime import dist


class FeatureQueue(nn.Module):
    """K unit vectors of dimension D (docs/method.md#queues), held in persistent buffers so checkpoints save and restore
    them.

    Slots start as N(0, 1) draws normalised to unit length. ``push(keys)`` gathers the keys of every process (in
    global row order, so every process holds the queue a single process would hold), writes them at
    ``[ptr, ptr + B)`` and advances ``ptr`` by B modulo K. K must be a multiple of the global batch B, so a push
    never straddles the end (the authors assert the same). Two queues pushed with keys of the same images in the
    same order stay in lockstep: slot j of both refers to the same past image, which makes the global and
    hypercolumn relation distributions comparable (docs/method.md#queues). Reading ``features`` gives a detached copy;
    push only after the logits of the step have been computed.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))  # (K, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def features(self) -> torch.Tensor:
        """A detached copy of the queue (K, D).

        A copy, not a view: autograd saves the queue for the backward pass of ``q @ queue.T``, and the in-place
        ``push`` later in the same step would otherwise invalidate it (MoCo clones for the same reason).
        """
        return self.queue.detach().clone()

    def __len__(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Enqueue this process's keys (B_local, D), after gathering every process's keys."""
        if keys.ndim != 2 or keys.shape[1] != self.queue.shape[1]:
            raise ValueError(f"push expects keys of shape (B, {self.queue.shape[1]}), got {tuple(keys.shape)}")
        keys = dist.gather_rows(keys.detach().to(self.queue.dtype))  # (B, D), global batch in global row order
        size, b = self.queue.shape[0], keys.shape[0]
        if size % b:
            raise ValueError(f"queue size {size} is not a multiple of the global batch {b}")
        # rows [ptr, ptr + b): no wrap inside a push (K % B == 0), and the pointer never leaves the device (reading
        # it on the host would stall a GPU's queue of kernels every step)
        rows = self.ptr + torch.arange(b, device=self.ptr.device)
        self.queue.index_copy_(0, rows, keys)
        self.ptr.add_(b).remainder_(size)

    def extra_repr(self) -> str:
        return f"size={self.queue.shape[0]}, dim={self.queue.shape[1]}"
