"""Training cost of one step, relative to supervised training: the supplementary's Table 3, measured here
(``cgh cost``, in cgh.commands.cost).

The paper times one ImageNet epoch of each method on 2 A100s (Table 3: supervised 1.00, MoCo-v2 1.62, ReSSL 1.62,
BYOL 2.90, CGH 2.01). Here one optimisation step is timed on the same backbone, batch and device for each method:
forward, backward, optimizer step, and for the self-supervised methods the EMA update, teacher forward and queue
push. Augmentation is excluded (the views are generated once), so the numbers compare the models, not the loaders.
Every method gets the same heads (the config's hid_dim -> feat_dim projector; BYOL's and SimSiam's predictors of
hid_dim) and plain SGD, so that the ratios measure the methods' structure (BYOL, SimSiam and SimCLR pass both views
through the network with gradients: the supplementary's "symmetric loss, 2x FLOPs" rows), not their head sizes or
optimisers. The paper has no SimSiam or SimCLR row in Table 3.

Measurements interleave the methods round by round (supervised, mocov2, ressl, cgh, supervised, ...) so that a
slow patch of a shared machine hits every method alike; each method's figure is the median over rounds, and only
ratios measured in one run are compared. CGH is timed after its InfoNCE warm-up (its steady state); the warm-up
steps, which add two InfoNCE terms, are reported separately.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgh.config import Config, resolve_bn_mode
from cgh.methods import build_method
from cgh.model.backbone import build_backbone
from cgh.optim.schedule import build_optimizer
from cgh.runtime.device import resolve_device

# Supplementary Table 3 (time per epoch relative to supervised, ResNet-50, ImageNet, 2 A100 GPUs, batch 256).
PAPER_TABLE3 = {"supervised": 1.00, "mocov2": 1.62, "ressl": 1.62, "byol": 2.90, "cgh": 2.01}
METHOD_NAMES = ("supervised", "mocov2", "ressl", "byol", "simsiam", "simclr", "cgh")
SYMMETRIC = ("byol", "simsiam", "simclr")  # compared with MoCo-v2 (the paper: BYOL 2.90 / MoCo-v2 1.62 = 1.79)


class Supervised(nn.Module):
    """The reference: the same backbone with a linear classifier, cross-entropy on one view, and plain BN.

    Plain BN, whatever ``model.bn_mode`` says: it is what a supervised run uses (the paper's supervised epoch is
    torchvision's recipe). With the self-supervised default of 8 BN splits on one process the baseline was slowed by
    split BN, and "CGH / supervised" compared against that (issue 19).
    """

    def __init__(self, cfg: Config, num_classes: int = 1000):
        super().__init__()
        self.student = build_backbone(cfg.model.arch, cfg.model.stem, cfg.model.width, num_classes, bn_splits=1)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.student.classify(views[1]), labels)


def method_configs(source: str, overrides: list[str] = (), methods=METHOD_NAMES) -> dict[str, Config]:
    """Each method's config as ``cgh pretrain SOURCE method.name=NAME ...`` builds it: with ``method.name`` among the
    overrides, ``load_config`` applies the preset's recipe for that method (its heads, queue, temperatures); setting
    ``cfg.method.name`` on a loaded config skips it (issue 19: MoCo-v2 was timed with CGH's heads and queue).
    Supervised takes CGH's config (only its backbone is used)."""
    from cgh.config import load_config

    return {name: load_config(source, [*overrides, f"method.name={'cgh' if name == 'supervised' else name}"],
                              origin="command line") for name in methods}


def _step_fn(name: str, cfg: Config, device: torch.device, views: list[torch.Tensor], labels: torch.Tensor,
             step: int):
    """A closure running one training step of ``name``, and the model it trains."""
    if name == "supervised":
        model = Supervised(cfg).to(device)
    else:
        c = copy.deepcopy(cfg)
        c.method.name = name  # a no-op for the configs of method_configs, which name it already
        model = build_method(c, 1, steps_per_epoch=1).to(device)
    o = copy.deepcopy(cfg.optim)
    o.algorithm = "sgd"  # one optimiser for every method (LARS's norms would add their own cost)
    opt = build_optimizer(model, o, 1e-3)
    model.train()

    def run_step() -> None:
        if name == "supervised":
            loss = model(views, labels)
        else:
            loss, _ = model(views, 0.99, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run_step, model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg: Config, methods=METHOD_NAMES, batch_size: int = 64, warmup: int = 3, repeats: int = 10,
            device: str = "auto", include_cgh_warmup: bool = True,
            per_method: dict[str, Config] | None = None) -> dict[str, Any]:
    """Median seconds per step of each method (interleaved rounds) and the ratios to supervised. ``per_method``
    (``method_configs``) gives each method its own recipe; without it every method runs on ``cfg``'s heads and queue."""
    dev = resolve_device(device)
    cfg = copy.deepcopy(cfg)
    size = cfg.data.image_size
    torch.manual_seed(0)
    views = [torch.randn(batch_size, 3, size, size, device=dev) for _ in range(2)]
    labels = torch.randint(0, 1000, (batch_size,), device=dev)
    configs = {}
    for name in {*methods, "cgh"}:
        c = copy.deepcopy((per_method or {}).get(name, cfg))
        c.optim.batch_size = batch_size
        c.method.queue_size = max(batch_size, c.method.queue_size // batch_size * batch_size)
        configs[name] = c
    cfg = configs["cgh"]
    runs = {}
    for name in methods:
        # CGH is timed past its loss warm-up, whatever its length (epochs or the loss_warmup_min_steps floor)
        runs[name] = _step_fn(name, configs[name], dev, views, labels, step=10 ** 9)[0]
    if include_cgh_warmup and "cgh" in methods:
        runs["cgh (loss warm-up)"] = _step_fn("cgh", configs["cgh"], dev, views, labels, step=0)[0]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(warmup + repeats):
        for name, run_step in runs.items():
            _sync(dev)
            start = time.perf_counter()
            run_step()
            _sync(dev)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    base = median.get("supervised")
    rows = []
    for name, seconds in median.items():
        rows.append({
            "method": name, "step_ms": 1000 * seconds, "images_per_s": batch_size / seconds,
            "relative": seconds / base if base else None, "paper": PAPER_TABLE3.get(name),
            "spread_ms": 1000 * (max(times[name]) - min(times[name])),
        })
    return {
        "rows": rows,
        "cgh_over_ressl": median["cgh"] / median["ressl"] if {"cgh", "ressl"} <= set(median) else None,
        "over_mocov2": {name: median[name] / median["mocov2"] for name in SYMMETRIC + ("cgh",)
                        if name in median and "mocov2" in median},
        "protocol": {"arch": cfg.model.arch, "stem": cfg.model.stem, "width": cfg.model.width,
                     "image_size": size, "batch_size": batch_size, "device": str(dev),
                     "bn_mode": resolve_bn_mode(cfg.model.bn_mode, 1), "bn_splits": cfg.model.bn_splits,
                     "supervised_bn": "plain",
                     "queue_size": cfg.method.queue_size, "feat_dim": cfg.method.feat_dim,
                     "hid_dim": cfg.method.hid_dim, "hyper_dim": cfg.method.hyper_dim,
                     "recipes": {n: {"feat_dim": c.method.feat_dim, "hid_dim": c.method.hid_dim,
                                     "queue_size": c.method.queue_size} for n, c in configs.items()
                                 if n != "supervised"},
                     "warmup": warmup,
                     "repeats": repeats, "threads": torch.get_num_threads(), "torch": torch.__version__},
    }


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table like the supplementary's Table 3, with this machine's figures."""
    p = result["protocol"]
    lines = [
        f"Training step, {p['arch']} ({p['stem']} stem, width {p['width']}), batch {p['batch_size']} x "
        f"{p['image_size']} px, {p['device']}, median of {p['repeats']} interleaved rounds",
        "",
        "| method | step (ms) | images/s | relative to supervised | paper (Table 3) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        rel = f"{r['relative']:.2f}" if r["relative"] is not None else "-"
        paper = f"{r['paper']:.2f}" if r["paper"] is not None else "-"
        lines.append(f"| {r['method']} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | {rel} | {paper} |")
    if result["cgh_over_ressl"] is not None:
        lines += ["", f"CGH / ReSSL = {result['cgh_over_ressl']:.3f} (paper: 2.01 / 1.62 = 1.24)"]
    for name, ratio in result.get("over_mocov2", {}).items():
        paper = PAPER_TABLE3.get(name)
        lines.append(f"{name} / MoCo-v2 = {ratio:.3f}" + (f" (paper: {paper:.2f} / 1.62 = {paper / 1.62:.2f})"
                                                          if paper else " (not in the paper's Table 3)"))
    return "\n".join(lines)
