"""Why ReSSL and CGH collapse or stall at small scale: one factor at a time, several seeds, two datasets.

Every run is ``cgh pretrain`` of the ``demo`` preset (an eighth-width ResNet-18, CIFAR stem, batch 64) with the
setting's overrides, on one of two datasets:

    synthetic   the built-in synthetic set (4096 training images), 20 epochs = 1280 steps, the demo as shipped
    digits      scikit-learn's handwritten digits at 32 px (1300 training images, a real dataset that ships with an
                installed package), 40 epochs = 800 steps, queue 512

Each run is one process with ONE torch thread (OMP_NUM_THREADS=1), ``--jobs`` at a time, so that a run's result does
not depend on how many others share the machine (the thread count alone moves a result by several points). The kNN
monitor's epoch-0 value is the same encoder at random initialisation; the last is the result. The diagnostics of
cgh.model.diagnostics (feature std, effective rank, mean cosine, teacher relation entropy) come from the same
metrics.jsonl.

    python benchmarks/relational_study.py run --study screen --jobs 2      # appends to results/relational_study.jsonl
    python benchmarks/relational_study.py table                            # mean +- std per setting, markdown
    python benchmarks/relational_study.py figure --out benchmarks/relational_study.png
    python benchmarks/relational_study.py threads runs/demo-3seeds          # the same runs with 2 threads

Runs already in the results file are skipped, so a study can be stopped and continued.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cgh.demo import DEMO_DATASETS
from cgh.methods import METHODS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "relational_study.jsonl"

DATASETS = DEMO_DATASETS  # synthetic: the demo as shipped; digits: 40 epochs, queue 512 (cgh/demo/__init__.py)

# The demo recipe before the study (cgh 0.1.0's configs/demo.yaml), stated explicitly so that the study does not
# change when the preset does: a one-epoch InfoNCE warm-up for CGH, none for ReSSL, the authors' hypercolumn
# temperatures. Every setting below is BASE plus its own overrides (later ones win).
BASE = ["method.loss_warmup_min_steps=0", "method.ressl_warmup=false", "method.temp_teacher_hyper=0.08",
        "method.temp_student_hyper=0.08"]

# name -> overrides of BASE, applied after the dataset's; each varies one factor from "base", or adds one to the
# warm-up that stops the collapse
SETTINGS = {
    "base": [],
    "warmup200": ["method.loss_warmup_min_steps=200", "method.ressl_warmup=true"],
    "warmup400": ["method.loss_warmup_min_steps=400", "method.ressl_warmup=true"],
    "tau_t0.02": ["method.temp_teacher_global=0.02", "method.temp_teacher_hyper=0.04"],
    "tau_t0.07": ["method.temp_teacher_global=0.07", "method.temp_teacher_hyper=0.07"],
    "no_head_bn": ["method.head_bn=false"],
    "lr_x2": ["optim.lr=0.24"],
    "lr_x0.5": ["optim.lr=0.06"],
    "ema0.996": ["method.momentum=0.996"],
    "ema0.95": ["method.momentum=0.95"],
    "queue256": ["method.queue_size=256"],
    "queue2048": ["method.queue_size=2048"],
    "width16": ["model.width=16"],
    "batch128": ["optim.batch_size=128", "model.bn_splits=4"],
    "hyper_bn_plain": ["method.hyper_bn=plain"],
    # CGH's own factors, on top of the warm-up that stops the collapse
    "warmup600": ["method.loss_warmup_min_steps=600", "method.ressl_warmup=true"],
    "warmup400+th0.04": ["method.loss_warmup_min_steps=400", "method.ressl_warmup=true",
                         "method.temp_teacher_hyper=0.04"],
    "warmup400+tau_t0.02": ["method.loss_warmup_min_steps=400", "method.ressl_warmup=true",
                            "method.temp_teacher_global=0.02", "method.temp_teacher_hyper=0.04"],
    "warmup600+th0.04": ["method.loss_warmup_min_steps=600", "method.ressl_warmup=true",
                         "method.temp_teacher_hyper=0.04"],
    "warmup600+temps_ressl": ["method.loss_warmup_min_steps=600", "method.ressl_warmup=true",
                              "method.temp_teacher_hyper=0.04", "method.temp_student_hyper=0.1"],
    "warmup600+same_context": ["method.loss_warmup_min_steps=600", "method.ressl_warmup=true", "method.context=same"],
    "warmup400+temps_ressl": ["method.loss_warmup_min_steps=400", "method.ressl_warmup=true",
                              "method.temp_teacher_hyper=0.04", "method.temp_student_hyper=0.1"],
    "warmup400+hyper_bn_plain": ["method.loss_warmup_min_steps=400", "method.ressl_warmup=true",
                                 "method.hyper_bn=plain"],
}

STUDIES = {
    # one seed, every factor, the two relational methods: which factors matter at all
    "screen": {"datasets": ["digits"], "methods": ["ressl", "cgh"], "seeds": [0],
               "settings": [s for s in SETTINGS if not s.startswith("warmup") or s in ("warmup200", "warmup400")]},
    # what makes CGH trail ReSSL once the collapse is gone
    "cgh_factors": {"datasets": ["digits"], "methods": ["cgh"], "seeds": [0],
                    "settings": ["warmup400+th0.04", "warmup400+hyper_bn_plain", "warmup400+tau_t0.02",
                                 "warmup600"]},
    "cgh_temps": {"datasets": ["digits"], "methods": ["cgh"], "seeds": [0], "settings": ["warmup400+temps_ressl"]},
    # the candidate recipes, 3 seeds, both datasets (MoCo-v2 ignores every override of these settings)
    "confirm": {"datasets": ["digits", "synthetic"], "methods": ["mocov2", "ressl", "cgh"], "seeds": [0, 1, 2],
                "settings": ["warmup600"], "extra": {"cgh": ["warmup600+temps_ressl"]}},
    # the recipe before the study, 3 seeds on the digits, seed 0 on the synthetic set
    "base_seeds": {"datasets": ["digits"], "methods": ["ressl", "cgh"], "seeds": [0, 1, 2], "settings": ["base"]},
    "base_synthetic": {"datasets": ["synthetic"], "methods": ["ressl", "cgh"], "seeds": [0], "settings": ["base"]},
    # does CGH trail ReSSL on the synthetic set because of the cross-context pairing itself?
    "cgh_context": {"datasets": ["synthetic"], "methods": ["cgh"], "seeds": [0, 1, 2],
                    "settings": ["warmup600+same_context"]},
    "warmup600_ressl": {"datasets": ["digits"], "methods": ["ressl", "mocov2"], "seeds": [0],
                        "settings": ["warmup600"]},
}

DIAGNOSTICS = ("std_global", "cos_global", "rank_global", "ent_global", "std_hyper", "ent_hyper")


def run_one(dataset: str, setting: str, method: str, seed: int, workdir: Path) -> dict:
    out = workdir / f"{dataset}-{setting}-{method}-s{seed}"
    overrides = [*DATASETS[dataset], *BASE, *SETTINGS[setting], f"method.name={method}", f"seed={seed}",
                 f"aug.teacher_view={'strong' if method == 'mocov2' else 'weak'}", "train.progress=false"]
    proc, seconds = pretrain_demo(overrides, out)
    record = {"dataset": dataset, "setting": setting, "method": method, "seed": seed, "overrides": overrides,
              "seconds": seconds, "returncode": proc.returncode}
    if (run := read_run(proc, out, record)) is None:
        return record
    epochs, steps, knn = run
    last = max(e for e in epochs if e > 0)
    record.update(knn0=knn[0], knn=knn[max(knn)], knn_curve=knn, collapse_warning="warning: the features look "
                  "collapsed" in proc.stderr, final={k: epochs[last][k] for k in (*DIAGNOSTICS, "loss", "relation",
                                                                                  "hyper", "csist")
                                                     if k in epochs[last]}, steps=steps)
    return record


def pretrain_demo(overrides: list[str], out: Path, threads: int = 1) -> tuple[subprocess.CompletedProcess, float]:
    """``cgh pretrain demo *overrides out_dir=out --overwrite`` with ``threads`` torch threads, run from the
    repository: the process and its seconds (the learning studies' one way of starting a run)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "pretrain", "demo", *overrides, f"out_dir={out}",
                           "--overwrite"], env=env, capture_output=True, text=True, cwd=HERE.parent)
    return proc, round(time.time() - t0, 1)


