"""The pretraining loop: one method-agnostic function that reads top to bottom (``pretrain``).

Run directory layout:
    config.yaml          the resolved config
    metrics.jsonl        one JSON object per logged step ("kind": "step") and per epoch ("kind": "epoch"); a
                         resumed run first drops the records of steps after its checkpoint (it runs them again), so
                         every step is logged once
    checkpoints/last.pt  written atomically every train.ckpt_every epochs (and train.ckpt_every_steps steps), at
                         the end, when stopped by SIGTERM/SIGINT (exit status 128 + the signal) and when stopped by
                         a collapse (train.stop_on_collapse, exit status 3); epoch_NNNN.pt copies every
                         train.keep_every, also atomic

Logged steps also carry the collapse diagnostics of ``cgh.diagnostics`` (the methods compute them only when asked,
on those steps); a ``CollapseWatch`` reads them and warns once. Its streak is not saved in checkpoints: after a
resume it counts again from zero, which can only delay a warning.

Schedules are indexed by the global step. Resume restores model, teacher, queues and pointers, optimizer, scaler,
RNG states of every process, the position in the epoch and the epoch's running loss sums, so a resumed run ends
where an uninterrupted one ends, with the same metrics (tests/test_reliability_interrupt.py kills and resumes a run
at every kind of moment).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgh import __version__, dist
from cgh.augment import EvalTransform, build_augment, dataset_normalization, pretrain_views
from cgh.checkpoint import (
    FORMAT,
    VERSION,
    check_compatible,
    copy_atomic,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_atomic,
    set_rng_state,
)
from cgh.config import Config, config_from_dict, resolve_bn_mode, to_yaml
from cgh.data import build_eval_loader, build_pretrain_loader, open_split, source_options  # noqa: F401
from cgh.diagnostics import CollapseWatch, is_diagnostic
from cgh.errors import CGHError, CheckpointError, ConfigError
from cgh.evaluate.knn import knn_accuracy
from cgh.methods import build_method
from cgh.runtime import resolve_amp, resolve_device
from cgh.schedule import NORM_TYPES, lr_at, momentum_at, param_groups  # noqa: F401

EXIT_COLLAPSED = 3  # `cgh pretrain`'s exit status when train.stop_on_collapse stopped the run


class NonFiniteLossError(CGHError, RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept. A CGHError, so that ``cgh
    pretrain`` reports it as one ``error:`` line naming the step and the term (it follows from the config or the
    data: a learning rate or temperature too extreme, bad pixels), and still a RuntimeError as it always was."""


# ----------------------------------------------------------------------------------------------------------------
# Schedules and optimiser groups
# ----------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------
# Small pieces of the run: device, precision, run directory, logging, signals
# ----------------------------------------------------------------------------------------------------------------


def _drop_records_after(path: Path, step: int) -> None:
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
        print(f"note: {path}: dropped {dropped} record(s) logged after the checkpoint's step {step} (those steps "
              f"run again)", flush=True)


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.preset or 'custom'}-{cfg.method.name}-{stamp}"


class MetricsLog:
    """Appends JSON lines to metrics.jsonl on rank 0 (a no-op elsewhere). On resume, ``_drop_records_after`` first
    removes what the run logged after its checkpoint, so that every step is logged once."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")


class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, writes a checkpoint and stops cleanly."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
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


@dataclass
class RunResult:
    run_dir: Path
    epoch: int
    step: int
    status: str  # "finished", "stopped" (signal), "max_steps" or "collapsed" (train.stop_on_collapse)
    metrics: dict[str, Any] = field(default_factory=dict)
    signum: int | None = None  # the signal that stopped the run (status "stopped")


# ----------------------------------------------------------------------------------------------------------------
# kNN monitor
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def extract(encoder: nn.Module, loader, transform: nn.Module, features: str, device: torch.device,
            amp_dtype: torch.dtype | None, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features of a labelled split, from the encoder in eval mode (gathered over processes)."""
    was_training = encoder.training
    encoder.eval()
    feats, labels, seen = [], [], 0
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    for images, y in loader:
        x = transform(images.to(device))
        with autocast:
            out = encoder(x, hyper=False)
        f = out.pooled if features == "backbone" else out.z
        feats.append(nn.functional.normalize(f.float(), dim=1))
        labels.append(y.to(device))
        seen += len(y)
        if limit and seen >= limit:
            break
    encoder.train(was_training)
    f, y = torch.cat(feats), torch.cat(labels)
    return dist.all_gather_varlen(f), dist.all_gather_varlen(y)


