"""Which method to pick at small scale, and for how long to train: the six methods at budgets where ranks settle, on
two real datasets, several seeds, kNN and both linear probes (issue 24).

Every run is ``cgh pretrain demo`` (an eighth-width ResNet-18, CIFAR stem, batch 64, each method's demo recipe:
``recipes:`` in cgh/configs/demo.yaml for BYOL, SimSiam and SimCLR, the preset's body for the others) with
``optim.epochs`` set to the budget, on one of two real datasets:

    digits   scikit-learn's handwritten digits at 32 px (1300 training, 497 test images; 20 steps an epoch), queue 512
    photos   patches of the ten photographs that ship with scikit-learn, matplotlib and scikit-image
             (benchmarks/photo_patches.py: 1148 training patches from the left of each photograph, 553 validation
             patches from the right, 17 steps an epoch), read as a user's train/ + val/ folder, queue 512

One torch thread per run, ``--jobs`` runs at a time (the results record the threads and the CPU). After training:
``cgh linear`` on the frozen student's global features and on its hypercolumn (layer2-4 pooled and stacked), the small
protocol (100 epochs on features extracted once, the final epoch's top-1, never the best), and the same two probes at
the random initialisation the run started from (``--random-init``). The kNN monitor (k 20, T 0.07, every 5 epochs, 10
at 200 epochs) gives the kNN-vs-epoch curve; its epoch 0 is the random initialisation. The diagnostics (feature std,
effective rank, teacher relation entropy) come from the run's metrics.jsonl, and "collapse flagged" replays the
training loop's collapse watch on the logged steps.

    python benchmarks/long_budget.py run --study core --jobs 2    # appends to results/long_budget.jsonl
    python benchmarks/long_budget.py table                        # long_budget.md's tables
    python benchmarks/long_budget.py run --study ablation         # CGH's factors (SETTINGS), one at a time
    python benchmarks/long_budget.py ablation-table
    python benchmarks/long_budget.py figure                       # long_budget.png: the kNN-vs-epoch curves

Runs already in the results file (dataset, method, budget, seed, threads) are skipped, so a study can be stopped and
continued; ``--shard i/n`` splits one between machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_env import cpu_name  # noqa: E402
from photo_patches import build as build_photos  # noqa: E402
from relational_study import (  # noqa: E402
    collapse_step,
    load_results,
    pretrain_demo,
    read_run,
    run_and_record,
)

RESULTS = HERE / "results" / "long_budget.jsonl"
METHODS = ("mocov2", "ressl", "cgh", "simclr", "byol", "simsiam")
BUDGETS = (40, 120, 200)  # epochs
DATASETS = ("digits", "photos")
PROBES = ("global", "hypercolumn")
DIAGNOSTICS = ("std_global", "rank_global", "cos_global", "ent_global", "std_hyper", "ent_hyper")

# CGH's own factors at 32 px, one at a time on top of the demo recipe ("recipe": no override). At 32 px layer4 is 4x4
# and layer3 8x8; the demo stacks layer3 + layer4 at layer4's size (docs/method.md#hypercolumn-head).
SETTINGS = {
    "recipe": [],
    "layers234": ["method.hyper_layers=[layer2,layer3,layer4]"],  # the three stages (layer2 16x16)
    "target_first": ["method.hyper_target=first"],                # stacked at layer3's 8x8, not layer4's 4x4
    "avgpool": ["method.hyper_resize=avgpool"],                   # adaptive average pooling instead of bilinear
    "hyper_temps_ressl": ["method.temp_teacher_hyper=0.04", "method.temp_student_hyper=0.1"],  # global's / ReSSL's
    "hyper_bn_plain": ["method.hyper_bn=plain"],                  # one BN over the batch in the hypercolumn head
    "no_csist": ["method.global_from_hyper=false"],               # only L_hyper: hypercolumn student <- global teacher
    "no_cl_hyper": ["method.hyper_from_global=false"],            # only L_csist: global student <- hypercolumn teacher
    "csist_heavy": ["method.hyper_weight=0.25", "method.csist_weight=0.75"],  # the directions' weights (authors'
    "hyper_heavy": ["method.hyper_weight=0.75", "method.csist_weight=0.25"],  # 0.5 / 0.5), their sum kept at 1
    "same_context": ["method.context=same"],                      # each context from its own teacher (Tab. 5 in kind)
    "floor300": ["method.loss_warmup_min_steps=300"],             # half the demo's warm-up floor of 600 steps
    "floor1200": ["method.loss_warmup_min_steps=1200"],           # twice it
}

# In the order they were run: what each answers. A study is datasets x methods x budgets x seeds (x settings).
STUDIES = {
    # the question: do CGH and ReSSL part ways with the budget on real photographs?
    "core": {"datasets": ["photos"], "methods": ["mocov2", "ressl", "cgh"], "budgets": [40, 120], "seeds": [0, 1, 2]},
    # the same on the digits
    "digits": {"datasets": ["digits"], "methods": ["mocov2", "ressl", "cgh"], "budgets": [120], "seeds": [0, 1, 2]},
    # its ReSSL and CGH first, seed by seed (what a session's CPU time allows first)
    "digits_relational": {"datasets": ["digits"], "methods": ["ressl", "cgh"], "budgets": [120], "seeds": [0, 1, 2]},
    # the symmetric methods on the digits at three times the learning tests' budget (at 40 epochs BYOL and SimSiam
    # end level with their random initialisation there: symmetric_learning.md)
    "digits_symmetric": {"datasets": ["digits"], "methods": ["byol", "simsiam", "simclr"], "budgets": [120],
                         "seeds": [0, 1, 2]},
    # the longest budget
    "long": {"datasets": ["photos"], "methods": ["ressl", "cgh", "mocov2"], "budgets": [200], "seeds": [0, 1, 2]},
    # its first seed, for ReSSL and CGH (what this session's CPU time allowed)
    "long_seed0": {"datasets": ["photos"], "methods": ["ressl", "cgh"], "budgets": [200], "seeds": [0]},
    # the symmetric methods at the middle budget
    "symmetric": {"datasets": ["photos"], "methods": ["simclr", "byol", "simsiam"], "budgets": [120],
                  "seeds": [0, 1, 2]},
    # why CGH's second context helps or hurts at 32 px: one factor at a time, one seed first
    "ablation": {"datasets": ["photos"], "methods": ["cgh"], "budgets": [120], "seeds": [0],
                 "settings": ["layers234", "target_first", "hyper_temps_ressl", "no_csist", "no_cl_hyper",
                              "same_context", "hyper_bn_plain", "avgpool", "floor300", "floor1200"]},
    # the one factor whose seed-0 run reached ReSSL's kNN, on the other two seeds
    "hyper_bn": {"datasets": ["photos"], "methods": ["cgh"], "budgets": [120], "seeds": [1, 2],
                 "settings": ["hyper_bn_plain"]},
    # the directions' weights, and the factors whose seed-0 run moved kNN most or asks the paper's questions (which
    # stages, which direction, which context, which temperatures), on three seeds
    "ablation3": {"datasets": ["photos"], "methods": ["cgh"], "budgets": [120], "seeds": [0, 1, 2],
                  "settings": ["csist_heavy", "hyper_heavy", "layers234", "no_cl_hyper", "same_context",
                               "hyper_temps_ressl"]},
    # the factors whose seed-0 runs are in "ablation" (the target's size and resize mode, the warm-up floor, L_hyper
    # alone) on the other two seeds
    "ablation_seeds": {"datasets": ["photos"], "methods": ["cgh"], "budgets": [120], "seeds": [1, 2],
                       "settings": ["target_first", "avgpool", "floor300", "floor1200", "no_csist"]},
    # the symmetric methods at the short budget, and all six on the digits at it
    "short_symmetric": {"datasets": ["photos"], "methods": ["simclr", "byol", "simsiam"], "budgets": [40],
                        "seeds": [0, 1, 2]},
    "digits_short": {"datasets": ["digits"], "methods": list(METHODS), "budgets": [40], "seeds": [0, 1, 2]},
    # the symmetric methods at the longest budget
    "long_symmetric": {"datasets": ["photos"], "methods": ["simclr", "byol", "simsiam"], "budgets": [200],
                       "seeds": [0, 1, 2]},
    # the digits at the longest budget: the queue-based methods first, then the slower symmetric ones
    "digits_long": {"datasets": ["digits"], "methods": ["ressl", "cgh", "mocov2"], "budgets": [200],
                    "seeds": [0, 1, 2]},
    "digits_long_symmetric": {"datasets": ["digits"], "methods": ["simclr", "simsiam", "byol"], "budgets": [200],
                              "seeds": [0, 1, 2]},
}


def dataset_overrides(dataset: str, photos_root: Path) -> list[str]:
    if dataset == "digits":
        return ["data.name=digits", "method.queue_size=512"]
    return ["data.name=folder", f"data.path={photos_root}", "method.queue_size=512"]


def probe(run_dir: Path, features: str, random_init: bool, threads: int) -> dict:
    """``cgh linear`` on the run's student (or its random initialisation): final and best top-1 of the probe."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "cgh.cli", "linear", str(run_dir), "--features", features, "--protocol", "small",
           "--json", "--no-progress", *(["--random-init"] if random_init else [])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-1500:]}")
    m = json.loads(proc.stdout)["metrics"]
    return {"final": m["final_top1"], "best": m["best_top1"]}