def read_run(proc: subprocess.CompletedProcess, out: Path, record: dict) -> tuple[dict, list, dict] | None:
    """A finished run's epoch records, step records and kNN curve (the studies' one way of reading a run); None, with
    the end of its stderr in ``record["error"]``, when it failed (exit 3, a collapse stop, is a finished run)."""
    if proc.returncode not in (0, 3):
        record["error"] = proc.stderr[-2000:]
        return None
    epochs, steps = read_metrics(out)
    return epochs, steps, knn_curve(epochs)


def knn_curve(epochs: dict[int, dict]) -> dict[int, float]:
    """The kNN monitor's top-1 by epoch (epoch 0: the random initialisation)."""
    return {e: r["knn_top1"] for e, r in epochs.items() if "knn_top1" in r}


def load_results(path: Path) -> list[dict]:
    """The records of a results file that did not end in an error (none if it does not exist yet)."""
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.open()) if "error" not in r]


def read_metrics(run_dir: Path) -> tuple[dict[int, dict], list[dict]]:
    """A run's epoch records by epoch, and its step records without lr, momentum and data time (metrics.jsonl)."""
    epochs, steps = {}, []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "epoch":
            epochs[r["epoch"]] = r
        elif r.get("kind") == "step":
            steps.append({k: v for k, v in r.items() if k not in ("kind", "lr", "momentum", "data_time")})
    return epochs, steps


