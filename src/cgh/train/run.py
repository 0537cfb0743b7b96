"""The state of a pretraining run: ``Run`` (everything ``cgh.train.prepare_run`` builds, and where the run is),
``EpochMeter`` (the epoch's running means) and ``RunResult`` (where a run ended)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgh.config import Config
from cgh.errors import CGHError
from cgh.methods import Method
from cgh.model.diagnostics import CollapseWatch, is_diagnostic
from cgh.runtime import dist
from cgh.train import resume
from cgh.train.monitor import KnnMonitor
from cgh.train.online_probe import ProbeMonitor
from cgh.train.rundir import MetricsLog, StopSignal
from cgh.train.runlock import RunLock


class NonFiniteLossError(CGHError, RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept. A CGHError, so that ``cgh
    pretrain`` reports it as one ``error:`` line naming the step and the term (it follows from the config or the
    data: a learning rate or temperature too extreme, bad pixels), and a RuntimeError for callers of the API."""


@dataclass
class RunResult:
    run_dir: Path
    epoch: int
    step: int
    status: str  # "finished", "stopped" (signal), "max_steps" or "collapsed" (train.stop_on_collapse)
    metrics: dict[str, Any] = field(default_factory=dict)
    signum: int | None = None  # the signal that stopped the run (status "stopped")


class EpochMeter:
    """The epoch's running means: per-key sums and counts (diagnostics are computed on logged steps only, so their
    counts differ from the loss terms'), kept in mid-epoch checkpoints as ``state()``.

    The sums stay where the terms are (float64 tensors on the device) and are read only by ``means()`` and
    ``state()``, at the epoch end and at checkpoints: adding a step's terms never waits for the device. Summed in
    float64, in step order, they equal the Python-float sums of earlier versions bit for bit."""

    def __init__(self, state: dict[str, Any] | None = None):
        state = state or {}
        self.sums: dict[str, Any] = dict(state.get("sums", {}))  # floats from a checkpoint, tensors once added to
        self.count: int = state.get("count", 0)
        # a checkpoint of an older cgh has no per-key counts: every key was summed on every step
        self.counts: dict[str, int] = dict(state.get("counts") or {k: self.count for k in self.sums})

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().double()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.counts[k] for k, v in self.sums.items()}

    def state(self) -> dict[str, Any]:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count, "counts": dict(self.counts)}


class FiniteWatch:
    """Non-finite losses noticed on the device and read on the host only at ``check()``: at log points, before every
    checkpoint and at the epoch end (a host read per step would stall a GPU). The error names the first bad step,
    the steps the check covered, and every term that went non-finite with its first bad value."""

    def __init__(self):
        self.first: torch.Tensor | None = None  # (,) int64: the first non-finite step (0-based), -1 for none
        self.bad: dict[str, torch.Tensor] = {}  # term -> (,) bool: non-finite at least once
        self.value: dict[str, torch.Tensor] = {}  # term -> its first non-finite value
        self.checked = 0  # steps before this one were checked finite

    def update(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        if self.first is None:
            self.first = torch.full((), -1, dtype=torch.int64, device=loss.device)
        self.first = torch.where(~torch.isfinite(loss.detach()) & (self.first < 0), step, self.first)
        for k, v in {"loss": loss, **terms}.items():
            if is_diagnostic(k) or k == "w_nce":  # the loss terms only: a few tiny device ops per step
                continue
            v = v.detach().float().sum()  # non-finite when any element is
            now = ~torch.isfinite(v)
            if k not in self.bad:
                self.bad[k], self.value[k] = now, v
            else:
                self.value[k] = torch.where(now & ~self.bad[k], v, self.value[k])
                self.bad[k] = self.bad[k] | now

    def check(self, step: int, epoch: int, ckpt: Path) -> None:
        """Raise NonFiniteLossError if any step before ``step`` (the number of steps done) was non-finite."""
        if self.first is None:
            return
        first = int(self.first)
        if first >= 0:
            bad = [k for k, v in self.bad.items() if bool(v) and k != "loss"] or ["loss"]
            values = ", ".join(f"{k} = {float(self.value[k])}" for k in bad)
            raise NonFiniteLossError(
                f"non-finite loss at step {first} (epoch {epoch}; the check covered steps {self.checked}-{step - 1}): "
                f"{values}; training stopped, the last good checkpoint ({ckpt}) is kept")
        self.checked = step


@dataclass
class Run:
    """Everything a run needs, built by ``prepare_run``; ``step`` and ``metrics`` advance as it trains."""

    cfg: Config
    run_dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    method: Method  # the method itself: its student, teacher and queues
    model: nn.Module  # what the step calls: the method, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: Any
    augment: nn.Module
    monitor: KnnMonitor | None
    log: MetricsLog
    watch: CollapseWatch
    lr: float  # the base lr after linear scaling on the global batch
    steps_per_epoch: int
    total_steps: int
    stop_step: int
    start: tuple[int, int]  # (epoch, step within it) the run starts at
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, Any] | None = None  # the epoch meter of a mid-epoch checkpoint
    stop: StopSignal | None = None
    finite: FiniteWatch = field(default_factory=FiniteWatch)
    probe: ProbeMonitor | None = None  # train.online_probe
    main: bool = True
    began: tuple[float, int] = (0.0, 0)  # (time, step) when this process's loop began: elapsed time and the ETA
    lock: RunLock | None = None  # rank 0: the run directory's lock (cgh.train.runlock), held until ``release``

    def release(self) -> None:
        """Give up the run directory (its lock): at the end of the run, cleanly or not."""
        if self.lock is not None:
            self.lock.release()

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self, epoch: int, epoch_step: int, keep: bool = False, partial: dict[str, Any] | None = None) -> None:
        """Write the checkpoint of the run as it stands, never a non-finite one (``FiniteWatch.check`` first)."""
        self.finite.check(self.step, epoch, self.ckpt_dir / "last.pt")
        extra = {"online_probe": self.probe.probe.state()} if self.probe else None
        resume.save(self.ckpt_dir, self.method, self.optimizer, self.scaler, self.cfg, epoch, epoch_step, self.step,
                    self.metrics, dist.world_size(), self.main, keep=keep, partial=partial, extra=extra)
