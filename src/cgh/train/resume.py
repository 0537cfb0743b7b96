"""Checkpoints of a run and exact resume.

A checkpoint holds model, teacher, queues and pointers, optimiser, scaler, the RNG states of every process, the
position in the epoch and the epoch's running loss sums, so a resumed run ends where an uninterrupted one ends, with
the same metrics. The run's own config comes from its checkpoint; only ``RESUME_SAFE`` keys (and ``optim.epochs``)
may be changed on resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgh import __version__
from cgh.checkpoints.files import FORMAT, VERSION, copy_atomic, rng_state, save_atomic, set_rng_state
from cgh.config import Config, config_from_dict
from cgh.data.configured import saved_folder_splits
from cgh.errors import CheckpointError, ConfigError
from cgh.methods import teacher_view
from cgh.runtime import dist
from cgh.train.runlock import refuse_if_held
from cgh.wording import counted


def save(ckpt_dir: Path, method: nn.Module, optimizer, scaler, cfg: Config, epoch: int, epoch_step: int, step: int,
          metrics: dict[str, Any], world: int, main: bool, keep: bool = False,
          partial: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Gather every process's RNG state and write last.pt (and a numbered copy) on rank 0. ``partial``: the loss
    sums and step count of the epoch so far, for a mid-epoch checkpoint; ``extra``: more entries (the online
    probe's state)."""
    states = [rng_state()]
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, states[0])
        states = gathered
    if main:
        ckpt = {
            "format": FORMAT, "version": VERSION, "cgh_version": __version__, "config": cfg.to_dict(),
            "config_sources": list(cfg.sources), "method": cfg.method.name, "arch": cfg.model.arch, "epoch": epoch,
            "epoch_step": epoch_step, "step": step, "world_size": world, "model": method.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": states, "metrics": metrics,
            "epoch_partial": partial, **(extra or {}),
        }
        if keep:  # the numbered copy first: a run killed before last.pt is renamed redoes this epoch end, and both
            numbered = ckpt_dir / f"epoch_{epoch:04d}.pt"
            save_atomic(ckpt, numbered)
            copy_atomic(numbered, ckpt_dir / "last.pt")
        else:
            save_atomic(ckpt, ckpt_dir / "last.pt")
    dist.barrier()


def load_states(method, optimizer, scaler, ckpt: dict[str, Any], path: Path, rank: int) -> None:
    try:
        method.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} does not fit the configured model: {str(e).splitlines()[0]}") from None
    states = ckpt.get("rng") or []
    if len(states) > rank:
        set_rng_state(states[rank])


def find_checkpoint(target: str | os.PathLike) -> Path:
    if not target:
        raise ConfigError("--resume needs a run directory: give it as --resume RUN_DIR or set out_dir=RUN_DIR")
    p = Path(target)
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if not p.exists():
        run = p.parent.parent
        if p.name == "last.pt" and run.is_dir():  # a start still before its first checkpoint: its lock names it
            refuse_if_held(run)
        if p.name == "last.pt" and (run / "config.yaml").is_file():  # a start that ended before its first checkpoint
            raise CheckpointError(f"nothing to resume: {p} does not exist (the start in {run} ended before its "
                                  f"first checkpoint); start it afresh with the same command without --resume, or "
                                  f"`cgh pretrain {run / 'config.yaml'}`")
        raise CheckpointError(f"nothing to resume: {p} does not exist")
    return p


# Keys that may change on resume without touching the optimisation (everything else must match).
RESUME_SAFE = ("train.device", "train.progress", "train.log_every", "train.knn_every", "train.knn_max_train",
               "train.ckpt_every", "train.ckpt_every_steps", "train.keep_every", "train.max_steps",
               "data.num_workers", "data.path", "data.corrupt", "out_dir", "train.compile", "train.stop_on_collapse",
               "train.tensorboard", "train.wandb", "train.online_probe", "train.auto_resume", "train.dist_timeout_s",
               "data.eval_train_split", "data.eval_test_split")  # the monitors' splits: measured, not trained on


def resumed_config(ckpt: dict[str, Any], given: Config, path: Path, main: bool) -> Config:
    """The checkpoint's config, taking from ``given`` only keys that do not break exactness (RESUME_SAFE) and
    ``optim.epochs`` (extending a run; the lr schedule then changes, which is announced)."""
    cfg = config_from_dict(ckpt["config"], origin=str(path))
    cfg.data.folder_splits = saved_folder_splits(ckpt["config"])
    saved, new = _flat(cfg.to_dict()), _flat(given.to_dict())
    changed = []
    for key, value in new.items():
        if value == saved.get(key) or key in ("preset", "recipe") or (key == "out_dir" and not value):
            continue
        if key == "data.folder_splits" and "folder_splits" not in ckpt["config"].get("data", {}):
            continue  # saved before the key existed: the run keeps the reading it started with
        if key == "aug.teacher_view" and teacher_view(given) == teacher_view(cfg):  # 'auto' = the method's own
            continue
        if key not in RESUME_SAFE + ("optim.epochs",):
            raise ConfigError(f"cannot change {key} when resuming ({saved.get(key)!r} in {path}, {value!r} given); "
                              f"keys that may change: {', '.join(RESUME_SAFE + ('optim.epochs',))}")
        if key == "optim.epochs" and (value < ckpt["epoch"] or (value == ckpt["epoch"] and ckpt.get("epoch_step"))):
            # the loop would run no step and print "done": say that the run is past this end, and what to do
            done = counted(ckpt["epoch"], "epoch") + (" and part of the next" if ckpt.get("epoch_step") else "")
            raise ConfigError(f"cannot resume with optim.epochs={value}: {path} has already run {done} "
                              f"({counted(ckpt['step'], 'step')}), past that end; to train further give optim.epochs "
                              f"above {ckpt['epoch']} (the run's own is {saved[key]}), or evaluate the checkpoint as "
                              f"it is (cgh knn {path})")
        _set(cfg, key, value)
        changed.append(f"{key}={value}")
        if main and key == "optim.epochs":
            print(f"note: optim.epochs changed on resume ({saved[key]} -> {value}): the lr schedule changes",
                  flush=True)
    # the header of the run's config.yaml: where the first start's values came from, then this resume
    cfg.sources = (*ckpt.get("config_sources", ()), f"resumed from  {path}" + (f": {' '.join(changed)}" if changed
                                                                                 else ""))
    return cfg


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _set(cfg: Config, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)