def compact(x):
    """Floats to 5 significant digits (the diagnostics and kNN need no more), so the results file stays small."""
    if isinstance(x, float):
        return float(f"{x:.5g}")
    if isinstance(x, dict):
        return {k: compact(v) for k, v in x.items()}
    if isinstance(x, list):
        return [compact(v) for v in x]
    return x


def done_keys() -> set:
    if not RESULTS.exists():
        return set()
    return {(r["dataset"], r["setting"], r["method"], r["seed"]) for r in map(json.loads, RESULTS.open())
            if "error" not in r}


def cmd_run(args) -> None:
    study = STUDIES[args.study]
    todo = [(d, s, m, seed) for d in study["datasets"] for seed in study["seeds"] for m in study["methods"]
            for s in study["settings"] + study.get("extra", {}).get(m, [])]
    if args.shard:  # "i/n": every n-th run from the i-th, so that n runners share a study without overlap
        i, n = map(int, args.shard.split("/"))
        todo = todo[i::n]
    done = done_keys()
    todo = [k for k in todo if k not in done]
    print(f"{len(todo)} runs to do ({len(done)} already in {RESULTS})", flush=True)
    workdir = Path(args.workdir)
    run_and_record(todo, lambda key: run_one(*key, workdir), RESULTS, args.jobs, lambda r: "  " + " ".join(
        f"{k} {v:.2f}" for k, v in r["final"].items() if k in DIAGNOSTICS))


def run_and_record(keys: list[tuple], run, results: Path, jobs: int, summary) -> None:
    """``run(key)`` for every key, ``jobs`` at a time; each record is appended to ``results`` (compacted) as it ends,
    and a line printed: the key, kNN from random init to the end, ``summary(record)``, the seconds."""
    results.parent.mkdir(exist_ok=True)

    def job(key):
        r = run(key)
        with results.open("a") as f:
            f.write(json.dumps(compact(r)) + "\n")
        msg = f"error {r['returncode']}" if "error" in r else f"kNN {r['knn0']:.1f} -> {r['knn']:.1f}{summary(r)}"
        print(f"{'/'.join(map(str, key))}: {msg} ({r['seconds']:.0f} s)", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(job, keys))


def load() -> list[dict]:
    return load_results(RESULTS)


def _ms(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.1f}"
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"


RELATION_TERMS = {name: method.relation_terms for name, method in METHODS.items()}  # compared with ln K


def collapse_step(r: dict) -> int | None:
    """The step at which the loop's CollapseWatch reports a collapse, replayed on the run's logged steps (runs made
    before the loss criterion existed did not print it)."""
    from cgh.model.diagnostics import CollapseWatch

    queue = next((int(o.split("=")[1]) for o in reversed(r["overrides"]) if o.startswith("method.queue_size=")), 1024)
    watch = CollapseWatch(queue, RELATION_TERMS[r["method"]])
    for values in r["steps"]:
        if watch.update(values["step"], values):
            return values["step"]
    return None


def cmd_table(args) -> None:
    rows = load()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["setting"], r["method"]), []).append(r)
    print("| dataset | setting | method | seeds | kNN random init | kNN after | gain (min) | std | cos | ent | "
          "collapse flagged |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {s: i for i, s in enumerate(SETTINGS)}
    for (d, s, m), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][2])):
        gains = [r["knn"] - r["knn0"] for r in rs]
        diag = {k: statistics.mean(r["final"][k] for r in rs) if all(k in r["final"] for r in rs) else math.nan
                for k in ("std_global", "cos_global", "ent_global")}
        print(f"| {d} | {s} | {m} | {len(rs)} | {_ms([r['knn0'] for r in rs])} | {_ms([r['knn'] for r in rs])} | "
              f"{_ms(gains)} ({min(gains):+.1f}) | {diag['std_global']:.2f} | {diag['cos_global']:.2f} | "
              f"{diag['ent_global']:.2f} | {sum(collapse_step(r) is not None for r in rs)}/{len(rs)} |")


