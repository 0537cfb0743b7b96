"""One CGH training step of the authors' code against cgh's, side by side in one process (issue 12).

    python benchmarks/authors_step.py --authors ~/src/Cross-Context_Learning             # 20 rounds, 2 threads
    python benchmarks/authors_step.py --authors ~/src/Cross-Context_Learning --rounds 30 --threads 1

``--authors`` is your own checkout of zaczgao/Cross-Context_Learning (the commit docs/method.md cites, ``340bca9``);
nothing of it is copied here. Its model imports torchvision (install the build that matches your torch), pandas
and classy_vision, and it calls ``.cuda()``: this script puts stand-ins of its own in ``sys.modules`` for
``classy_vision.generic.distributed_util`` (one process, world size 1) and, if missing, ``pandas`` (not used on this
path), and makes ``Tensor.cuda`` the identity, so the authors' ``CGH`` module runs unchanged on the CPU.

Configuration (both sides): ResNet-18 with the CIFAR stem, 8 BN splits (the authors' single-process default), batch
64 x 32 px, feat/hyper dim 128, hidden 512, K 4096, m 0.99, hypercolumn of layer3 + layer4 (cgh's cifar10 preset,
which the authors' module is built to match). Each side runs its own step: the authors' as
``CGHModel.optimize_parameters`` does it (``CGH.forward`` with ``warmup=False``, which holds the EMA update and the
queue pushes, then ``CGHLoss``, ``calcFinalLoss`` with the post-warm-up weights 0 / 0.5 / 0.5, backward and SGD);
cgh's as ``cgh.train.loop`` does it (``method(views, m, step)`` past the loss warm-up, backward and SGD). SGD: lr 0.06,
momentum 0.9, weight decay 5e-4 on both. The views are made once and shared. Rounds interleave the three steps
(authors CGH, cgh CGH, cgh ReSSL, authors CGH, ...) so that a slow patch of a shared machine hits each alike; each
figure is the median over the rounds after ``--warmup`` rounds, and only the ratios of one run are compared. The
ratio is the authors' step time over the row's (above 1: faster than the authors').

Results and how they were taken are recorded in training_cost.md beside this file.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import os
import resource
import statistics
import sys
import time
import types

import torch

from bench_env import environment
from cgh.config import load_config
from cgh.methods import build_method
from cgh.optim.schedule import param_groups

LR, MOMENTUM, WEIGHT_DECAY = 0.06, 0.9, 5e-4


def _module(name: str) -> types.ModuleType:
    """An empty module with a spec (torch's import-time scans of sys.modules read ``__spec__``)."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def install_stubs() -> None:
    """Stand-ins for what the authors' model imports but a one-process CPU run does not need (our own code)."""
    dist_util = _module("classy_vision.generic.distributed_util")
    dist_util.is_distributed_training_run = lambda: False
    dist_util.get_world_size = lambda: 1
    dist_util.get_rank = lambda: 0
    dist_util.get_cuda_device_index = lambda: 0
    dist_util.gather_from_all = lambda tensor: tensor
    generic = _module("classy_vision.generic")
    generic.distributed_util = dist_util
    classy = _module("classy_vision")
    classy.generic = generic
    sys.modules.update({"classy_vision": classy, "classy_vision.generic": generic,
                        "classy_vision.generic.distributed_util": dist_util})
    try:
        import pandas  # noqa: F401
    except ImportError:
        sys.modules["pandas"] = _module("pandas")
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the authors' .cuda() calls, on the CPU


def authors_step(path: str, cfg, views: list[torch.Tensor]):
    """A closure running one step of the authors' CGH (their module, loss and step order), and their module."""
    install_stubs()
    sys.path.insert(0, os.path.abspath(os.path.expanduser(path)))
    cgh_module = importlib.import_module("models.cgh")
    criterion_module = importlib.import_module("models.criterion")
    m = cfg.method
    net = cgh_module.CGH(cfg.data.name, cfg.model.arch, dim=m.feat_dim, hid_dim=m.hid_dim, hyper_dim=m.hyper_dim,
                         layers=list(m.hyper_layers), K=m.queue_size, m=m.momentum, T=m.temperature, mlp=True,
                         multi=False, norm_center=False)
    criterion = criterion_module.CGHLoss(m.temp_teacher_hyper, m.temp_student_hyper)
    weights = {"cl": 0.0, "cl_hyper": 0.5, "csist": 0.5}  # CGHModel.adjust_loss_weight past warm_up_loss
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    b = views[0].shape[0]
    targets, index = torch.zeros(b, dtype=torch.long), torch.arange(b)
    net.train()

    def run_step() -> None:  # CGHModel.optimize_parameters, full precision
        output = net(views, targets, index, False)
        opt.zero_grad()
        loss = criterion_module.calcFinalLoss(criterion(*output), weights)
        loss.backward()
        opt.step()

    return run_step, net


def cgh_step(name: str, cfg, views: list[torch.Tensor]):
    """A closure running one step of cgh's ``name`` past its loss warm-up, as cgh.train.loop runs it."""
    cfg.method.name = name
    model = build_method(cfg, 1, steps_per_epoch=1)
    opt = torch.optim.SGD(param_groups(model.student, WEIGHT_DECAY, False), lr=LR, momentum=MOMENTUM)
    model.train()
    momentum = cfg.method.momentum

    def run_step() -> None:
        loss, _ = model(views, momentum, 10 ** 9)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run_step, model


def measure(authors: str, batch_size: int = 64, rounds: int = 20, warmup: int = 3, overrides=()) -> dict:
    cfg = load_config("cifar10", list(overrides))
    cfg.optim.batch_size = batch_size
    size = cfg.data.image_size
    torch.manual_seed(0)
    views = [torch.randn(batch_size, 3, size, size) for _ in range(2)]  # [weak (teacher), strong (student)]
    runs = {}
    torch.manual_seed(1)
    runs["authors CGH"] = authors_step(authors, load_config("cifar10", list(overrides)), views)[0]
    torch.manual_seed(1)
    runs["cgh CGH"] = cgh_step("cgh", load_config("cifar10", list(overrides)), views)[0]
    torch.manual_seed(1)
    runs["cgh ReSSL"] = cgh_step("ressl", load_config("cifar10", ["method.name=ressl", *overrides]), views)[0]
    times: dict[str, list[float]] = {name: [] for name in runs}
    faults: dict[str, list[int]] = {name: [] for name in runs}  # minor page faults: first touches of fresh memory
    for r in range(warmup + rounds):
        for name, run_step in runs.items():
            flt, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            run_step()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt)
    base = statistics.median(times["authors CGH"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = [a / t for a, t in zip(times["authors CGH"], ts, strict=True)]  # the same round's authors step
        rows.append({"step": name, "step_ms": 1000 * med, "images_per_s": batch_size / med,
                     "ratio": base / med, "paired_ratio": statistics.median(paired),
                     "faster_rounds": sum(r > 1 for r in paired), "min_ms": 1000 * min(ts),
                     "max_ms": 1000 * max(ts), "page_faults": statistics.median(faults[name])})
    m = cfg.method
    return {"rows": rows, "times_ms": {n: [1000 * t for t in ts] for n, ts in times.items()},
            "protocol": {"arch": cfg.model.arch, "stem": cfg.model.stem, "bn_splits": cfg.model.bn_splits,
                         "hyper_bn": m.hyper_bn, "batch_size": batch_size, "image_size": size,
                         "queue_size": m.queue_size, "feat_dim": m.feat_dim, "hid_dim": m.hid_dim,
                         "hyper_dim": m.hyper_dim, "rounds": rounds, "warmup": warmup,
                         "threads": torch.get_num_threads(), "torch": torch.__version__}}


def format_table(result: dict) -> str:
    p = result["protocol"]
    lines = [
        f"CGH training step, {p['arch']} ({p['stem']} stem), {p['bn_splits']} BN splits (cgh's hypercolumn BN: "
        f"{p['hyper_bn']}), batch {p['batch_size']} x {p['image_size']} px, K {p['queue_size']}, {p['threads']} "
        f"threads, median of {p['rounds']} interleaved rounds after {p['warmup']}",
        "",
        "| step | ms per step | images/s | speed vs the authors' CGH | per-round ratio, median | faster in rounds "
        "| min - max (ms) | page faults per step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    n = p["rounds"]
    for r in result["rows"]:
        faster = "-" if r["step"] == "authors CGH" else f"{r['faster_rounds']}/{n}"
        lines.append(f"| {r['step']} | {r['step_ms']:.1f} | {r['images_per_s']:.1f} | {r['ratio']:.3f}x | "
                     f"{r['paired_ratio']:.3f}x | {faster} | {r['min_ms']:.0f} - {r['max_ms']:.0f} | "
                     f"{r['page_faults']:.0f} |")
    return "\n".join(lines)


def _cpu_busy() -> float | None:
    """CPU seconds the whole machine spent busy since boot (all cores, from /proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--authors", required=True, help="a checkout of zaczgao/Cross-Context_Learning")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", help="cgh config overrides for both sides, e.g. method.hyper_bn=plain")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    busy0, own0, wall0 = _cpu_busy(), _own_cpu(), time.monotonic()
    result = measure(args.authors, args.batch_size, args.rounds, args.warmup, args.overrides)
    busy1, own1, wall1 = _cpu_busy(), _own_cpu(), time.monotonic()
    other = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)
    env = environment(extra="" if other is None else f"other processes used {other:.2f} cores on average in the run")
    if args.json:
        print(json.dumps({**result, "environment": env}))
    else:
        print(format_table(result))
        print(f"\n{env}")


if __name__ == "__main__":
    main()
