"""Where and in what precision a job runs: the device rule, the autocast dtype rule, the one autocast helper, and
how many CPUs its loader workers may use."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from cgh.errors import ConfigError
from cgh.runtime import dist

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``train.device`` / ``--device``: 'auto' (cuda when available), 'cpu', 'cuda' (this process's local rank) or
    'cuda:N'. A CUDA device that is not there is a ConfigError, not a traceback."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device = {name!r} but no CUDA device is available; use train.device=cpu")
        if name == "cuda":
            return torch.device("cuda", dist.local_rank())
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device = {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """'auto' (bf16 on a GPU that supports it, else float32), 'none', 'bf16' or 'fp16' -> a dtype or None."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return {"none": None, **AMP_DTYPES}[amp]


def autocast(device: torch.device | str, amp: torch.dtype | str | None):
    """``torch.autocast`` for ``amp`` (a dtype, 'bf16' / 'fp16'), or a no-op context for None / 'none'."""
    if amp in (None, "none"):
        return nullcontext()
    dtype = AMP_DTYPES.get(amp, amp) if isinstance(amp, str) else amp
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"amp must be None, 'none', 'bf16', 'fp16' or a torch.dtype, got {amp!r}")
    return torch.autocast(torch.device(device).type, dtype=dtype)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (a container's, a SLURM job's or
    taskset's share), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """``requested`` loader worker processes, at most one per usable CPU: decoding is CPU-bound, so more workers only
    queue for a core (torch's DataLoader warns about each loader that starts them), and a checkpoint's
    ``data.num_workers`` was chosen on the machine it was trained on."""
    return max(0, min(requested, usable_cpus()))