def cmd_figure(args) -> None:
    """kNN, feature std, teacher entropy and relation loss - ln K against steps, seed 0, for a few settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in load() if r["seed"] == 0 and r["setting"] in args.settings]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    fig, axes = plt.subplots(len(datasets), 4, figsize=(17, 3.6 * len(datasets)), squeeze=False)
    colours = {m: c for m, c in zip(("mocov2", "ressl", "cgh"), ("tab:green", "tab:blue", "tab:red"), strict=True)}
    styles = dict(zip(args.settings, ("-", "--", ":", "-."), strict=False))
    for row, d in zip(axes, datasets, strict=True):
        for r in (r for r in rows if r["dataset"] == d):
            steps_per_epoch = r["steps"][-1]["step"] / max(int(e) for e in r["knn_curve"])
            kw = dict(color=colours[r["method"]], ls=styles[r["setting"]], label=f"{r['method']} {r['setting']}")
            knn = sorted((int(e) * steps_per_epoch, v) for e, v in r["knn_curve"].items())
            row[0].plot(*zip(*knn, strict=True), marker=".", **kw)
            st = [x["step"] for x in r["steps"]]
            row[1].plot(st, [x.get("std_global", math.nan) for x in r["steps"]], **kw)
            row[2].plot(st, [x.get("ent_global", math.nan) for x in r["steps"]], **kw)
            queue = next((int(o.split("=")[1]) for o in reversed(r["overrides"]) if o.startswith("method.queue_size=")),
                         1024)
            for term in RELATION_TERMS[r["method"]][-1:]:  # ReSSL's relation, CGH's csist (global student)
                row[3].plot(st, [x[term] - math.log(queue) for x in r["steps"]], **kw)
        for ax, title in zip(row, ("kNN top-1 (%)", "global feature std (x sqrt D)", "teacher entropy / ln K",
                                   "relation loss - ln K (ReSSL; CGH csist)"), strict=True):
            ax.set_title(f"{d}: {title}", fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        row[3].set_yscale("symlog", linthresh=1e-3)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def cmd_threads(args) -> None:
    """The same runs with 2 threads (a `cgh demo --seeds N` directory) against the study's 1-thread runs."""
    by_key = {(r["dataset"], r["method"], r["seed"]): r for r in load() if r["setting"] == args.setting}
    print("| dataset | method | seed | kNN, 1 thread | kNN, 2 threads | 2 - 1 |")
    print("|---|---|---:|---:|---:|---:|")
    diffs: dict[str, list[float]] = {}
    for run in sorted(Path(args.demo, "runs").iterdir()):
        method, _, seed = run.name.rpartition("-s")
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        knn = [r["knn_top1"] for r in records if r.get("kind") == "epoch" and "knn_top1" in r]
        ref = by_key.get((args.dataset, method, int(seed)))
        if ref is None:
            continue
        d = knn[-1] - ref["knn"]
        diffs.setdefault(method, []).append(d)
        print(f"| {args.dataset} | {method} | {seed} | {ref['knn']:.1f} | {knn[-1]:.1f} | {d:+.1f} |")
    for method, ds in diffs.items():
        seeds = [r["knn"] for k, r in by_key.items() if k[0] == args.dataset and k[1] == method]
        print(f"\n{method}: mean |2 - 1| = {statistics.mean(abs(x) for x in ds):.1f} points; std over seeds "
              f"(1 thread) = {statistics.stdev(seeds):.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--study", choices=list(STUDIES), required=True)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--workdir", default="/tmp/cgh-relational-study")
    r.add_argument("--shard", default="", help="i/n: run only every n-th run of the study, from the i-th")
    sub.add_parser("table")
    f = sub.add_parser("figure")
    f.add_argument("--out", default=str(HERE / "relational_study.png"))
    f.add_argument("--settings", nargs="+", default=["base", "warmup600"])
    t = sub.add_parser("threads", help="compare a `cgh demo --seeds N` run (2 threads) with the study's runs")
    t.add_argument("demo", help="the demo's output directory")
    t.add_argument("--dataset", default="synthetic")
    t.add_argument("--setting", default="warmup600", help="the study's setting that equals the demo's recipe")
    args = p.parse_args()
    {"run": cmd_run, "table": cmd_table, "figure": cmd_figure, "threads": cmd_threads}[args.cmd](args)


if __name__ == "__main__":
    main()