def run_one(dataset: str, method: str, epochs: int, seed: int, setting: str, workdir: Path, photos_root: Path,
            threads: int) -> dict:
    out = workdir / (f"{dataset}-{method}-e{epochs}-s{seed}" + ("" if setting == "recipe" else f"-{setting}"))
    knn_every = 10 if epochs >= 200 else 5
    overrides = [*dataset_overrides(dataset, photos_root), f"method.name={method}", f"seed={seed}",
                 f"optim.epochs={epochs}", f"train.knn_every={knn_every}", "train.log_every=10",
                 "train.progress=false", "train.ckpt_every=1000", *SETTINGS[setting]]
    proc, seconds = pretrain_demo(overrides, out, threads)
    record = {"dataset": dataset, "method": method, "epochs": epochs, "seed": seed, "setting": setting,
              "threads": threads,
              "cpu": cpu_name(), "overrides": [o.replace(str(photos_root), "PHOTOS") for o in overrides],
              "seconds": seconds, "returncode": proc.returncode}
    if (run := read_run(proc, out, record)) is None:
        return record
    epochs_rec, steps, knn = run
    last = max(e for e in epochs_rec if e > 0)
    # the collapse watch replayed here on the steps logged every 10, not the steps themselves: they are 3/4 of a
    # record's size and nothing else reads them (the run directory keeps them)
    record.update(knn0=knn[0], knn=knn[max(knn)], knn_curve=knn,
                  collapse_step=collapse_step({"method": method, "overrides": overrides, "steps": steps}),
                  final={k: epochs_rec[last][k] for k in (*DIAGNOSTICS, "loss") if k in epochs_rec[last]},
                  warning=next((x for x in proc.stderr.splitlines() if "features look collapsed" in x), ""),
                  linear={f: probe(out, f, False, threads) for f in PROBES},
                  linear0={f: probe(out, f, True, threads) for f in PROBES})
    return record