class KnnMonitor:
    """Weighted kNN accuracy of the student on a labelled split (SPEC 5.1, with the fixes of SPEC 7.4: backbone
    features by default, no double counting under DDP, STL-10's labelled train split as the bank)."""

    def __init__(self, cfg: Config, device: torch.device, amp_dtype, mean, std):
        d = cfg.data
        self.train_src = open_split(cfg, d.eval_train_split)
        self.test_src = open_split(cfg, d.eval_test_split)
        for src in (self.train_src, self.test_src):
            if len(src) == 0 or bool((src.labels < 0).all()):
                raise ConfigError(f"kNN monitor: split {src.name!r} has no labels; set data.eval_train_split / "
                                  f"data.eval_test_split to labelled splits or train.knn_every=0")
        self.num_classes = int(max(self.train_src.labels.max(), self.test_src.labels.max())) + 1
        size = d.image_size
        kw = dict(num_workers=d.num_workers, device=device, rank=dist.rank(), world_size=dist.world_size())
        self.train_loader = build_eval_loader(self.train_src, size, 256, **kw)
        self.test_loader = build_eval_loader(self.test_src, size, 256, **kw)
        self.transform = EvalTransform(size, mean, std).to(device)
        self.cfg, self.device, self.amp_dtype = cfg, device, amp_dtype

    def __call__(self, encoder: nn.Module) -> float:
        t = self.cfg.train
        limit = math.ceil(t.knn_max_train / dist.world_size()) if t.knn_max_train else 0
        bank, bank_y = extract(encoder, self.train_loader, self.transform, t.knn_features, self.device,
                               self.amp_dtype, limit)
        test, test_y = extract(encoder, self.test_loader, self.transform, t.knn_features, self.device, self.amp_dtype)
        return knn_accuracy(bank, bank_y, test, test_y, self.num_classes, t.knn_k, t.knn_t)


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------


