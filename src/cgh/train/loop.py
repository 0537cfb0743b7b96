"""The pretraining loop: ``train_one_epoch`` reads top to bottom; ``pretrain`` is ``prepare_run`` (cgh.train.prepare),
then ``train_one_epoch`` per epoch, then the end record.

    result = pretrain(cfg)                      # = prepare_run, then train_one_epoch per epoch, then the end record

The loop is method-agnostic: it knows a method only through the contract of ``cgh.methods.Method``. The run
directory and its log are cgh.train.rundir's, checkpoints and resume cgh.train.resume's, schedules cgh.optim.schedule's,
the kNN monitor cgh.train.monitor's. Checkpoints (checkpoints/last.pt) are written every ``train.ckpt_every`` epochs and
``train.ckpt_every_steps`` steps, at the end, when a signal stops the run (exit status 128 + the signal) and when a
collapse does (``train.stop_on_collapse``, exit status 3). Logged steps carry the collapse diagnostics of
cgh.model.diagnostics; a ``CollapseWatch`` reads them and warns once (its streak is not saved: after a resume it counts
again from zero, which can only delay a warning). Schedules are indexed by the global step, so a resumed run ends
where an uninterrupted one ends (tests/system kill and resume runs at every kind of moment).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from cgh.config import Config
from cgh.model.diagnostics import is_diagnostic
from cgh.optim.schedule import lr_at, momentum_at
from cgh.runtime import dist
from cgh.runtime.device import autocast
from cgh.train.console import elapsed_and_eta, epoch_line, print_end, progress_bar
from cgh.train.monitor import knn_below_start
from cgh.train.prepare import prepare_run
from cgh.train.run import EpochMeter, Run, RunResult
from cgh.train.rundir import StopSignal
from cgh.wording import counted

EXIT_COLLAPSED = 3  # `cgh pretrain`'s exit status when train.stop_on_collapse stopped the run
EXIT_REQUEUE = 75  # ... when SIGUSR1 (a time limit ahead) stopped it with a checkpoint: EX_TEMPFAIL, requeue me


def train_one_epoch(run: Run, epoch: int, first_step: int) -> str:
    """Steps ``first_step`` .. the end of ``epoch`` (or a stop), then the epoch's record, kNN and checkpoint.
    Returns the run's status: "finished" (go on), "stopped", "collapsed" or "max_steps"."""
    cfg, o, t = run.cfg, run.cfg.optim, run.cfg.train
    spe, world = run.steps_per_epoch, dist.world_size()
    meter = EpochMeter(run.partial if first_step else None)  # the steps before a mid-epoch resume
    run.loader.set_epoch(epoch)
    status, done, i, epoch_start, data_total = "finished", 0, first_step - 1, time.time(), 0.0
    bar = progress_bar(t.progress and run.main, spe, first_step, epoch, o.epochs)
    data_start = time.time()
    for i, batch in enumerate(run.loader.iter_from(first_step), start=first_step):
        data_time = time.time() - data_start
        data_total += data_time
        lr = lr_at(run.step, run.lr, o.warmup_epochs * spe, run.total_steps, o.schedule,
                   [e * spe for e in o.milestones], spe)
        for g in run.optimizer.param_groups:  # a fixed-lr group (SimSiam's fix_pred_lr) keeps the initial lr;
            g["lr"] = (run.lr if g.get("fixed_lr") else lr) * g.get("lr_scale", 1.0)  # pred_lr_scale multiplies
        momentum = momentum_at(cfg.method.momentum, cfg.method.momentum_schedule, run.step, run.total_steps)

        with torch.no_grad():
            views = run.augment(batch)  # on the device: crops (array data), flips, colour
        if t.channels_last and run.device.type == "cuda":
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        log_now = (run.step + 1) % t.log_every == 0 or run.step + 1 == run.stop_step
        with autocast(run.device, run.amp_dtype):
            loss, terms = run.model(views, momentum, run.step, diagnose=log_now)  # diagnostics on logged steps
        run.finite.update(run.step, loss, terms)  # on the device; read at log points and before checkpoints
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.step += 1
        if run.probe is not None:  # on the teacher's detached features: no effect on the step above
            run.probe.step(run.method.teacher_pooled, batch.labels)

        values = {"loss": loss.detach(), **terms}
        meter.add(values)
        done += 1
        collapsed, floats = log_step(run, epoch, lr, momentum, values, data_time, bar) if log_now else (False, None)
        if bar is not None:
            if floats is not None:  # the values are read on the host at log points only
                img_s = len(batch.labels) * world / max(1e-9, time.time() - data_start)
                bar.set_postfix_str(" ".join(f"{k} {v:.3f}" for k, v in floats.items() if not is_diagnostic(k))
                                    + f" lr {lr:.4f} img/s {img_s:.0f} data {data_time:.2f}s", refresh=False)
            bar.update(1)
        # a signal is seen on its own process at once; processes agree on it at log points and epoch ends only
        # (a collective per step would stall the GPU): under torchrun a SIGTERM stops within train.log_every steps
        if world == 1:
            stop = run.stop.signum is not None
        else:
            stop = (log_now or i + 1 == spe) and run.stop.requested(run.device)
        if stop:
            status = "stopped"
        elif log_now and dist.any_true(collapsed, run.device):  # logged steps only: the same on every rank
            status = "collapsed"
        elif run.stop_step <= run.step < run.total_steps:
            status = "max_steps"
        periodic = t.ckpt_every_steps and run.step % t.ckpt_every_steps == 0
        if i + 1 < spe and (status != "finished" or periodic):  # a mid-epoch checkpoint
            run.save(epoch, i + 1, partial=meter.state())
        if status != "finished":
            break
        data_start = time.time()
    if bar is not None:
        bar.close()
    if done:
        end_epoch(run, epoch, i + 1 == spe, meter, done, epoch_start, status, data_total)
    return status


