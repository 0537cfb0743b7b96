"""Do BYOL, SimSiam and SimCLR learn in cgh's engine? Their demo recipes on the synthetic set and on scikit-learn's
handwritten digits (real images), 3 seeds, as the learning tests run the other methods.

Each run is `cgh pretrain demo <dataset> method.name=<m> seed=<s>` with the learning tests' budget
(tests/system/test_learning.py LEARNING_STEPS: 640 steps on the synthetic set, the demo's 40 epochs = 800 steps on the
digits), one torch thread, two runs at a time on the 2 cores, kNN every 2 epochs (the demo preset) or every 5 (the
digits' demo overrides). The
result of a run: the kNN monitor's top-1 at random init and at the end, the gain, and whether the collapse watch
(cgh.model.diagnostics.CollapseWatch; for these methods the feature-std criterion, as they have no relation losses) was
triggered, replayed on the logged steps; the feature std, effective rank and cosine at the end.

    python benchmarks/symmetric_learning.py run                 # appends to results/symmetric_learning.jsonl
    python benchmarks/symmetric_learning.py run --datasets digits --seeds 0 1 2
    python benchmarks/symmetric_learning.py table               # symmetric_learning.md's table
    python benchmarks/symmetric_learning.py run --methods byol --datasets digits --seeds 1 --set optim.lr=0.48
    python benchmarks/symmetric_learning.py screen-table        # the variants run with --set

``--set KEY=VALUE ...`` runs a variant of the recipe (the overrides are appended to the run's, so they may also change
its length: ``--set optim.epochs=80 train.max_steps=0``); variants go to results/symmetric_screen.jsonl, never into
the recipe's table.

Runs already in the results file (same dataset, method, seed, CPU and recipe) are skipped. Each record carries the
recipe it ran (``recipe``: the numbers of the method's optimiser that its demo recipe sets, read from the run's
resolved config), so that a recipe change starts new rows instead of mixing with the old ones; ``table`` prints one
block per recipe, the current one first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from bench_env import cpu_name  # noqa: E402
from cgh.demo import DEMO_DATASETS  # noqa: E402
from relational_study import collapse_step, load_results, pretrain_demo, read_run, run_and_record  # noqa: E402
from tests.system.test_learning import LEARNING_STEPS  # noqa: E402

RESULTS = HERE / "results" / "symmetric_learning.jsonl"
SCREEN = HERE / "results" / "symmetric_screen.jsonl"  # runs with --set: variants of the recipes
METHODS = ("byol", "simsiam", "simclr")
RECIPE_KEYS = ("algorithm", "lr", "weight_decay", "wd_exclude_norm_bias", "warmup_epochs")  # optim.<key>
METHOD_RECIPE_KEYS = ("pred_lr_scale",)  # method.<key>; records made before it was recorded carry none (= 1)


def recipe_of(dataset: str, method: str, extra: tuple[str, ...] = ()) -> dict:
    """The optimiser numbers the demo preset gives ``method`` on ``dataset`` now (what a new run would use), with the
    variant's overrides ``extra``."""
    from cgh.config import load_config

    cfg = load_config("demo", [*DEMO_DATASETS[dataset], f"method.name={method}", *extra])
    return {**{k: getattr(cfg.optim, k) for k in RECIPE_KEYS},
            **{k: getattr(cfg.method, k) for k in METHOD_RECIPE_KEYS}}


def recipe_label(recipe: dict) -> str:
    pred = recipe.get("pred_lr_scale", 1.0)
    return (f"{recipe['algorithm'].upper()} lr {recipe['lr']:g} (at 256), wd {recipe['weight_decay']:g}, "
            f"warm-up {recipe['warmup_epochs']:g} ep" + (f", predictor lr x{pred:g}" if pred != 1.0 else ""))


def run_one(dataset: str, method: str, seed: int, workdir: Path, extra: tuple[str, ...] = (), threads: int = 1) -> dict:
    out = workdir / "-".join([dataset, method, f"s{seed}", f"t{threads}", *(x.replace("=", "") for x in extra)])
    overrides = [*DEMO_DATASETS[dataset], f"method.name={method}", f"seed={seed}", "train.progress=false",
                 f"train.max_steps={LEARNING_STEPS[dataset]}", "train.log_every=5", *extra]
    proc, seconds = pretrain_demo(overrides, out, threads)
    record = {"dataset": dataset, "method": method, "seed": seed, "threads": threads, "cpu": cpu_name(),
              "recipe": recipe_of(dataset, method, extra), "extra": list(extra), "overrides": overrides,
              "seconds": seconds, "returncode": proc.returncode}
    if (run := read_run(proc, out, record)) is None:
        return record
    epochs, steps, knn = run
    last = steps[-1] if steps else {}
    record.update(knn_curve=knn, knn0=knn[0], knn=knn[max(knn)], steps=steps,
                  final={k: v for k, v in last.items() if k.startswith(("std_", "rank_", "cos_", "loss"))},
                  warning=next((x for x in proc.stderr.splitlines() if "features look collapsed" in x), ""))
    return record