def pretrain(cfg: Config, resume: str | os.PathLike | bool | None = None, overwrite: bool = False) -> RunResult:
    """Pretrain ``cfg.method.name`` as configured. ``resume``: True (the run in cfg.out_dir), or a run directory or
    checkpoint path. Returns where the run ended; raises ConfigError / DataError / CheckpointError on bad input."""
    # ---- processes and device ---------------------------------------------------------------------------------
    device = resolve_device(cfg.train.device)
    dist.init_from_env(device)
    world, rank = dist.world_size(), dist.rank()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    main = rank == 0

    # ---- resume: the run's own config comes from its checkpoint ----------------------------------------------
    ckpt, ckpt_path = None, None
    if resume:
        ckpt_path = find_checkpoint(resume if resume is not True else cfg.out_dir)
        ckpt = load_checkpoint(ckpt_path)
        cfg = _resumed_config(ckpt, cfg, ckpt_path, main)
        check_compatible(ckpt, cfg.method.name, cfg.model.arch, ckpt_path)
    cfg.validate(world)
    bn_mode = resolve_bn_mode(cfg.model.bn_mode, world)
    amp_dtype = resolve_amp(cfg.train.amp, device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # ---- run directory: a wrong one is refused now, before any work; it is made once the data has opened -------
    run_dir = Path(cfg.out_dir) if cfg.out_dir else default_run_dir(cfg)
    if ckpt_path is not None and not cfg.out_dir:
        run_dir = ckpt_path.parent.parent
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    cfg.out_dir = str(run_dir)
    if main:
        _refuse_run_dir(run_dir, resuming=ckpt is not None, overwrite=overwrite, checkpoint=ckpt_path)

    # ---- data: a source, a sampler-backed loader, and the on-device augmentation -----------------------------
    # (opened before the run directory is made, so that a wrong data path leaves nothing behind to --overwrite)
    d, o, t, m = cfg.data, cfg.optim, cfg.train, cfg.method
    source = open_split(cfg, d.split)
    specs = pretrain_views(d.image_size, teacher=cfg.aug.teacher_view, weak_scale=tuple(cfg.aug.weak_scale),
                           strong_scale=tuple(cfg.aug.strong_scale), num_local=m.num_local)
    loader = build_pretrain_loader(source, specs, o.batch_size, seed=cfg.seed, rank=rank, world_size=world,
                                   num_workers=d.num_workers, device=device, corrupt=d.corrupt)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(f"data: {source.name} has {len(source)} images, fewer than one global batch "
                          f"(optim.batch_size = {o.batch_size})")
    mean, std = dataset_normalization(cfg.data)
    augment = build_augment(cfg, specs).to(device)
    total_steps = o.epochs * steps_per_epoch
    stop_step = min(total_steps, t.max_steps) if t.max_steps else total_steps
    monitor = KnnMonitor(cfg, device, amp_dtype, mean, std) if t.knn_every else None

    # ---- run directory ------------------------------------------------------------------------------------------
    if main:
        _prepare_run_dir(run_dir, resuming=ckpt is not None, overwrite=overwrite, checkpoint=ckpt_path)
        (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        if ckpt is not None:
            _drop_records_after(run_dir / "metrics.jsonl", ckpt["step"])
    dist.barrier()
    log = MetricsLog(run_dir / "metrics.jsonl", main)
    ckpt_dir = run_dir / "checkpoints"

    # ---- model, optimiser, precision ---------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    method = build_method(cfg, world, steps_per_epoch).to(device)
    if bn_mode == "sync" and world > 1:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    channels_last = t.channels_last and device.type == "cuda"
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    lr = o.lr * o.batch_size / o.lr_ref_batch  # linear scaling on the *global* batch (SPEC 4.1, 7.16)
    optimizer = torch.optim.SGD(param_groups(method.student, o.weight_decay, o.wd_exclude_norm_bias), lr=lr,
                                momentum=o.momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start_epoch, start_in_epoch, step = 0, 0, 0
    metrics: dict[str, Any] = {}
    # the running epoch means, kept in mid-epoch checkpoints: per-key sums and counts (diagnostics are computed on
    # logged steps only, so their counts differ from the loss terms')
    partial: dict[str, Any] = {"sums": {}, "count": 0, "counts": {}}
    if ckpt is not None:
        _load_states(method, optimizer, scaler, ckpt, ckpt_path, rank)
        start_epoch, start_in_epoch, step = ckpt["epoch"], ckpt.get("epoch_step", 0), ckpt["step"]
        metrics = dict(ckpt.get("metrics", {}))
        partial = ckpt.get("epoch_partial") or partial
        del ckpt
    else:  # per-process streams for the augmentations; the model was initialised identically above
        torch.manual_seed(cfg.seed + 1000 * rank + 1)
        random.seed(cfg.seed + rank)
    if main:
        remove_stale_temporaries(ckpt_dir)

    model: nn.Module = method
    if world > 1:
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        # Buffers are not broadcast: the queues are identical on every rank by construction (gathered pushes), and
        # re-sending a 131072 x 512 queue every step would cost more than the step's gradients.
        model = nn.parallel.DistributedDataParallel(method, broadcast_buffers=False,
                                                    find_unused_parameters=method.needs_find_unused, **ddp_kw)
    if t.compile:
        method.student.compile()
        method.teacher.compile()

    # ---- banner and start-up record ------------------------------------------------------------------------------
    banner = {
        "cgh": __version__, "torch": torch.__version__, "method": m.name, "arch": cfg.model.arch,
        "stem": cfg.model.stem, "width": cfg.model.width, "device": str(device), "world_size": world,
        "batch_per_process": o.batch_size // world, "global_batch": o.batch_size, "lr": lr,
        "lr_rule": f"{o.lr} x {o.batch_size}/{o.lr_ref_batch}", "bn_mode": bn_mode,
        "bn_splits": cfg.model.bn_splits if bn_mode == "split" else 1, "queue_size": m.queue_size,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "none", "steps_per_epoch": steps_per_epoch,
        "epochs": o.epochs, "dataset": f"{source.name} ({len(source)} images)", "views": [s.size for s in specs],
        "temperatures": _temperatures(cfg), "run_dir": str(run_dir),
    }
    if main:
        _print_banner(banner, resumed_from=ckpt_path, start=(start_epoch, start_in_epoch, step))
        log.write({"kind": "start", "time": time.time(), "resumed": ckpt_path is not None, **banner})
    if monitor and step == 0:
        acc = monitor(method.student)  # epoch 0: the randomly initialised encoder, the curve's first point
        metrics["knn_top1"] = acc
        log.write({"kind": "epoch", "epoch": 0, "step": 0, "knn_top1": acc})
        if main:
            print(f"epoch 0: kNN top-1 {acc:.2f}% (random init)", flush=True)

    # ---- epochs --------------------------------------------------------------------------------------------------
    status = "finished"
    watch = CollapseWatch(m.queue_size, method.relation_terms, stops=t.stop_on_collapse)
    model.train()
    with StopSignal() as stop:
        for epoch in range(start_epoch, o.epochs):
            if step >= stop_step:
                break
            loader.set_epoch(epoch)
            first = start_in_epoch if epoch == start_epoch else 0
            # loss sums of the epoch so far (those of the steps before a mid-epoch resume come from the checkpoint)
            sums: dict[str, float] = dict(partial["sums"]) if first else {}
            count = partial["count"] if first else 0
            # a checkpoint of an older cgh has no per-key counts: every key was summed on every step
            counts: dict[str, int] = dict(partial.get("counts") or {k: count for k in sums}) if first else {}
            done, epoch_start = 0, time.time()
            bar = _progress(t.progress and main, steps_per_epoch, first, epoch, o.epochs)
            data_start = time.time()
            for i, batch in enumerate(loader.iter_from(first), start=first):
                data_time = time.time() - data_start
                # ---- schedules, by global step ----------------------------------------------------------------
                lr_now = lr_at(step, lr, o.warmup_epochs * steps_per_epoch, total_steps, o.schedule,
                               [e * steps_per_epoch for e in o.milestones])
                for g in optimizer.param_groups:
                    g["lr"] = lr_now
                momentum = momentum_at(m.momentum, m.momentum_schedule, step, total_steps)

                # ---- augment on device, forward, check, backward, step ------------------------------------------
                with torch.no_grad():
                    views = augment(batch)
                if channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                log_now = (step + 1) % t.log_every == 0 or step + 1 == stop_step
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                    loss, terms = model(views, momentum, step, diagnose=log_now)  # diagnostics on logged steps
                if not torch.isfinite(loss):
                    bad = [k for k, v in terms.items() if not torch.isfinite(v).all()] or ["loss"]
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch} step {step} (iteration {i} of the epoch): "
                        f"term(s) {', '.join(bad)} = {', '.join(str(float(terms.get(k, loss))) for k in bad)}; "
                        f"training stopped, the last good checkpoint ({ckpt_dir / 'last.pt'}) is kept")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1

                # ---- bookkeeping --------------------------------------------------------------------------------
                values = {"loss": loss.detach(), **terms}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
                count += 1
                done += 1
                images = len(batch.labels) * world
                collapsed = False
                if log_now:
                    floats = {k: float(v) for k, v in values.items()}
                    warning = watch.update(step, floats)
                    collapsed = watch.reported and t.stop_on_collapse
                    if main:
                        log.write({"kind": "step", "epoch": epoch, "step": step, "lr": lr_now, "momentum": momentum,
                                   **floats, "data_time": data_time, **({"collapse": True} if warning else {})})
                        if warning:
                            print(("\n" if bar is not None else "") + warning, file=sys.stderr, flush=True)
                if bar is not None:
                    bar.set_postfix_str(" ".join(f"{k} {float(v):.3f}" for k, v in values.items()
                                                 if not is_diagnostic(k))
                                        + f" lr {lr_now:.4f} img/s {images / max(1e-9, time.time() - data_start):.0f}"
                                        + f" data {data_time:.2f}s", refresh=False)
                    bar.update(1)
                # ---- stop (signal, max_steps) or periodic mid-epoch checkpoint --------------------------------
                done_epoch = i + 1 == steps_per_epoch
                if stop.requested(device):
                    status = "stopped"
                elif log_now and dist.any_true(collapsed, device):  # logged steps only: the same on every rank
                    status = "collapsed"
                elif step >= stop_step and step < total_steps:
                    status = "max_steps"
                periodic = t.ckpt_every_steps and step % t.ckpt_every_steps == 0
                if not done_epoch and (status != "finished" or periodic):
                    _save(ckpt_dir, method, optimizer, scaler, cfg, epoch, i + 1, step, metrics, world, main,
                          partial={"sums": sums, "count": count, "counts": counts})
                if status != "finished":
                    break
                data_start = time.time()
            if bar is not None:
                bar.close()
            if done == 0:
                continue
            epoch_done = i + 1 == steps_per_epoch

            # ---- end of epoch: corrupt files, kNN monitor, record, checkpoint ---------------------------------
            record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1 if epoch_done else epoch, "step": step,
                                      "lr": lr_now, **{k: v / counts[k] for k, v in sums.items()},
                                      "time": time.time() - epoch_start,
                                      "img_per_s": done * o.batch_size / max(1e-9, time.time() - epoch_start)}
            if getattr(loader, "bad_files", None):
                record["bad_files"] = len(loader.bad_files)
                if main:
                    print(f"epoch {epoch + 1}: skipped {len(loader.bad_files)} corrupt image(s), e.g. "
                          f"{loader.bad_files[:3]}", file=sys.stderr, flush=True)
            if epoch_done:
                last = epoch + 1 == o.epochs or step >= stop_step
                if monitor and ((epoch + 1) % t.knn_every == 0 or last):
                    record["knn_top1"] = metrics["knn_top1"] = monitor(method.student)
                metrics.update({k: record[k] for k in ("loss",) if k in record})
                log.write(record)
                if main:
                    print(_epoch_line(record, o.epochs), flush=True)
                if last or (epoch + 1) % t.ckpt_every == 0 or status in ("stopped", "collapsed") or (
                        t.keep_every and (epoch + 1) % t.keep_every == 0):
                    _save(ckpt_dir, method, optimizer, scaler, cfg, epoch + 1, 0, step, metrics, world, main,
                          keep=bool(t.keep_every and (epoch + 1) % t.keep_every == 0))
            else:
                log.write(record)
            if status != "finished":
                break

    if main:
        where = ckpt_dir / "last.pt"
        if status == "stopped":
            name = signal.Signals(stop.signum).name if stop.signum else "a signal on another process"
            print(f"stopped by {name} at step {step}; checkpoint {where}; continue with: "
                  f"cgh pretrain --resume {run_dir}", flush=True)
        elif status == "collapsed":
            print(f"stopped at step {step} because the features collapsed (train.stop_on_collapse); checkpoint "
                  f"{where}", flush=True)
        else:
            print(f"done: {step} steps, checkpoint {where}", flush=True)
        log.write({"kind": "end", "status": status, "step": step, "time": time.time(), **metrics})
    dist.barrier()
    return RunResult(run_dir, step // steps_per_epoch, step, status, metrics, stop.signum)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint plumbing
# ----------------------------------------------------------------------------------------------------------------


def _save(ckpt_dir: Path, method: nn.Module, optimizer, scaler, cfg: Config, epoch: int, epoch_step: int, step: int,
          metrics: dict[str, Any], world: int, main: bool, keep: bool = False,
          partial: dict[str, Any] | None = None) -> None:
    """Gather every process's RNG state and write last.pt (and a numbered copy) on rank 0. ``partial``: the loss
    sums and step count of the epoch so far, for a mid-epoch checkpoint."""
    states = [rng_state()]
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, states[0])
        states = gathered
    if main:
        ckpt = {
            "format": FORMAT, "version": VERSION, "cgh_version": __version__, "config": cfg.to_dict(),
            "method": cfg.method.name, "arch": cfg.model.arch, "epoch": epoch, "epoch_step": epoch_step,
            "step": step, "world_size": world, "model": method.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "rng": states, "metrics": metrics,
            "epoch_partial": partial,
        }
        if keep:  # the numbered copy first: a run killed before last.pt is renamed redoes this epoch end, and both
            numbered = ckpt_dir / f"epoch_{epoch:04d}.pt"
            save_atomic(ckpt, numbered)
            copy_atomic(numbered, ckpt_dir / "last.pt")
        else:
            save_atomic(ckpt, ckpt_dir / "last.pt")
    dist.barrier()