def load() -> list[dict]:
    """The results; runs of the recipe made before settings existed carry none."""
    return [{"setting": "recipe", **r} for r in load_results(RESULTS)]


def cmd_run(args) -> None:
    study = STUDIES[args.study]
    photos_root = Path(args.workdir) / "photos"
    if "photos" in study["datasets"]:
        build_photos(photos_root)
    todo = [(d, m, e, s, x) for d in study["datasets"] for e in study["budgets"] for s in study["seeds"]
            for m in study["methods"] for x in study.get("settings", ["recipe"])]
    if args.shard:
        i, n = map(int, args.shard.split("/"))
        todo = todo[i::n]
    done = {(r["dataset"], r["method"], r["epochs"], r["seed"], r["setting"]) for r in load()
            if r["threads"] == args.threads}
    todo = [k for k in todo if k not in done]
    print(f"{len(todo)} runs to do ({len(done)} in {RESULTS})", flush=True)
    workdir = Path(args.workdir) / "runs"
    run_and_record(todo, lambda key: run_one(*key, workdir, photos_root, args.threads), RESULTS, args.jobs,
                   lambda r: f"  linear global {r['linear']['global']['final']:.1f}, "
                             f"hypercolumn {r['linear']['hypercolumn']['final']:.1f}")


def _ms(xs: list[float], sign: str = "") -> str:
    if len(xs) == 1:
        return f"{xs[0]:{sign}.1f}"
    return f"{statistics.mean(xs):{sign}.1f} ± {statistics.stdev(xs):.1f}"


