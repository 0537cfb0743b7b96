"""Preparing a pretraining run: ``prepare_run(cfg, resume_from)`` builds everything the loop needs into a ``Run``
(cgh.train.run): processes and device, the resumed config, the data, the augmentation, the method, the optimiser, the
run directory and its lock, the monitors; and prints the banner. The loop that trains it is cgh.train.loop's.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sys
import time
from pathlib import Path

import torch
from torch import nn

from cgh.augment import build_augment
from cgh.checkpoints.files import check_compatible, load_checkpoint, remove_stale_temporaries
from cgh.config import Config, resolve_bn_mode, to_yaml
from cgh.config.views import pretrain_views
from cgh.data import build_pretrain_loader, open_split
from cgh.errors import ConfigError
from cgh.methods import build_method, teacher_view
from cgh.model.diagnostics import CollapseWatch
from cgh.optim.schedule import build_optimizer
from cgh.runtime import dist
from cgh.runtime.device import resolve_amp, resolve_device
from cgh.train import resume
from cgh.train.console import print_banner, run_banner, warmup_warning
from cgh.train.loggers import open_sinks
from cgh.train.monitor import knn_monitor
from cgh.train.online_probe import ProbeMonitor, probe_off_reason
from cgh.train.resume import find_checkpoint
from cgh.train.run import Run
from cgh.train.rundir import MetricsLog, default_run_dir, drop_records_after, prepare_run_dir, refuse_run_dir
from cgh.train.runlock import refuse_if_held


def prepare_run(cfg: Config, resume_from: str | os.PathLike | bool | None = None, overwrite: bool = False) -> Run:
    """Processes, device, resumed config, data, augmentation, method, optimiser and run directory of a run; prints
    the banner. ``resume_from``: True (the run in cfg.out_dir), or a run directory or checkpoint path. On rank 0 the
    run holds its directory's lock (cgh.train.runlock) from here on: ``run.lock``, released by ``pretrain`` at the end,
    and here when the start fails."""
    with contextlib.ExitStack() as on_error:
        run = _prepare_run(cfg, resume_from, overwrite, on_error)
        on_error.pop_all()
    return run


def _prepare_run(cfg: Config, resume_from, overwrite: bool, on_error: contextlib.ExitStack) -> Run:
    device = resolve_device(cfg.train.device)
    dist.init_from_env(device, cfg.train.dist_timeout_s)
    world, rank = dist.world_size(), dist.rank()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    main = rank == 0
    if not resume_from and cfg.train.auto_resume:  # the same command line starts the run or continues it
        if not cfg.out_dir:
            raise ConfigError("--resume auto (train.auto_resume) needs a fixed run directory: give out_dir=RUN, "
                              "where a checkpoint of an earlier start is looked for")
        resume_from = True if (Path(cfg.out_dir) / "checkpoints" / "last.pt").exists() else None
    ckpt, ckpt_path = None, None
    if resume_from:  # the run's own config comes from its checkpoint
        ckpt_path = find_checkpoint(resume_from if resume_from is not True else cfg.out_dir)
        ckpt = load_checkpoint(ckpt_path)
        cfg = resume.resumed_config(ckpt, cfg, ckpt_path, main)
        check_compatible(ckpt, cfg.method.name, cfg.model.arch, ckpt_path)
    cfg.validate(world)
    amp_dtype = resolve_amp(cfg.train.amp, device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # a wrong run directory is refused now, before any work; it is made once the data has opened, so that a wrong
    # data path leaves nothing behind to --overwrite
    run_dir = Path(cfg.out_dir) if cfg.out_dir else default_run_dir(cfg)
    if ckpt_path is not None and not cfg.out_dir:
        run_dir = ckpt_path.parent.parent
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    cfg.out_dir = str(run_dir)
    if main:  # a live run in it (its lock) first: --overwrite does not bypass that
        refuse_if_held(run_dir)
        refuse_run_dir(run_dir, resuming=ckpt is not None, overwrite=overwrite, checkpoint=ckpt_path)

    d, o, t, m = cfg.data, cfg.optim, cfg.train, cfg.method
    source = open_split(cfg, d.split)
    specs = pretrain_views(d.image_size, teacher=teacher_view(cfg), weak_scale=tuple(cfg.aug.weak_scale),
                           strong_scale=tuple(cfg.aug.strong_scale), num_local=m.num_local)
    loader = build_pretrain_loader(source, specs, o.batch_size, seed=cfg.seed, rank=rank, world_size=world,
                                   num_workers=d.num_workers, device=device, corrupt=d.corrupt,
                                   prefetch_factor=d.prefetch_factor, jpeg_draft=d.jpeg_draft)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(f"data: {source.name} has {len(source)} images, fewer than one global batch "
                          f"(optim.batch_size = {o.batch_size})")
    augment = build_augment(cfg, specs).to(device)
    total_steps = o.epochs * steps_per_epoch
    monitor, monitor_off = knn_monitor(cfg, device, amp_dtype) if t.knn_every else (None, None)
    if monitor_off and main:
        print(monitor_off.line(), file=sys.stderr, flush=True)

    sinks, lock = [], None
    if main:
        lock = prepare_run_dir(run_dir, resuming=ckpt is not None, overwrite=overwrite, checkpoint=ckpt_path,
                               world_size=world)
        on_error.callback(lock.release)
        (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        if ckpt is not None:
            drop_records_after(run_dir / "metrics.jsonl", ckpt["step"])
        sinks = open_sinks(cfg, run_dir, None if ckpt is None else ckpt["step"])  # TensorBoard, W&B
    dist.barrier()

    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    method = build_method(cfg, world, steps_per_epoch).to(device)
    bn_mode = resolve_bn_mode(cfg.model.bn_mode, world)
    if bn_mode == "sync" and world > 1:
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if t.channels_last and device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    lr = o.lr * o.batch_size / o.lr_ref_batch  # linear scaling on the *global* batch (docs/method.md#imagenet-recipe,
                                               # docs/method.md#quirk-lr-scaling)
    optimizer = build_optimizer(method, o, lr)  # SGD or LARS on the student (and a predictor)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    run = Run(cfg, run_dir, device, amp_dtype, method, method, optimizer, scaler, loader, augment, monitor,
              MetricsLog(run_dir / "metrics.jsonl", main, sinks),
              CollapseWatch(m.queue_size, method.relation_terms, stops=t.stop_on_collapse), lr, steps_per_epoch,
              total_steps, min(total_steps, t.max_steps) if t.max_steps else total_steps, (0, 0), main=main,
              lock=lock)
    if t.online_probe:
        probe_off = probe_off_reason(cfg, source)
        if probe_off is None:
            run.probe = ProbeMonitor(cfg, device, amp_dtype, method.student.backbone.num_features, source.labels,
                                     test=(monitor.test_src, monitor.test_loader) if monitor else None)
        elif main:
            print(probe_off.line(), file=sys.stderr, flush=True)
    if ckpt is not None:
        if run.probe and ckpt.get("online_probe"):
            run.probe.probe.load(ckpt["online_probe"])
        elif run.probe and main:
            print(f"note: {ckpt_path} holds no online probe: it starts afresh at step {ckpt['step']}", flush=True)
        resume.load_states(method, optimizer, scaler, ckpt, ckpt_path, rank)
        run.start, run.step = (ckpt["epoch"], ckpt.get("epoch_step", 0)), ckpt["step"]
        run.metrics, run.partial = dict(ckpt.get("metrics", {})), ckpt.get("epoch_partial")
        del ckpt
    else:  # per-process streams for the augmentations; the model was initialised identically above
        torch.manual_seed(cfg.seed + 1000 * rank + 1)
        random.seed(cfg.seed + rank)
    if main:
        remove_stale_temporaries(run.ckpt_dir)
    if world > 1:
        ddp_kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
        # Buffers are not broadcast: the queues are identical on every rank by construction (gathered pushes), and
        # re-sending a 131072 x 512 queue every step would cost more than the step's gradients.
        run.model = nn.parallel.DistributedDataParallel(method, broadcast_buffers=False,
                                                        find_unused_parameters=method.needs_find_unused, **ddp_kw)
    if t.compile:
        method.student.compile()
        method.teacher.compile()

    banner = run_banner(cfg, run, source, specs, world, bn_mode, monitor_off)
    if main:
        print_banner(banner, ckpt_path, run.start, run.step)
        # pid and host: a rerun of the same command tells a start still running from one that ended (cgh.train.rundir)
        run.log.write({"kind": "start", "time": time.time(), "resumed": ckpt_path is not None,
                       "pid": os.getpid(), "host": socket.gethostname(), **banner})
        warning = warmup_warning(cfg, method.warmup_steps, run.stop_step, steps_per_epoch)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    return run