def _load_states(method, optimizer, scaler, ckpt: dict[str, Any], path: Path, rank: int) -> None:
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
        raise CheckpointError(f"nothing to resume: {p} does not exist")
    return p


# Keys that may change on resume without touching the optimisation (everything else must match).
RESUME_SAFE = ("train.device", "train.progress", "train.log_every", "train.knn_every", "train.knn_max_train",
               "train.ckpt_every", "train.ckpt_every_steps", "train.keep_every", "train.max_steps",
               "data.num_workers", "data.path", "data.corrupt", "out_dir", "train.compile", "train.stop_on_collapse")


def _resumed_config(ckpt: dict[str, Any], given: Config, path: Path, main: bool) -> Config:
    """The checkpoint's config, taking from ``given`` only keys that do not break exactness (RESUME_SAFE) and
    ``optim.epochs`` (extending a run; the lr schedule then changes, which is announced)."""
    cfg = config_from_dict(ckpt["config"], origin=str(path))
    saved, new = _flat(cfg.to_dict()), _flat(given.to_dict())
    for key, value in new.items():
        if value == saved.get(key) or key == "preset" or (key == "out_dir" and not value):
            continue
        if key not in RESUME_SAFE + ("optim.epochs",):
            raise ConfigError(f"cannot change {key} when resuming ({saved.get(key)!r} in {path}, {value!r} given); "
                              f"keys that may change: {', '.join(RESUME_SAFE + ('optim.epochs',))}")
        _set(cfg, key, value)
        if main and key == "optim.epochs":
            print(f"note: optim.epochs changed on resume ({saved[key]} -> {value}): the lr schedule changes",
                  flush=True)
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


