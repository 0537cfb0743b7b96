"""What the online probe and the loggers add to a training step (the target: at most 2 %).

    python benchmarks/monitoring_overhead.py [--preset demo] [--epochs 3] [--out benchmarks/monitoring_overhead.md]

Two runs of the same config are prepared in one process with ``cgh.train.prepare_run``: one with everything on
(``train.online_probe=true``, TensorBoard, and W&B in offline mode when the package is installed), one with all of
it off. Their epochs are interleaved (off, on, off, on, ...) so that machine drift hits both alike, and timed with
``train_one_epoch`` itself; checkpoint writes are skipped in both (they are not what is compared). Reported:

- the per-step cost of each addition, timed alone on the run's real tensors and amortised: the probe's SGD step on
  the teacher's pooled features every step, and the loggers' write of a step record every ``train.log_every``
  steps, each as a share of the median step of the run with everything off;
- the end-to-end ratio of the two runs' median step times (the epoch time without its end-of-epoch work, divided by
  its steps), which also includes the noise of a shared machine;
- the probe's end-of-epoch evaluation (one pass over the test split with the teacher) as a share of an epoch: this
  is not part of the step, like the kNN monitor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cgh.config import load_config
from cgh.train import prepare_run, train_one_epoch
from cgh.train.rundir import StopSignal


def build(preset: str, out: Path, on: bool, extra: list[str]):
    over = ["train.device=cpu", "train.progress=false", "train.knn_every=0", f"out_dir={out}",
            f"train.online_probe={str(on).lower()}", f"train.tensorboard={str(on).lower()}", *extra]
    if on:
        try:
            import wandb  # noqa: F401

            os.environ.setdefault("WANDB_MODE", "offline")
            os.environ.setdefault("WANDB_SILENT", "true")
            over.append("train.wandb=cgh-overhead")
        except ImportError:
            pass
    run = prepare_run(load_config(preset, over))
    run.save = lambda *a, **k: None  # checkpoint writes are not what is compared
    run.stop = StopSignal()  # never entered: no signal handler, never requested
    run.model.train()
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after one warm-up epoch each)")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    import cgh.train.loop as train

    skip_end: dict[int, float] = {}
    real_end = train.end_epoch

    def timed_end(run, *a, **k):  # the end-of-epoch work, timed apart from the steps
        t0 = time.perf_counter()
        real_end(run, *a, **k)
        skip_end[id(run)] = skip_end.get(id(run), 0.0) + time.perf_counter() - t0

    train.end_epoch = timed_end
    with tempfile.TemporaryDirectory() as tmp:
        off = build(args.preset, Path(tmp) / "off", False, args.overrides)
        on = build(args.preset, Path(tmp) / "on", True, args.overrides)
        spe = off.steps_per_epoch
        times: dict[str, list[float]] = {"off": [], "on": []}
        for epoch in range(args.epochs + 1):
            for name, run in (("off", off), ("on", on)):
                skip_end[id(run)] = 0.0
                t0 = time.perf_counter()
                train_one_epoch(run, epoch, 0)
                step_time = (time.perf_counter() - t0 - skip_end[id(run)]) / spe
                if epoch:  # the first epoch of each warms up
                    times[name].append(step_time)
        step_off, step_on = statistics.median(times["off"]), statistics.median(times["on"])

        # each addition alone, on the run's own tensors
        feats = on.method.teacher_pooled
        labels = torch.randint(0, 10, (feats.shape[0],), device=feats.device)
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            on.probe.step(feats, labels)
        probe_step = (time.perf_counter() - t0) / reps
        record = {"kind": "step", "epoch": 0, "step": 10**6, "lr": 0.1, "momentum": 0.99, "loss": 1.0,
                  **{f"term{i}": float(i) for i in range(12)}, "data_time": 0.01}
        t0 = time.perf_counter()
        for i in range(reps):
            for sink in on.log.sinks:
                sink.write({**record, "step": 10**6 + i})
        log_write = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            on.probe(on.method.teacher)
        probe_eval = time.perf_counter() - t0
        sinks = [type(s).__name__ for s in on.log.sinks]
        on.log.close()
        off.log.close()

    log_every = on.cfg.train.log_every
    rows = [
        ("online probe SGD step, every step", probe_step, probe_step / step_off),
        (f"loggers ({', '.join(sinks) or 'none'}): one step record every {log_every} steps", log_write / log_every,
         log_write / log_every / step_off),
    ]
    total = sum(r[2] for r in rows)
    lines = [
        "# What the online probe and the loggers add to a training step",
        "",
        f"`python benchmarks/monitoring_overhead.py --preset {args.preset} --epochs {args.epochs}"
        + (" " + " ".join(args.overrides) if args.overrides else "") + "`, "
        f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPU cores, the `{args.preset}` preset ({on.cfg.model.arch} width {on.cfg.model.width}, "
        f"batch {on.cfg.optim.batch_size}, {on.cfg.data.image_size} px, {on.cfg.method.name}), {spe} steps an epoch.",
        "",
        f"Median step with everything off: **{step_off * 1000:.1f} ms** ({len(times['off'])} epochs).",
        "",
        "| addition | time per step | share of the step |",
        "|---|---|---|",
        *[f"| {name} | {t * 1000:.3f} ms | {share:.2%} |" for name, t, share in rows],
        f"| **together** | | **{total:.2%}** |",
        "",
        f"End to end, the same epochs interleaved: median step {step_on * 1000:.1f} ms with the probe and loggers on "
        f"against {step_off * 1000:.1f} ms off, a ratio of {step_on / step_off:.3f} (per-epoch ratios: "
        + ", ".join(f"{a / b:.3f}" for a, b in zip(times["on"], times["off"], strict=True))
        + "); on a shared 2-core machine this ratio moves by a few percent from epoch to epoch on its own, which is "
        "why the additions are also timed alone above.",
        "",
        f"Outside the step: the probe's evaluation at each epoch end (the teacher over the test split) took "
        f"{probe_eval:.2f} s, {probe_eval / (step_off * spe):.1%} of an epoch of this preset (a fixed cost per epoch, "
        "like the kNN monitor's; on ImageNet an epoch is 5,000 steps).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