def load(path: Path = RESULTS) -> list[dict]:
    """The records; those made before ``method.pred_lr_scale`` was recorded ran at its default, 1."""
    rows = load_results(path)
    for r in rows:
        r["recipe"].setdefault("pred_lr_scale", 1.0)
    return rows


def _key(r: dict) -> str:
    return json.dumps([r["recipe"], r.get("extra", [])], sort_keys=True)


def cmd_run(args) -> None:
    cpu, extra = cpu_name(), tuple(args.set)
    results = SCREEN if extra else RESULTS
    done = {(r["dataset"], r["method"], r["seed"], r["threads"], _key(r)) for r in load(results) if r["cpu"] == cpu}
    todo = [(d, m, s) for d in args.datasets for s in args.seeds for m in args.methods
            if (d, m, s, args.threads, _key({"recipe": recipe_of(d, m, extra), "extra": list(extra)})) not in done]
    print(f"{len(todo)} runs to do on {cpu}", flush=True)
    run_and_record(todo, lambda key: run_one(*key, Path(args.workdir), extra, args.threads), results, args.jobs,
                   lambda r: "  (collapse warning)" if r["warning"] else "")


def cmd_screen_table(args) -> None:
    """One row per variant (dataset, method, threads, overrides): its seeds, kNN at random init, early (epoch 5 on the
    digits, 4 on the synthetic set: the first kNN after the fall these methods show) and at the end, the gains."""
    print("| dataset | method | variant (overrides on the recipe) | threads | seeds | steps | kNN random init | "
          "kNN early | kNN at the end | gain, mean ± std | gain per seed | collapse flagged |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    groups: dict[tuple, list[dict]] = {}
    for r in load(SCREEN):
        groups.setdefault((r["dataset"], r["method"], " ".join(r["extra"]), r["threads"]), []).append(r)
    for (d, m, extra, threads), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["seed"])
        early = [next((v for e, v in r["knn_curve"].items() if int(e) in (4, 5)), float("nan")) for r in rs]
        gains = [r["knn"] - r["knn0"] for r in rs]
        flagged = sum(collapse_step(r) is not None or bool(r["warning"]) for r in rs)
        print(f"| {d} | {m} | {extra or '(the recipe)'} | {threads} | {', '.join(str(r['seed']) for r in rs)} | "
              f"{rs[0]['steps'][-1]['step'] if rs[0]['steps'] else 0} | {statistics.mean(r['knn0'] for r in rs):.1f} | "
              f"{statistics.mean(early):.1f} | {statistics.mean(r['knn'] for r in rs):.1f} | {_ms(gains)} | "
              f"{' '.join(f'{g:+.1f}' for g in gains)} | {flagged}/{len(rs)} |")


def _ms(xs: list[float]) -> str:
    return f"{xs[0]:+.1f}" if len(xs) == 1 else f"{statistics.mean(xs):+.1f} ± {statistics.stdev(xs):.1f}"


def cmd_table(args) -> None:
    rows = load()
    print("| dataset | method | recipe | seeds | kNN random init | kNN at the end | gain, mean ± std | gain per seed | "
          "std | rank | collapse flagged |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for d in DEMO_DATASETS:
        for m in METHODS:
            now = json.dumps(recipe_of(d, m), sort_keys=True)
            mine = [r for r in rows if (r["dataset"], r["method"]) == (d, m)]
            recipes = sorted({json.dumps(r["recipe"], sort_keys=True) for r in mine}, key=lambda k: (k != now, k))
            for key in recipes:
                rs = sorted((r for r in mine if json.dumps(r["recipe"], sort_keys=True) == key),
                            key=lambda r: r["seed"])
                _table_row(d, m, rs, recipe_label(json.loads(key)) + ("" if key == now else " (earlier)"))


def _table_row(d: str, m: str, rs: list[dict], label: str) -> None:
    gains = [r["knn"] - r["knn0"] for r in rs]
    std = statistics.mean(r["final"].get("std_global", float("nan")) for r in rs)
    rank = statistics.mean(r["final"].get("rank_global", float("nan")) for r in rs)
    flagged = sum(collapse_step(r) is not None or bool(r["warning"]) for r in rs)
    print(f"| {d} | {m} | {label} | {', '.join(str(r['seed']) for r in rs)} | "
          f"{statistics.mean(r['knn0'] for r in rs):.1f} | {statistics.mean(r['knn'] for r in rs):.1f} | "
          f"{_ms(gains)} | {' '.join(f'{g:+.1f}' for g in gains)} | {std:.2f} | {rank:.1f} | "
          f"{flagged}/{len(rs)} |")




def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", nargs="+", default=["digits", "synthetic"], choices=list(DEMO_DATASETS))
    r.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--threads", type=int, default=1, help="torch threads per run (the results record it)")
    r.add_argument("--workdir", default="/tmp/cgh-symmetric")
    r.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="a variant: overrides appended to the recipe's (results go to results/symmetric_screen.jsonl)")
    sub.add_parser("table")
    sub.add_parser("screen-table")
    args = p.parse_args()
    {"run": cmd_run, "table": cmd_table, "screen-table": cmd_screen_table}[args.cmd](args)


if __name__ == "__main__":
    main()