def _refuse_run_dir(run_dir: Path, resuming: bool, overwrite: bool, checkpoint: Path | None = None) -> bool:
    """A non-empty run directory is refused (nothing in it is touched) unless the run resumes its own checkpoint or
    ``overwrite`` is given: resuming another run's checkpoint into it would replace its files. Returns whether its
    contents are to be replaced."""
    existing = run_dir.exists() and any(run_dir.iterdir())
    own = checkpoint is not None and checkpoint.resolve().parent.parent == run_dir.resolve()
    if existing and not (resuming and own) and not overwrite:
        if resuming:
            raise ConfigError(f"run directory {run_dir} already exists and is not the run of the checkpoint "
                              f"{checkpoint}; pass --overwrite to replace its contents, or choose another out_dir")
        raise ConfigError(f"run directory {run_dir} already exists and is not empty; pass --resume to continue it, "
                          f"--overwrite to replace it, or choose another out_dir")
    return existing and not (resuming and own)


def _prepare_run_dir(run_dir: Path, resuming: bool, overwrite: bool, checkpoint: Path | None = None) -> None:
    """Create the run directory, emptying it first with ``overwrite`` (see ``_refuse_run_dir``)."""
    if _refuse_run_dir(run_dir, resuming, overwrite, checkpoint):
        for name in ("checkpoints", "metrics.jsonl", "config.yaml"):
            p = run_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# Printing
