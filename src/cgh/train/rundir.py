"""The run directory, its metrics log, and the signals that stop a run cleanly.

    config.yaml          the resolved config
    metrics.jsonl        one JSON object per logged step ("kind": "step"), per epoch ("kind": "epoch"), at the start
                         and at the end; a resumed run first drops the records of steps after its checkpoint (it runs
                         them again), so every step is logged once
    checkpoints/         last.pt and numbered copies (cgh.train.resume)
    lock                 while the run lives: who holds the directory (cgh.train.runlock); one writer per directory
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from cgh.config import Config
from cgh.errors import ConfigError
from cgh.runtime import dist
from cgh.train.runlock import LOCK_NAME, RunLock, pid_alive
from cgh.wording import counted


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.preset or 'custom'}-{cfg.method.name}-{stamp}"


def drop_records_after(path: Path, step: int) -> None:
    """Remove from metrics.jsonl the records of steps after ``step`` (a killed run logged them after its last
    checkpoint; the resumed run does those steps again and logs them again) and any line cut short by a kill.
    Rewritten via a temporary file and a rename, so that a kill here loses nothing."""
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or (isinstance(record.get("step"), int) and record["step"] > step):
            dropped += 1
            continue
        kept.append(line + "\n")
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
        print(f"note: {path}: dropped {counted(dropped, 'record')} logged after the checkpoint's step {step} (those "
              f"steps run again)", flush=True)


class MetricsLog:
    """Appends JSON lines to metrics.jsonl on rank 0 (a no-op elsewhere). On resume, ``drop_records_after`` first
    removes what the run logged after its checkpoint, so that every step is logged once."""

    def __init__(self, path: Path, enabled: bool, sinks: list | tuple = ()):
        self.path, self.enabled, self.sinks = path, enabled, list(sinks) if enabled else []

    def write(self, record: dict[str, Any]) -> None:
        """One record to metrics.jsonl and to every sink (cgh.train.loggers: TensorBoard, W&B): the one place they are
        fed."""
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")
            for sink in self.sinks:
                sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []


# What a run writes in its directory: the only names --overwrite removes, and the only ones a start that ended before
# its first checkpoint may leave (``unfinished_start``).
RUN_FILES = ("checkpoints", "metrics.jsonl", "config.yaml", "tb", "wandb", "wandb_id")


def unfinished_start(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what a start that ended before its first checkpoint left: names of RUN_FILES,
    no checkpoint (at most the temporary file of one being written), and no start still running on this machine
    (the process of its last "start" record). Such a start has nothing to resume, and the same command starts
    afresh over it instead of being refused."""
    entries = [e for e in run_dir.iterdir() if e.name != LOCK_NAME] if run_dir.is_dir() else []
    if not entries or any(e.name not in RUN_FILES for e in entries):
        return False
    ckpts = run_dir / "checkpoints"
    if ckpts.exists() and (not ckpts.is_dir() or any(not (p.name.startswith(".") and ".tmp-" in p.name)
                                                     for p in ckpts.iterdir())):
        return False
    return not _start_running(run_dir / "metrics.jsonl")


def _start_running(metrics: Path) -> bool:
    """Whether the last "start" record of ``metrics`` is of a live process on this machine other than this one (a
    run of a cgh that wrote no lock file; a run that does is refused by its lock first)."""
    start = None
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("kind") == "start":
                start = record
    if not start or start.get("host") != socket.gethostname() or not isinstance(start.get("pid"), int):
        return False
    if start["pid"] == os.getpid():  # an earlier start in this process (the Python API), which has ended
        return False
    return pid_alive(start["pid"])


def refuse_run_dir(run_dir: Path, resuming: bool, overwrite: bool, checkpoint: Path | None = None) -> bool:
    """A non-empty run directory is refused (nothing in it is touched) unless the run resumes its own checkpoint,
    ``overwrite`` is given, or it holds only an ``unfinished_start`` (nothing to resume, nothing of the user's):
    resuming another run's checkpoint into it would replace its files. Returns whether its contents are to be
    replaced."""
    existing = run_dir.exists() and any(e.name != LOCK_NAME for e in run_dir.iterdir())
    own = checkpoint is not None and checkpoint.resolve().parent.parent == run_dir.resolve()
    if existing and not (resuming and own) and not overwrite and not (not resuming and unfinished_start(run_dir)):
        if resuming:
            raise ConfigError(f"run directory {run_dir} already exists and is not the run of the checkpoint "
                              f"{checkpoint}; pass --overwrite to replace its contents, or choose another out_dir")
        raise ConfigError(f"run directory {run_dir} already exists and is not empty; pass --resume to continue it, "
                          f"--overwrite to replace it, or choose another out_dir")
    return existing and not (resuming and own)


def prepare_run_dir(run_dir: Path, resuming: bool, overwrite: bool, checkpoint: Path | None = None,
                    world_size: int = 1) -> RunLock:
    """Create the run directory and take its lock (RunLockedError while a live run holds it: ``overwrite`` does not
    bypass it; a stale one is taken over), then, under the lock, look at its contents again (``refuse_run_dir``: a
    run that ended since the first look may have filled it) and empty it with ``overwrite`` or over an unfinished
    start (with a note). Returns the lock, which the caller releases when the run ends."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock.acquire(run_dir, world_size)
    try:
        if refuse_run_dir(run_dir, resuming, overwrite, checkpoint):
            if not overwrite:
                print(f"note: {run_dir} holds a start that ended before its first checkpoint (nothing to resume): "
                      f"starting afresh in its place", file=sys.stderr, flush=True)
            for name in RUN_FILES:
                p = run_dir / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock


class StopSignal:
    """SIGTERM, SIGINT and SIGUSR1 set a flag; the loop finishes its step, writes a checkpoint and stops cleanly.
    SIGUSR1 is what SLURM sends ahead of a job's time limit (``--signal=USR1@90``): `cgh pretrain` then exits with
    status 75, "requeue me" (cgh.train.loop.EXIT_REQUEUE)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners): no handler
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)

    def requested(self, device: torch.device) -> bool:
        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=device)
        return bool(dist.all_reduce_sum(flag).item() > 0) if dist.world_size() > 1 else self.signum is not None
