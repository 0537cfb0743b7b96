"""Distributed helpers. Every function is a no-op (or the identity) on one process, so tests, CPU runs and
single-GPU runs take the same code path as ``torchrun`` runs.

Row convention: of a global batch of B = W * b rows, process r holds rows r, r + W, r + 2W, ... (the interleaved
split of ``torch.utils.data.DistributedSampler``; our batch sampler does the same). ``gather_rows`` returns a
global batch in that global row order, and ``SplitBatchNorm`` with W splits normalises the same interleaved rows,
which is why one process with W BN splits computes exactly what W processes compute.

Launch with ``torchrun --nproc_per_node=N -m cgh.cli pretrain ...`` (or the ``cgh`` entry point); RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT come from the environment. The backend is NCCL on GPUs and gloo on CPU. A worker dies
with its launcher (cgh.runtime.launcher); a collective waits for a peer at most ``train.dist_timeout_s`` seconds, and a
lost peer ends the run with a PeerLostError naming the ranks (``peer_lost``).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from cgh.errors import CGHError, ConfigError, PeerLostError
from cgh.runtime.launcher import die_with_launcher


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: torch.device, timeout_s: float = 600.0) -> None:
    """Under a launcher, tie this process's life to it (cgh.runtime.launcher.die_with_launcher: a launcher killed with
    SIGKILL leaves no worker behind). Create the process group when launched by torchrun with more than one process
    (docs/distributed.md#distributed-training: 'distributed' means initialised *and* world size > 1), with
    ``timeout_s`` (train.dist_timeout_s) as the longest wait for a peer in a collective. Picks NCCL for CUDA devices,
    gloo otherwise."""
    die_with_launcher()
    if is_initialized() or not launched_by_torchrun():
        return
    if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):  # before Config.validate runs
        raise ConfigError(f"train.dist_timeout_s = {timeout_s!r}: expected a positive number of seconds")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)


def peer_lost(error: BaseException, timeout_s: float) -> BaseException:
    """What to raise for ``error``, raised on this process of a distributed run: the backend's error of a collective
    whose peer died or did not answer (gloo: "Connection closed by peer", "Timed out waiting ...", NCCL's watchdog)
    becomes a PeerLostError naming this rank, the ranks that may be lost and the timeout key; anything else (the
    user's input, Ctrl-C, a bug) is returned as it is."""
    if world_size() == 1 or isinstance(error, CGHError) or not isinstance(error, RuntimeError):
        return error
    text = str(error)
    if not isinstance(error, dist.DistError) and not any(
            s in text for s in ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out",
                                "NCCL", "Gloo", "gloo")):
        return error
    me, w = rank(), world_size()
    others = [r for r in range(w) if r != me]
    lost = f"rank {others[0]}" if len(others) == 1 else f"one or more of ranks {', '.join(map(str, others))}"
    cause = " ".join(text.split())[:300]
    return PeerLostError(f"rank {me} of {w} lost its peer {lost} in a collective ({type(error).__name__}: {cause}): "
                         f"that process died, its node or launcher went down, or it did not answer within "
                         f"train.dist_timeout_s = {timeout_s:g} s; this process stops without a checkpoint. Continue "
                         f"from the last checkpoint with `--resume` once every process can start again")


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


@torch.no_grad()
def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (N, ...) from every process in rank order -> (W*N, ...). No gradient flows through."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


@torch.no_grad()
def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The global batch (W*b, ...) in global row order, from every process's interleaved rows ``x`` (b, ...)."""
    w = world_size()
    if w == 1:
        return x
    gathered = all_gather(x)  # (W*b, ...) rank-major: process r's rows are global rows r, r+W, ...
    return gathered.view(w, x.shape[0], *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])


def local_rows(x: torch.Tensor) -> torch.Tensor:
    """This process's rows r, r + W, ... of a global batch (B, ...)."""
    return x[rank() :: world_size()] if world_size() > 1 else x


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over processes (a new tensor; ``x`` is untouched)."""
    if world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y


def any_true(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (a collective: every process must call it at the same point)."""
    if world_size() == 1:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)


@torch.no_grad()
def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if world_size() > 1:
        dist.broadcast(x, src)
    return x


def broadcast_object(obj, src: int = 0):
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


@torch.no_grad()
def shuffle_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch shuffle for Shuffle-BN (docs/method.md#teacher-shuffle): this process's rows of a random permutation of the
    global batch.

    Gathers ``x`` (b, ...) from all processes into the global batch (B, ...), permutes it with one permutation drawn
    on rank 0 from the generator of ``x``'s device and broadcast, and returns this process's interleaved rows (b, ...)
    of the permuted batch, with the inverse permutation for ``unshuffle_batch``. On one process it is a plain
    ``randperm`` of the batch: the permutation rank 0 would draw, so one process with W BN splits equals W processes.
    The permutation is made on the device: one drawn on the CPU and moved with ``.to(device)`` waited for the whole
    kernel queue in the middle of every step (issue 19); the device's RNG state is in the checkpoint, so resume is
    still exact.
    """
    full = gather_rows(x)  # (B, ...)
    total = full.shape[0]
    make = torch.randperm if is_main() else torch.empty
    perm = broadcast(make(total, dtype=torch.long, device=x.device))
    return local_rows(full[perm]), torch.argsort(perm)


@torch.no_grad()
def unshuffle_batch(y: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Undo ``shuffle_batch`` on its output ``y`` (b, ...): this process's rows of the unpermuted global batch."""
    return local_rows(gather_rows(y)[inverse])


@torch.no_grad()
def all_gather_varlen(x: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors whose first dimension differs between processes (e.g. uneven evaluation shards)."""
    if world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = all_gather(n).tolist()
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    gathered = all_gather(padded)  # (W*max, ...)
    return torch.cat([gathered[i * max(sizes) : i * max(sizes) + s] for i, s in enumerate(sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this process's slice of the gradient summed over processes: every
    process's loss that used this process's rows sends its gradient back to them (a plain all_gather drops it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)  # (W*N, ...) rank-major

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // world_size()
        return grad[rank() * n : (rank() + 1) * n]


def gather_rows_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``gather_rows`` with gradient: the global batch (W*b, ...) in global row order, differentiable with respect to
    this process's rows ``x`` (b, ...) through every process's use of them (SimCLR's negatives,
    cgh.methods.simclr). Under DDP, which averages gradients over processes, a loss averaged over each process's
    own rows then has the gradient of the global mean. On one process: ``x`` itself."""
    w = world_size()
    if w == 1:
        return x
    gathered = _AllGatherWithGrad.apply(x)  # (W*b, ...) rank-major
    return gathered.view(w, x.shape[0], *x.shape[1:]).transpose(0, 1).reshape(-1, *x.shape[1:])


def global_row_index(n: int, device: torch.device) -> torch.Tensor:
    """Positions of this process's ``n`` rows in the global batch of ``gather_rows``: r, r + W, r + 2W, ..."""
    return torch.arange(n, device=device) * world_size() + rank()
