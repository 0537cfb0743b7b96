"""What a pretraining run prints: the banner, the epoch line, the progress bar, and the warning of a run that ends
inside its InfoNCE warm-up."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import torch

from cgh import __version__
from cgh.config import Config
from cgh.config.names import QUEUE_METHODS
from cgh.losses import cgh_loss_weights
from cgh.wording import counted


def describe_split(source, where: bool = True) -> str:
    """``folder:train (240 images, 5 classes, /data/photos/train)``: a split, its size and (``where``) the folder
    of a file source."""
    facts = [counted(len(source), "image")] + ([counted(len(source.classes), "class")] if source.classes else [])
    if where and getattr(source, "root", None):
        facts.append(source.root)
    return f"{source.name} ({', '.join(facts)})"


def monitor_summary(cfg: Config, run, off) -> str:
    """The banner's kNN line: the bank and the test split with their sizes, or why the monitor is off."""
    if run.monitor is not None:
        return (f"bank {describe_split(run.monitor.train_src, False)}, test "
                f"{describe_split(run.monitor.test_src, False)}, every "
                f"{'epoch' if cfg.train.knn_every == 1 else counted(cfg.train.knn_every, 'epoch')}")
    return f"off: {off.reason}" if off else "off (train.knn_every=0)"


def run_banner(cfg: Config, run, source, specs, world: int, bn_mode: str, monitor_off=None) -> dict[str, Any]:
    """The facts of a run, printed at its start and written as its "start" record. ``monitor_off``: why the kNN
    monitor is off (cgh.train.monitor.Off), if it is."""
    o, m = cfg.optim, cfg.method
    return {
        "cgh": __version__, "torch": torch.__version__, "method": m.name, "recipe": cfg.recipe,
        "arch": cfg.model.arch, "stem": cfg.model.stem, "width": cfg.model.width, "device": str(run.device),
        "world_size": world, "batch_per_process": o.batch_size // world, "global_batch": o.batch_size, "lr": run.lr,
        "lr_rule": f"{o.lr} x {o.batch_size}/{o.lr_ref_batch}", "bn_mode": bn_mode,
        "bn_splits": cfg.model.bn_splits if bn_mode == "split" else 1,
        "queue_size": m.queue_size if m.name in QUEUE_METHODS else 0,  # 0: the method keeps no queue
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "none",
        "steps_per_epoch": run.steps_per_epoch, "epochs": o.epochs,
        "dataset": f"{source.name} ({counted(len(source), 'image')})",
        "data": describe_split(source), "knn": monitor_summary(cfg, run, monitor_off),
        "views": [s.size for s in specs], "temperatures": run.method.temperatures(),
        "loss_terms": list(run.method.loss_terms), "run_dir": str(run.run_dir),
        "loss_warmup_steps": run.method.warmup_steps, "loss_warmup_epochs": m.loss_warmup_epochs,
        "loss_warmup_min_steps": m.loss_warmup_min_steps, "end_step": run.stop_step,
    }


def print_banner(b: dict[str, Any], resumed_from, start: tuple[int, int], step: int) -> None:
    queue = f"{b['queue_size']} slots" if b["queue_size"] else "none (this method keeps no queue)"
    lines = [
        f"cgh {b['cgh']} (torch {b['torch']}): pretraining {b['method']} on {b['dataset']}",
        *([f"  recipe     {b['recipe']}"] if b["recipe"] else []),
        f"  data       {b['data']}",
        f"  kNN        {b['knn']}",
        f"  model      {b['arch']} ({b['stem']} stem, width {b['width']}), views {b['views']} px",
        f"  processes  {b['world_size']} x {b['batch_per_process']} = global batch {b['global_batch']} on "
        f"{b['device']}, amp {b['amp']}",
        f"  lr         {b['lr']:.4g} ({b['lr_rule']}), {counted(b['epochs'], 'epoch')} x "
        f"{counted(b['steps_per_epoch'], 'step')}",
        f"  BN         {b['bn_mode']}" + (f" ({counted(b['bn_splits'], 'split')})" if b["bn_mode"] == "split" else ""),
        f"  queue      {queue}" + (f"; temperatures {b['temperatures']}" if b["temperatures"] else ""),
        *([f"  warm-up    InfoNCE -> relation loss over the first {counted(b['loss_warmup_steps'], 'step')} (max of "
           f"method.loss_warmup_epochs {b['loss_warmup_epochs']} x {counted(b['steps_per_epoch'], 'step')} and "
           f"method.loss_warmup_min_steps {b['loss_warmup_min_steps']}); the run ends at step {b['end_step']}"]
          if b["loss_warmup_steps"] else []),
        f"  run dir    {b['run_dir']}",
    ]
    if resumed_from:
        lines.append(f"  resumed    from {resumed_from} at epoch {start[0]}, step {step}")
    print("\n".join(lines), flush=True)