def groups(setting: str = "recipe") -> dict[tuple, list[dict]]:
    g: dict[tuple, list[dict]] = {}
    for r in load():
        if r["setting"] == setting:
            g.setdefault((r["dataset"], r["epochs"], r["method"]), []).append(r)
    for rs in g.values():
        rs.sort(key=lambda r: r["seed"])
    return g


def cmd_table(args) -> None:
    g = groups()
    print("| dataset | epochs | method | seeds | kNN random init | kNN | kNN gain per seed | linear global "
          "(random init) | linear hypercolumn (random init) | std | rank | collapse flagged |")
    print("|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for d in DATASETS:
        for e in BUDGETS:
            for m in METHODS:
                rs = g.get((d, e, m))
                if not rs:
                    continue
                lin = {f: [r["linear"][f]["final"] for r in rs] for f in PROBES}
                lin0 = {f: statistics.mean(r["linear0"][f]["final"] for r in rs) for f in PROBES}
                std = statistics.mean(r["final"].get("std_global", float("nan")) for r in rs)
                rank = statistics.mean(r["final"].get("rank_global", float("nan")) for r in rs)
                flagged = sum(r["collapse_step"] is not None or bool(r["warning"]) for r in rs)
                print(f"| {d} | {e} | {m} | {', '.join(str(r['seed']) for r in rs)} | "
                      f"{statistics.mean(r['knn0'] for r in rs):.1f} | {_ms([r['knn'] for r in rs])} | "
                      f"{' '.join(format(r['knn'] - r['knn0'], '+.1f') for r in rs)} | "
                      f"{_ms(lin['global'])} ({lin0['global']:.1f}) | {_ms(lin['hypercolumn'])} "
                      f"({lin0['hypercolumn']:.1f}) | {std:.2f} | {rank:.1f} | {flagged}/{len(rs)} |")
    print("\nCGH against ReSSL, seed by seed (kNN; linear global; linear hypercolumn):\n")
    print("| dataset | epochs | seeds | CGH - ReSSL, kNN | linear global | linear hypercolumn |")
    print("|---|---:|---|---|---|---|")
    for d in DATASETS:
        for e in BUDGETS:
            cgh = {r["seed"]: r for r in g.get((d, e, "cgh"), [])}
            ressl = {r["seed"]: r for r in g.get((d, e, "ressl"), [])}
            seeds = sorted(set(cgh) & set(ressl))
            if not seeds:
                continue

            def diffs(f, seeds=seeds, cgh=cgh, ressl=ressl):
                return [f(cgh[s]) - f(ressl[s]) for s in seeds]

            cols = [diffs(lambda r: r["knn"])] + [diffs(lambda r, p=p: r["linear"][p]["final"]) for p in PROBES]
            print(f"| {d} | {e} | {', '.join(map(str, seeds))} | " + " | ".join(
                f"{_ms(c, '+')} ({' '.join(f'{x:+.1f}' for x in c)})" for c in cols) + " |")


def cmd_ablation_table(args) -> None:
    """CGH's factors against the recipe and against ReSSL on the same seeds, with the diagnostics at the end."""
    base = groups()
    print("| dataset | epochs | setting | seeds | kNN | - CGH recipe | - ReSSL | linear global (- recipe) | "
          "linear hypercolumn (- recipe) | std global | std hyper | ent global | ent hyper | collapse flagged |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for setting in SETTINGS:
        for (d, e, m), rs in sorted(groups(setting).items()):
            if m != "cgh":
                continue
            ref = {r["seed"]: r for r in base.get((d, e, "cgh"), [])} if setting != "recipe" else None
            ressl = {r["seed"]: r for r in base.get((d, e, "ressl"), [])}

            def vs(table, f, rs=rs, per_seed=False):
                xs = [f(r) - f(table[r["seed"]]) for r in rs if r["seed"] in table] if table is not None else []
                if not xs:
                    return "-"
                return _ms(xs, "+") + (f" ({' '.join(f'{x:+.1f}' for x in xs)})" if per_seed and len(xs) > 1 else "")

            def diag(k, rs=rs):
                return statistics.mean(r["final"].get(k, float("nan")) for r in rs)

            lin = {f: (lambda r, f=f: r["linear"][f]["final"]) for f in PROBES}
            flagged = sum(r["collapse_step"] is not None or bool(r["warning"]) for r in rs)
            print(f"| {d} | {e} | {setting} | {', '.join(str(r['seed']) for r in rs)} | "
                  f"{_ms([r['knn'] for r in rs])} | {vs(ref, lambda r: r['knn'], per_seed=True)} | "
                  f"{vs(ressl, lambda r: r['knn'], per_seed=True)} | "
                  + " | ".join(f"{_ms([lin[f](r) for r in rs])} ({vs(ref, lin[f])})" for f in PROBES)
                  + f" | {diag('std_global'):.2f} | {diag('std_hyper'):.2f} | {diag('ent_global'):.2f} | "
                  f"{diag('ent_hyper'):.2f} | {flagged}/{len(rs)} |")


def cmd_figure(args) -> None:
    """The kNN-vs-epoch curves (mean over seeds, the band min-max): a row per dataset, a panel per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = groups()
    rows = [d for d in DATASETS if any(k[0] == d for k in g)]
    cols = [e for e in BUDGETS if any(k[1] == e for k in g)]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(5 * len(cols), 3.8 * len(rows)), squeeze=False)
    panels = {(d, e): axes[i][j] for i, d in enumerate(rows) for j, e in enumerate(cols)}
    colours = dict(zip(METHODS, ("tab:green", "tab:blue", "tab:red", "tab:purple", "tab:orange", "tab:brown"),
                       strict=True))
    for (d, e), ax in panels.items():
        if not any(k[:2] == (d, e) for k in g):
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{d}, {e} epochs: not run", ha="center", va="center", transform=ax.transAxes)
            continue
        for m in METHODS:
            rs = g.get((d, e, m))
            if not rs:
                continue
            xs = sorted(set.intersection(*(set(map(int, r["knn_curve"])) for r in rs)))
            ys = [[r["knn_curve"][str(x)] for r in rs] for x in xs]  # JSON keys
            ax.plot(xs, [statistics.mean(y) for y in ys], color=colours[m], marker=".", label=f"{m} ({len(rs)} seeds)")
            ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], color=colours[m], alpha=0.15)
        ax.set_title(f"{d}, {e} epochs: kNN top-1 (%)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--study", choices=list(STUDIES), required=True)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--workdir", default="/tmp/cgh-long-budget", help="runs/ and the photo folder photos/ go here")
    r.add_argument("--shard", default="", help="i/n: every n-th run of the study, from the i-th")
    sub.add_parser("table")
    sub.add_parser("ablation-table")
    f = sub.add_parser("figure")
    f.add_argument("--out", default=str(HERE / "long_budget.png"))
    args = p.parse_args()
    {"run": cmd_run, "table": cmd_table, "ablation-table": cmd_ablation_table, "figure": cmd_figure}[args.cmd](args)


if __name__ == "__main__":
    main()
