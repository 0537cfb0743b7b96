"""Live curves: the records of metrics.jsonl, also sent to TensorBoard and Weights & Biases.

Both are fed from the one place that writes metrics.jsonl (``cgh.train.rundir.MetricsLog``), on rank 0 only, so the
three always hold the same numbers: a step record's values under ``step/<key>``, an epoch record's under
``epoch/<key>``, indexed by the global step. Neither package is required: without it, a one-line note says how to enable
it.

- TensorBoard (``train.tensorboard``, on by default when the ``tensorboard`` package is installed): event files in
  ``RUN/tb/``. A resumed run opens the writer with ``purge_step`` = the checkpoint's step + 1, so the steps it runs
  again replace the ones logged after the checkpoint, as metrics.jsonl drops them.
- W&B (``train.wandb=PROJECT``): one wandb run per cgh run, its id kept in ``RUN/wandb_id`` so that a resumed run
  continues the same run (``resume="allow"``); the resolved config is its config. ``WANDB_MODE=offline`` (and every
  other wandb setting from the environment) is respected; files go to ``RUN/wandb/``. wandb ignores a step lower than
  one it has already seen, so the steps a resumed run repeats are not logged twice.
"""

from __future__ import annotations

import math
import sys
import uuid
from pathlib import Path
from typing import Any

# Keys of a record that are not curves.
_NOT_SCALARS = ("kind", "epoch", "step", "time", "resumed", "collapse")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a step or epoch record, under ``step/`` or ``epoch/`` (what both loggers write)."""
    prefix = "step" if record.get("kind") == "step" else "epoch"
    out = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[f"{prefix}/{key}"] = float(value)
    if prefix == "epoch" and isinstance(record.get("epoch"), int):
        out["epoch/epoch"] = float(record["epoch"])
    return out


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


class TensorBoardSink:
    def __init__(self, directory: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "start":
            self.writer.add_text("run", "\n".join(f"    {k}: {v}" for k, v in record.items()), 0)
            return
        if record.get("kind") not in ("step", "epoch"):
            return
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])
        if record.get("kind") == "epoch":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, project: str, run_dir: Path, config: dict[str, Any], resuming: bool):
        import wandb

        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if resuming and id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        (run_dir / "wandb").mkdir(exist_ok=True)
        self.run = wandb.init(project=project, id=run_id, resume="allow", dir=str(run_dir), config=config,
                              name=run_dir.name)

    def write(self, record: dict[str, Any]) -> None:
        if record.get("kind") in ("step", "epoch"):
            self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


def open_sinks(cfg, run_dir: Path, resume_step: int | None) -> list:
    """The loggers ``cfg.train`` asks for that can be opened (rank 0 only). ``resume_step``: the checkpoint's step
    when resuming, else None."""
    t, sinks = cfg.train, []
    if t.tensorboard:
        try:
            import tensorboard  # noqa: F401 - torch's SummaryWriter needs it
        except ImportError:
            _note("TensorBoard logging is off: the tensorboard package is not installed "
                  "(pip install 'cgh[tensorboard]'; train.tensorboard=false silences this)")
        else:
            sinks.append(TensorBoardSink(run_dir / "tb", None if resume_step is None else resume_step + 1))
    if t.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            _note(f"W&B logging to project {t.wandb!r} is off: the wandb package is not installed "
                  "(pip install 'cgh[wandb]')")
        else:
            sinks.append(WandbSink(t.wandb, run_dir, cfg.to_dict(), resume_step is not None))
    return sinks