def warmup_warning(cfg: Config, warmup_steps: int, end_step: int, steps_per_epoch: int, ended: bool = False
                   ) -> str | None:
    """A one-line warning when a run ends (``end_step``) before its InfoNCE warm-up of ``warmup_steps`` does: its
    last step is then still partly MoCo's InfoNCE, not the method's relation loss (a 120-step "CGH" run of the demo
    recipe ends at w_nce 0.80). ``ended``: the wording for the end of the run. None when the warm-up ends in time."""
    if not warmup_steps or end_step >= warmup_steps or end_step < 1:
        return None
    w_nce = cgh_loss_weights(end_step - 1, warmup_steps)[0]  # the weight of the last step's InfoNCE term
    name, t = cfg.method.name, cfg.train
    if t.max_steps and t.max_steps == end_step:
        until, longer = f"train.max_steps = {t.max_steps}", f"train.max_steps={warmup_steps}"
    else:
        until = f"optim.epochs = {cfg.optim.epochs} x {counted(steps_per_epoch, 'step')}"
        longer = f"optim.epochs={-(-warmup_steps // steps_per_epoch)}"
    what = (f"the run ended at step {end_step}, inside its InfoNCE warm-up of {counted(warmup_steps, 'step')}: its "
            f"last loss was"
            if ended else f"this run ends at step {end_step} ({until}), before its InfoNCE warm-up of "
                          f"{counted(warmup_steps, 'step')} does: its last loss will be")
    return (f"warning: {what} {100 * w_nce:.0f}% InfoNCE and {100 * (1 - w_nce):.0f}% {name}'s relation loss "
            f"(w_nce {w_nce:.2f}); for {name}'s own loss train at least {counted(warmup_steps, 'step')} ({longer}) or "
            f"shorten the warm-up (method.loss_warmup_min_steps, method.loss_warmup_epochs)")


def duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: a time span as a person reads it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def elapsed_and_eta(began: tuple[float, int], now: float, step: int, end_step: int) -> tuple[float, float | None]:
    """Seconds since ``began`` = (time, step), and the seconds left to ``end_step`` at the pace since then (None
    before the first step)."""
    elapsed = now - began[0]
    done = step - began[1]
    return elapsed, (elapsed / done * max(0, end_step - step) if done > 0 else None)


def epoch_line(r: dict[str, Any], epochs: int, loss_terms: tuple[str, ...],
               times: tuple[float, float | None] | None = None) -> str:
    """The line printed at an epoch's end; ``times``: (elapsed, ETA) in seconds (``elapsed_and_eta``)."""
    parts = [f"epoch {r['epoch']}/{epochs}", f"loss {r['loss']:.4f}"]
    parts += [f"{k} {r[k]:.4f}" for k in loss_terms if k in r]
    for context in ("global", "hyper"):  # cgh.model.diagnostics: feature spread, rank, teacher target entropy
        if f"std_{context}" in r:
            parts.append(f"[{context}: std {r[f'std_{context}']:.2f} rank {r[f'rank_{context}']:.1f}"
                         + (f" ent {r[f'ent_{context}']:.2f}" if f"ent_{context}" in r else "") + "]")
    if "knn_top1" in r:
        parts.append(f"kNN top-1 {r['knn_top1']:.2f}%")
    if "probe_top1" in r:
        parts.append(f"probe top-1 {r['probe_top1']:.2f}%")
    parts.append(f"{r['img_per_s']:.0f} img/s")
    if "data_share" in r:  # the epoch's time spent waiting for the loader: the data path is the bottleneck if large
        parts.append(f"data {100 * r['data_share']:.0f}%")
    if times is not None:
        elapsed, eta = times
        parts.append(f"elapsed {duration(elapsed)}" + (f", ETA {duration(eta)}" if eta is not None else ""))
    return "  ".join(parts)


def progress_bar(enabled: bool, total: int, initial: int, epoch: int, epochs: int):
    """A tqdm bar over the epoch's steps on stderr, only when stderr is a terminal: redirected to a file, a bar is
    carriage-return fragments, and the epoch line (with elapsed time and ETA) says what it would."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True,
                mininterval=1.0, file=sys.stderr)


def print_end(run, status: str, first_step: int, requeue_status: int) -> None:
    """The run's last line: done (with the warm-up warning of a run that ended inside it), stopped by a signal (and
    how to continue), collapsed, or nothing to do (resumed at its end: which value would train further)."""
    where = run.ckpt_dir / "last.pt"
    if status == "stopped" and run.stop.signum == signal.SIGUSR1:
        print(f"stopped by SIGUSR1 (a time limit ahead) at step {run.step}; checkpoint {where}; requeue the "
              f"same command with --resume auto (exit status {requeue_status})", flush=True)
    elif status == "stopped":
        name = signal.Signals(run.stop.signum).name if run.stop.signum else "a signal on another process"
        print(f"stopped by {name} at step {run.step}; checkpoint {where}; continue with: "
              f"cgh pretrain --resume {run.run_dir}", flush=True)
    elif status == "collapsed":
        print(f"stopped at step {run.step} because the features collapsed (train.stop_on_collapse); "
              f"checkpoint {where}", flush=True)
    elif run.step == first_step and run.step >= run.stop_step:  # resumed at its end: no step to run
        end = (f"train.max_steps = {run.cfg.train.max_steps}" if run.stop_step < run.total_steps else
               f"the end of its optim.epochs = {run.cfg.optim.epochs}")
        longer = "train.max_steps" if run.stop_step < run.total_steps else "optim.epochs"
        print(f"nothing to do: {run.run_dir} is already at step {run.step}, {end}; to train further resume with a "
              f"larger {longer} (cgh pretrain --resume {run.run_dir} {longer}=N); checkpoint {where}", flush=True)
    else:
        print(f"done: {counted(run.step, 'step')} in {duration(time.time() - run.began[0])}, checkpoint {where}",
              flush=True)
        warning = warmup_warning(run.cfg, run.method.warmup_steps, run.step, run.steps_per_epoch, ended=True)
        if warning:
            print(warning, file=sys.stderr, flush=True)