def log_step(run: Run, epoch: int, lr: float, momentum: float, values: dict[str, torch.Tensor], data_time: float,
             bar) -> tuple[bool, dict[str, float]]:
    """A logged step: the finiteness check, the step record, the collapse watch. Returns whether the run is to stop
    on a collapse, and the values read on the host."""
    run.finite.check(run.step, epoch, run.ckpt_dir / "last.pt")
    floats = {k: float(v) for k, v in values.items()}
    warning = run.watch.update(run.step, floats)
    if run.main:
        run.log.write({"kind": "step", "epoch": epoch, "step": run.step, "lr": lr, "momentum": momentum, **floats,
                       "data_time": data_time, **({"collapse": True} if warning else {})})
        if warning:
            print(("\n" if bar is not None else "") + warning, file=sys.stderr, flush=True)
    return bool(run.watch.reported and run.cfg.train.stop_on_collapse), floats


def end_epoch(run: Run, epoch: int, complete: bool, meter: EpochMeter, done: int, epoch_start: float,
              status: str, data_time: float = 0.0) -> None:
    """The epoch record (also for a partial epoch), corrupt files, and for a complete epoch the kNN monitor, the
    epoch line and the epoch-end checkpoint."""
    t, epochs = run.cfg.train, run.cfg.optim.epochs
    run.finite.check(run.step, epoch, run.ckpt_dir / "last.pt")
    elapsed = time.time() - epoch_start
    record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1 if complete else epoch, "step": run.step,
                              "lr": run.optimizer.param_groups[0]["lr"], **meter.means(), "time": elapsed,
                              "img_per_s": done * run.cfg.optim.batch_size / max(1e-9, elapsed),
                              # seconds this process waited for the loader, and their share of the epoch's time
                              "data_time": data_time, "data_share": data_time / max(1e-9, elapsed)}
    bad_files = getattr(run.loader, "bad_files", None)
    if bad_files:
        record["bad_files"] = len(bad_files)
        if run.main:
            print(f"epoch {epoch + 1}: skipped {counted(len(bad_files), 'corrupt image')}, e.g. {bad_files[:3]}",
                  file=sys.stderr, flush=True)
    if not complete:
        run.log.write(record)
        return
    last = epoch + 1 == epochs or run.step >= run.stop_step
    if run.monitor and ((epoch + 1) % t.knn_every == 0 or last):
        record["knn_top1"] = run.metrics["knn_top1"] = run.monitor(run.method.student)
    if run.probe:
        with torch.random.fork_rng(devices=[]):  # a loader may draw a seed: keep training's stream untouched
            record["probe_top1"] = run.metrics["probe_top1"] = run.probe(run.method.teacher)
    run.metrics.update({k: record[k] for k in ("loss",) if k in record})
    run.log.write(record)
    if run.main:
        times = elapsed_and_eta(run.began, time.time(), run.step, run.stop_step)
        print(epoch_line(record, epochs, run.method.loss_terms, times), flush=True)
    keep = bool(t.keep_every and (epoch + 1) % t.keep_every == 0)
    if last or (epoch + 1) % t.ckpt_every == 0 or status in ("stopped", "collapsed") or keep:
        run.save(epoch + 1, 0, keep=keep)


def run_epochs(run: Run) -> tuple[str, int]:
    """The epoch-0 kNN of a fresh run, then the epochs until the end or a stop. Returns the status and the step the
    loop began at."""
    if run.monitor and run.step == 0:
        acc = run.metrics["knn_top1"] = run.metrics["knn_init"] = run.monitor(run.method.student)  # the random init
        run.log.write({"kind": "epoch", "epoch": 0, "step": 0, "knn_top1": acc})
        if run.main:
            print(f"epoch 0: kNN top-1 {acc:.2f}% (random init)", flush=True)
    status, first_step = "finished", run.step
    run.began = (time.time(), run.step)
    run.model.train()
    with StopSignal() as run.stop:
        for epoch in range(run.start[0], run.cfg.optim.epochs):
            if run.step >= run.stop_step:
                break
            status = train_one_epoch(run, epoch, run.start[1] if epoch == run.start[0] else 0)
            if status != "finished":
                break
    return status, first_step


def pretrain(cfg: Config, resume: str | os.PathLike | bool | None = None, overwrite: bool = False) -> RunResult:
    """Pretrain ``cfg.method.name`` as configured. ``resume``: True (the run in cfg.out_dir), or a run directory or
    checkpoint path. Returns where the run ended; raises ConfigError / DataError / CheckpointError on bad input."""
    run = prepare_run(cfg, resume, overwrite)
    try:
        status, first_step = run_epochs(run)
        if run.main:
            print_end(run, status, first_step, EXIT_REQUEUE)
            note = knn_below_start(run.metrics, run.run_dir)  # one line, not a collapse warning
            if note:
                print(f"note: {note}", file=sys.stderr, flush=True)
            run.log.write({"kind": "end", "status": status, "step": run.step, "time": time.time(), **run.metrics,
                           **({"notes": [note]} if note else {})})
    except BaseException as e:  # no checkpoint: the last one stands
        lost = dist.peer_lost(e, run.cfg.train.dist_timeout_s)
        if lost is e:
            raise
        raise lost from e
    finally:  # however the run ends, its directory is free again
        run.log.close()
        run.release()
    dist.barrier()
    return RunResult(run.run_dir, run.step // run.steps_per_epoch, run.step, status, run.metrics, run.stop.signum)
