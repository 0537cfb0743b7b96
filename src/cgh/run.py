"""The state of a pretraining run: ``Run`` (everything ``cgh.train.prepare_run`` builds, and where the run is),
``EpochMeter`` (the epoch's running means) and ``RunResult`` (where a run ended)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgh import dist, resume
from cgh.config import Config
from cgh.diagnostics import CollapseWatch
from cgh.methods import Method
from cgh.monitor import KnnMonitor
from cgh.online_probe import ProbeMonitor
from cgh.rundir import MetricsLog, StopSignal


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
    counts differ from the loss terms'), kept in mid-epoch checkpoints as ``state()``."""

    def __init__(self, state: dict[str, Any] | None = None):
        state = state or {}
        self.sums: dict[str, float] = dict(state.get("sums", {}))
        self.count: int = state.get("count", 0)
        # a checkpoint of an older cgh has no per-key counts: every key was summed on every step
        self.counts: dict[str, int] = dict(state.get("counts") or {k: self.count for k in self.sums})

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.counts[k] for k, v in self.sums.items()}

    def state(self) -> dict[str, Any]:
        return {"sums": self.sums, "count": self.count, "counts": self.counts}


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
    probe: ProbeMonitor | None = None  # train.online_probe
    main: bool = True

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self, epoch: int, epoch_step: int, keep: bool = False, partial: dict[str, Any] | None = None) -> None:
        extra = {"online_probe": self.probe.probe.state()} if self.probe else None
        resume.save(self.ckpt_dir, self.method, self.optimizer, self.scaler, self.cfg, epoch, epoch_step, self.step,
                    self.metrics, dist.world_size(), self.main, keep=keep, partial=partial, extra=extra)
