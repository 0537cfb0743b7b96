"""What a pretraining run prints: the banner, the epoch line, the progress bar."""

from __future__ import annotations

import sys
from typing import Any

import torch

from cgh import __version__
from cgh.config import Config


def describe_split(source, where: bool = True) -> str:
    """``folder:train (240 images, 5 classes, /data/photos/train)``: a split, its size and (``where``) the folder
    of a file source."""
    facts = [f"{len(source)} images"] + ([f"{len(source.classes)} classes"] if source.classes else [])
    if where and getattr(source, "root", None):
        facts.append(source.root)
    return f"{source.name} ({', '.join(facts)})"


def monitor_summary(cfg: Config, run, off) -> str:
    """The banner's kNN line: the bank and the test split with their sizes, or why the monitor is off."""
    if run.monitor is not None:
        return (f"bank {describe_split(run.monitor.train_src, False)}, test "
                f"{describe_split(run.monitor.test_src, False)}, every {cfg.train.knn_every} epoch(s)")
    return f"off: {off.reason}" if off else "off (train.knn_every=0)"


def run_banner(cfg: Config, run, source, specs, world: int, bn_mode: str, monitor_off=None) -> dict[str, Any]:
    """The facts of a run, printed at its start and written as its "start" record. ``monitor_off``: why the kNN
    monitor is off (cgh.monitor.Off), if it is."""
    o, m = cfg.optim, cfg.method
    return {
        "cgh": __version__, "torch": torch.__version__, "method": m.name, "recipe": cfg.recipe,
        "arch": cfg.model.arch, "stem": cfg.model.stem, "width": cfg.model.width, "device": str(run.device),
        "world_size": world, "batch_per_process": o.batch_size // world, "global_batch": o.batch_size, "lr": run.lr,
        "lr_rule": f"{o.lr} x {o.batch_size}/{o.lr_ref_batch}", "bn_mode": bn_mode,
        "bn_splits": cfg.model.bn_splits if bn_mode == "split" else 1, "queue_size": m.queue_size,
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "none",
        "steps_per_epoch": run.steps_per_epoch, "epochs": o.epochs, "dataset": f"{source.name} ({len(source)} images)",
        "data": describe_split(source), "knn": monitor_summary(cfg, run, monitor_off),
        "views": [s.size for s in specs], "temperatures": run.method.temperatures(),
        "loss_terms": list(run.method.loss_terms), "run_dir": str(run.run_dir),
    }


def print_banner(b: dict[str, Any], resumed_from, start: tuple[int, int], step: int) -> None:
    lines = [
        f"cgh {b['cgh']} (torch {b['torch']}): pretraining {b['method']} on {b['dataset']}",
        *([f"  recipe     {b['recipe']}"] if b["recipe"] else []),
        f"  data       {b['data']}",
        f"  kNN        {b['knn']}",
        f"  model      {b['arch']} ({b['stem']} stem, width {b['width']}), views {b['views']} px",
        f"  processes  {b['world_size']} x {b['batch_per_process']} = global batch {b['global_batch']} on "
        f"{b['device']}, amp {b['amp']}",
        f"  lr         {b['lr']:.4g} ({b['lr_rule']}), {b['epochs']} epochs x {b['steps_per_epoch']} steps",
        f"  BN         {b['bn_mode']}" + (f" ({b['bn_splits']} splits)" if b["bn_mode"] == "split" else ""),
        f"  queue      {b['queue_size']} slots; temperatures {b['temperatures']}",
        f"  run dir    {b['run_dir']}",
    ]
    if resumed_from:
        lines.append(f"  resumed    from {resumed_from} at epoch {start[0]}, step {step}")
    print("\n".join(lines), flush=True)


def epoch_line(r: dict[str, Any], epochs: int, loss_terms: tuple[str, ...]) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"loss {r['loss']:.4f}"]
    parts += [f"{k} {r[k]:.4f}" for k in loss_terms if k in r]
    for context in ("global", "hyper"):  # cgh.diagnostics: feature spread, rank, teacher target entropy
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
    return "  ".join(parts)


def progress_bar(enabled: bool, total: int, initial: int, epoch: int, epochs: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True,
                mininterval=1.0, file=sys.stderr)
