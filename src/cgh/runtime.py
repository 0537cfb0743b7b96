"""Where and in what precision a job runs: the device rule, the autocast dtype rule, and the one autocast helper."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from cgh import dist
from cgh.errors import ConfigError

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