# ----------------------------------------------------------------------------------------------------------------


def _temperatures(cfg: Config) -> dict[str, float]:
    m = cfg.method
    if m.name == "mocov2":
        return {"infonce": m.temperature}
    temps = {"teacher_global": m.temp_teacher_global, "student_global": m.temp_student_global}
    if m.name == "cgh":
        temps.update(teacher_hyper=m.temp_teacher_hyper, student_hyper=m.temp_student_hyper, infonce=m.temperature)
    return temps


def _print_banner(b: dict[str, Any], resumed_from, start) -> None:
    lines = [
        f"cgh {b['cgh']} (torch {b['torch']}): pretraining {b['method']} on {b['dataset']}",
        f"  model      {b['arch']} ({b['stem']} stem, width {b['width']}), views {b['views']} px",
        f"  processes  {b['world_size']} x {b['batch_per_process']} = global batch {b['global_batch']} on "
        f"{b['device']}, amp {b['amp']}",
        f"  lr         {b['lr']:.4g} ({b['lr_rule']}), {b['epochs']} epochs x {b['steps_per_epoch']} steps",
        f"  BN         {b['bn_mode']}" + (f" ({b['bn_splits']} splits)" if b["bn_mode"] == "split" else ""),
        f"  queue      {b['queue_size']} slots; temperatures {b['temperatures']}",
        f"  run dir    {b['run_dir']}",
    ]
    if resumed_from:
        lines.append(f"  resumed    from {resumed_from} at epoch {start[0]}, step {start[2]}")
    print("\n".join(lines), flush=True)


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"loss {r['loss']:.4f}"]
    parts += [f"{k} {r[k]:.4f}" for k in ("hyper", "csist", "nce", "relation") if k in r]
    for context in ("global", "hyper"):  # cgh.diagnostics: feature spread, rank, teacher target entropy
        if f"std_{context}" in r:
            parts.append(f"[{context}: std {r[f'std_{context}']:.2f} rank {r[f'rank_{context}']:.1f}"
                         + (f" ent {r[f'ent_{context}']:.2f}" if f"ent_{context}" in r else "") + "]")
    if "knn_top1" in r:
        parts.append(f"kNN top-1 {r['knn_top1']:.2f}%")
    parts.append(f"{r['img_per_s']:.0f} img/s")
    return "  ".join(parts)


def _progress(enabled: bool, total: int, initial: int, epoch: int, epochs: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True,
                mininterval=1.0, file=sys.stderr)
