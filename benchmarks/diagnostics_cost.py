"""Cost of the collapse diagnostics (cgh.model.diagnostics): one training step with ``diagnose=True`` against one with
``diagnose=False``, for ReSSL and CGH, on the models of the ``demo`` and ``cifar10`` presets at batch 64, 32 px.
Target: amortised overhead below 2 % (the loop diagnoses every train.log_every steps only).

    python benchmarks/diagnostics_cost.py                  # both presets, 3 warm-up and 20 timed rounds each
    python benchmarks/diagnostics_cost.py --quick          # 1 + 2 rounds: checks that it runs, measures nothing
    python benchmarks/diagnostics_cost.py --configs demo --device cuda --rounds 50

A step is cgh.train.cost's (forward, backward and SGD update on views made once, past CGH's InfoNCE warm-up) plus what
the training loop does with the terms: it reads every one to the host for the epoch sums, so the diagnostics' reads (a
device synchronisation each on a GPU) are part of their cost. Both settings run on one model, alternately and in
ABBA order so that neither always runs first; each setting's figure is the median over rounds. Results are recorded
in diagnostics_cost.md beside this file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from cgh import __version__
from cgh.config import Config, load_config
from cgh.methods import build_method
from cgh.optim.schedule import param_groups
from cgh.runtime.device import resolve_device
from cgh.train.cost import _sync

TARGET = 0.02  # amortised overhead


def _step_fn(cfg: Config, name: str, views: list[torch.Tensor], device: torch.device):
    """One training step of method ``name`` as a closure of ``diagnose``; one model and optimizer for both settings."""
    c = copy.deepcopy(cfg)
    c.method.name = name
    torch.manual_seed(0)
    model = build_method(c, 1, steps_per_epoch=1).to(device)
    o = c.optim
    opt = torch.optim.SGD(param_groups(model.student, o.weight_decay, o.wd_exclude_norm_bias), lr=1e-3,
                          momentum=o.momentum)
    model.train()

    def run_step(diagnose: bool) -> None:
        loss, terms = model(views, 0.99, 10 ** 9, diagnose=diagnose)  # step 10**9: past the InfoNCE warm-up
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        [float(v) for v in terms.values()]  # the loop's epoch sums read every term to the host

    return run_step


def measure(preset: str, methods: tuple[str, ...], batch_size: int, warmup: int, rounds: int, device: str,
            overrides: list[str]) -> list[dict]:
    """One row per method: median step time with and without the diagnostics, and the overheads."""
    cfg = load_config(preset, overrides)
    dev = resolve_device(device)
    cfg.optim.batch_size = batch_size
    cfg.method.queue_size = max(batch_size, cfg.method.queue_size // batch_size * batch_size)  # as cgh.train.cost
    size, log_every = cfg.data.image_size, cfg.train.log_every
    torch.manual_seed(0)
    views = [torch.randn(batch_size, 3, size, size, device=dev) for _ in range(2)]
    rows = []
    for name in methods:
        run_step = _step_fn(cfg, name, views, dev)
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(warmup + rounds):
            for diagnose in (False, True) if r % 2 == 0 else (True, False):
                _sync(dev)
                start = time.perf_counter()
                run_step(diagnose)
                _sync(dev)
                if r >= warmup:
                    times[diagnose].append(time.perf_counter() - start)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        rows.append({
            "preset": preset, "method": name, "off_ms": 1000 * off, "on_ms": 1000 * on,
            "every_step": (on - off) / off, "log_every": log_every, "amortised": (on - off) / off / log_every,
            "spread_ms": 1000 * (max(times[False]) - min(times[False])),
            "model": f"{cfg.model.arch} width {cfg.model.width}, batch {batch_size} x {size} px, "
                     f"K {cfg.method.queue_size}, {dev}",
        })
    return rows


def format_table(rows: list[dict], rounds: int, quick: bool = False) -> str:
    lines = [f"Training step with and without the diagnostics, median of {rounds} alternating rounds"
             + (" (--quick: a check that it runs, not a measurement)" if quick else ""), "",
             "| preset | method | model | off (ms) | on (ms) | every step | log_every | amortised |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['method']} | {r['model']} | {r['off_ms']:.1f} | {r['on_ms']:.1f} | "
                     f"{100 * r['every_step']:+.2f} % | {r['log_every']} | {100 * r['amortised']:+.3f} % |")
    worst = max(r["amortised"] for r in rows)
    verdict = "no verdict from --quick" if quick else "met" if worst < TARGET else "NOT met"
    lines += ["", f"largest amortised overhead {100 * worst:+.3f} % (target < {100 * TARGET:g} %: {verdict}); "
              "step-time spread without diagnostics (max - min): "
              + ", ".join(f"{r['preset']}/{r['method']} {r['spread_ms']:.1f} ms" for r in rows)]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["demo", "cifar10"], help="presets (default: demo cifar10)")
    p.add_argument("--methods", nargs="+", default=["ressl", "cgh"], choices=["mocov2", "ressl", "cgh"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20, help="timed rounds (each: one step of each setting)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed rounds: a check that it runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every preset")
    args = p.parse_args()
    warmup, rounds = (1, 2) if args.quick else (args.warmup, args.rounds)
    rows = [row for preset in args.configs
            for row in measure(preset, tuple(args.methods), args.batch_size, warmup, rounds, args.device,
                               args.overrides)]
    env = (f"cgh {__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
           f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        print(json.dumps({"rows": rows, "warmup": warmup, "rounds": rounds, "quick": args.quick, "environment": env}))
    else:
        print(format_table(rows, rounds, args.quick))
        print(f"\n{env}")


if __name__ == "__main__":
    main()
