"""What the suite's statistical tests and the collapse detector see on other seeds, thread counts and machines.

A one-thread run on another CPU (other SIMD kernels, another order of summation) follows another trajectory: for a
test that compares a trained number with a threshold, another machine is another seed. This script measures the
distributions those thresholds must hold across, and keeps every run's logged steps so that the collapse detector
(cgh.model.diagnostics.CollapseWatch) can be replayed on them:

    learning     the runs of tests/system/test_learning.py exactly as the test makes them (its own run_args), per
                 dataset (synthetic, digits) and method (mocov2, ressl, cgh); the synthetic runs at one thread go
                 on to the full 1280 steps (the test stops at 640 = epoch 10, whose kNN the full run logs too), so
                 that the detector also sees the relation losses in charge after the 600-step warm-up
    old_recipe   the demo recipe before benchmarks/relational_study.md (a one-epoch InfoNCE warm-up, none for
                 ReSSL): CGH and ReSSL collapse or stall on the digits
    provoked     tests/system/test_collapse.py's provoked collapse (its own COLLAPSE_ARGS: the old recipe without BN
                 in the projection heads), CGH and ReSSL

Every group runs on the digits (scikit-learn's, real images) and on the synthetic set, seeds 0-4 with one torch
thread (two runs at a time on the 2 cores) and seeds 0-1 with two threads (one run at a time). Every run logs every 5
steps (train.log_every=5; the logging interval changes no number of a run: measured, identical losses at step 60 with
5 and 20).

    python benchmarks/portability.py run --group provoked            # appends to results/portability.jsonl
    python benchmarks/portability.py run --group all
    python benchmarks/portability.py margins                         # the learning tests' gains against their margins
    python benchmarks/portability.py detector                        # the confusion table of CollapseWatch
    python benchmarks/portability.py detector --sweep                # how far each threshold is from changing it

Runs already in the results file (same group, dataset, method, seed, threads and CPU) are skipped.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]  # bench_env, and the tests' own run definitions

from bench_env import cpu_name  # noqa: E402
from cgh.demo import DEMO_DATASETS  # noqa: E402
from cgh.methods import METHODS  # noqa: E402
from cgh.model.diagnostics import CRITERIA, CollapseCriteria, CollapseWatch  # noqa: E402
from relational_study import load_results, pretrain_demo, read_run, run_and_record  # noqa: E402
from tests.system.test_collapse import COLLAPSE_ARGS  # noqa: E402
from tests.system.test_learning import LEARNING_STEPS, run_args  # noqa: E402
from tests.system.test_learning import THRESHOLDS as TEST_THRESHOLDS  # noqa: E402

RESULTS = HERE / "results" / "portability.jsonl"
STUDY = HERE / "results" / "relational_study.jsonl"  # the relational study's runs (another machine), replayed too

# The demo recipe before the relational study (= relational_study.BASE), for CGH and ReSSL (MoCo-v2 has no relation
# loss to collapse)
OLD_RECIPE = ["method.loss_warmup_min_steps=0", "method.ressl_warmup=false", "method.temp_teacher_hyper=0.08",
              "method.temp_student_hyper=0.08"]
SEEDS = {1: [0, 1, 2, 3, 4], 2: [0, 1]}  # threads -> seeds
TEST_IMAGES = {"synthetic": 1000, "digits": 497}  # the kNN monitor's test split (a binomial standard error per run)


def run_overrides(group: str, dataset: str, method: str, seed: int, threads: int) -> list[str]:
    """The overrides of ``cgh pretrain demo`` for one run (without out_dir)."""
    if group == "learning":
        args = run_args(dataset, method, seed)
        if dataset == "synthetic" and threads == 1:  # the full run (its epoch 10 is the test's number)
            args.append("train.max_steps=0")
        return args
    common = [f"method.name={method}", f"seed={seed}", "aug.teacher_view=weak", "train.progress=false"]
    if group == "old_recipe":
        return [*DEMO_DATASETS[dataset], *OLD_RECIPE, *common,
                f"train.max_steps={640 if dataset == 'synthetic' else 0}"]
    if group == "provoked":
        # the test's own arguments, on either dataset, for the full budget (the test stops early)
        args = [a for a in COLLAPSE_ARGS if not a.startswith(("data.name=", "method.queue_size=", "optim.epochs=",
                                                              "train.knn_every=", "train.max_steps=", "seed=",
                                                              "train.log_every="))]
        return [*DEMO_DATASETS[dataset], *args, *common, f"train.max_steps={640 if dataset == 'synthetic' else 0}"]
    raise ValueError(group)


GROUPS = {"learning": ("mocov2", "ressl", "cgh"), "old_recipe": ("ressl", "cgh"), "provoked": ("ressl", "cgh")}


def run_one(group: str, dataset: str, method: str, seed: int, threads: int, workdir: Path) -> dict:
    out = workdir / f"{group}-{dataset}-{method}-s{seed}-t{threads}"
    overrides = [*run_overrides(group, dataset, method, seed, threads), "train.log_every=5"]
    proc, seconds = pretrain_demo(overrides, out, threads)
    record = {"group": group, "dataset": dataset, "method": method, "seed": seed, "threads": threads,
              "cpu": cpu_name(), "overrides": overrides, "seconds": seconds, "returncode": proc.returncode}
    if (run := read_run(proc, out, record)) is None:
        return record
    epochs, steps, knn = run
    record.update(knn_curve=knn, knn0=knn[0], knn=knn[max(knn)], steps=steps,
                  warning=next((line for line in proc.stderr.splitlines() if "features look collapsed" in line), ""))
    return record


def load(path: Path = RESULTS) -> list[dict]:
    return load_results(path)


def cmd_run(args) -> None:
    groups = list(GROUPS) if args.group == "all" else [args.group]
    datasets = args.datasets or list(DEMO_DATASETS)
    cpu = cpu_name()
    done = {(r["group"], r["dataset"], r["method"], r["seed"], r["threads"]) for r in load() if r["cpu"] == cpu}
    todo = {t: [(g, d, m, s, t) for g in groups for d in datasets for s in SEEDS[t] for m in GROUPS[g]
                if (g, d, m, s, t) not in done] for t in args.threads}
    print(f"{sum(map(len, todo.values()))} runs to do on {cpu}", flush=True)
    workdir = Path(args.workdir)
    for threads, keys in todo.items():  # one-thread runs two at a time, two-thread runs one at a time
        run_and_record(keys, lambda key: run_one(*key, workdir), RESULTS, max(1, args.cores // threads),
                       lambda r: "  (collapse warning)" if r["warning"] else "")


# ---------------------------------------------------------------------------------------------------------------------
# The learning tests' margins
# ---------------------------------------------------------------------------------------------------------------------


def test_gain(r: dict) -> float:
    """kNN gain over random init at the epoch the learning test stops at (its train.max_steps; 0: the last)."""
    stop = LEARNING_STEPS[r["dataset"]]
    epoch = stop // steps_per_epoch(r) if stop else max(map(int, r["knn_curve"]))
    return r["knn_curve"][str(epoch)] - r["knn0"]


def cmd_margins(args) -> None:
    """Per dataset and method: the gains (and final kNN) of the learning tests' runs on every seed, thread count and
    CPU, against the thresholds tests/system/test_learning.py holds."""
    here = [r for r in load() if r["group"] == "learning"]
    study = [dict(r, threads=1) for r in load(STUDY) if r["setting"] == "warmup600"]  # the same recipe, another CPU
    print("| dataset | method | runs | gain, Intel 1 thread (seeds 0-4) | Intel 2 threads (0-1) | AMD 1 thread (0-2) | "
          "mean ± std | min | test's min gain | final kNN (min-max) | test's floor |")
    print("|---|---|---:|---|---|---|---:|---:|---:|---:|---:|")
    for (d, m), (min_gain, floor) in TEST_THRESHOLDS.items():
        parts = [sorted((r for r in rs if (r["dataset"], r["method"]) == (d, m) and r["threads"] == t),
                        key=lambda r: r["seed"]) for rs, t in ((here, 1), (here, 2), (study, 1))]
        runs = [r for part in parts for r in part]
        if not runs:
            continue
        gains = [test_gain(r) for r in runs]
        finals = [test_gain(r) + r["knn0"] for r in runs]
        cols = [" ".join(f"{test_gain(r):+.1f}" for r in part) for part in parts]
        sd = statistics.stdev(gains) if len(gains) > 1 else math.nan
        print(f"| {d} | {m} | {len(runs)} | {' | '.join(cols)} | {statistics.mean(gains):+.1f} ± {sd:.1f} | "
              f"{min(gains):+.1f} | {min_gain:+.1f} | {min(finals):.1f}-{max(finals):.1f} | "
              f"{'-' if floor is None else f'{floor:.1f}'} |")
    flagged = [r for r in here if replay(r, 20) is not None or r.get("warning")]
    print(f"\nlearning runs flagged as collapsed (as run, and CollapseWatch replayed): {len(flagged)} of {len(here)}")


# ---------------------------------------------------------------------------------------------------------------------
# The collapse detector, replayed
# ---------------------------------------------------------------------------------------------------------------------


def queue_size(r: dict) -> int:
    return next((int(o.split("=")[1]) for o in reversed(r["overrides"]) if o.startswith("method.queue_size=")), 1024)


def steps_per_epoch(r: dict) -> int:
    return {"synthetic": 64, "digits": 20}[r["dataset"]]  # 4096 and 1300 training images, batch 64


def collapsed_epochs(r: dict, ent_label: float) -> dict[int, bool]:
    """Per monitored epoch e > 0, whether the run was collapsed then, read from its outcome: kNN no better than the
    random initialisation (not more than two binomial standard errors above it, what the 497 or 1000 test images can
    resolve) and the diagnostics at their collapsed values (every teacher entropy of the epoch's last logged step at
    least ``ent_label`` of ln K; for a method without a relation target, the feature std below 0.1). Epochs in the
    first half of an InfoNCE warm-up (w_nce above 0.5) never count: the initial features are nearly collinear, so the
    target is near uniform until InfoNCE has spread them (benchmarks/relational_study.md), and that is no collapse."""
    p, n = r["knn0"] / 100, TEST_IMAGES[r["dataset"]]
    resolvable = 200 * math.sqrt(p * (1 - p) / n)
    spe, out = steps_per_epoch(r), {}
    for e, knn in ((int(e), v) for e, v in r["knn_curve"].items() if int(e) > 0):
        last = [v for v in r["steps"] if v["step"] <= e * spe][-1]
        ents = [v for k, v in last.items() if k.startswith("ent_")]
        at_fixed_point = min(ents) >= ent_label if ents else last["std_global"] < 0.1
        out[e] = knn <= r["knn0"] + resolvable and at_fixed_point and last.get("w_nce", 0.0) <= 0.5
    return out


def label(r: dict, ent_label: float = 0.95) -> str:
    """A run's outcome, read from its kNN curve and diagnostics (collapsed_epochs), not from the detector:

    collapsed   collapsed at the last monitored epoch
    recovered   collapsed at an earlier monitored epoch, not at the last
    healthy     never collapsed, and kNN ended resolvably above random init
    stalled     never collapsed, and kNN did not end resolvably above random init (no learning, without the
                diagnostics of a collapse)
    """
    states = collapsed_epochs(r, ent_label)
    last = max(states)
    if states[last]:
        return "collapsed"
    if any(states.values()):
        return "recovered"
    p, n = r["knn0"] / 100, TEST_IMAGES[r["dataset"]]
    return "healthy" if r["knn"] - r["knn0"] > 200 * math.sqrt(p * (1 - p) / n) else "stalled"


def logged(r: dict, every: int) -> list[dict]:
    """The run's logged steps as a run logged every ``every`` steps would have them (None when it was logged more
    coarsely than that)."""
    steps = r["steps"]
    interval = steps[1]["step"] - steps[0]["step"] if len(steps) > 1 else 1
    if interval > every:
        return []
    return steps[every // interval - 1::every // interval]


def replay(r: dict, every: int, criteria: CollapseCriteria = CRITERIA) -> int | None:
    """The step at which CollapseWatch warns on this run logged every ``every`` steps (None: no warning)."""
    watch = CollapseWatch(queue_size(r), METHODS[r["method"]].relation_terms, criteria=criteria)
    return next((v["step"] for v in logged(r, every) if watch.update(v["step"], v)), None)


def ceiling_step(r: dict, every: int) -> int | None:
    """The first logged step from which the teacher's target stays near uniform (every entropy >= 0.95 of ln K,
    with the relation losses in charge) for the rest of the run or for 10 logged steps: an onset of the collapse read
    independently of the detector's thresholds."""
    flags = [bool(e) and min(e) >= 0.95 and v.get("w_nce", 0.0) <= CRITERIA.in_charge
             for v in logged(r, every) for e in [[x for k, x in v.items() if k.startswith("ent_")]]]
    steps = [v["step"] for v in logged(r, every)]
    for i, _ in enumerate(flags):
        if all(flags[i:i + 10]):
            return steps[i]
    return None


# each threshold of CollapseCriteria, with the direction in which raising it flags more runs
CRITERIA_SIGNS = {"ent_uniform": -1, "loss_rel_tol": +1, "in_charge": +1, "std_collapsed": +1, "patience": -1}
RANGES = {"ent_uniform": (0.5, 1.0), "loss_rel_tol": (0.0, 0.5), "in_charge": (0.0, 1.0), "std_collapsed": (0.0, 1.0),
          "patience": (1, 60)}


# The other thresholds when one is measured alone: every condition but the measured one always holds (the warm-up
# gate stays, it is what separates a run's start from a collapse)
RELAXED = CollapseCriteria(ent_uniform=0.0, loss_rel_tol=10.0, std_collapsed=0.0)


def critical(r: dict, every: int, name: str, base: CollapseCriteria = CRITERIA) -> float | None:
    """The value of one threshold (the others as in ``base``) at which this run's verdict flips. None: no value in
    range flips it."""
    lo, hi = RANGES[name]
    flagged = lambda x: replay(r, every, replace(base, **{name: x})) is not None  # noqa: E731
    if flagged(lo) == flagged(hi):
        return None
    if name == "patience":
        return next(p for p in range(lo, hi + 1) if flagged(p) != flagged(lo))
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flagged(mid) == flagged(lo) else (lo, mid)
    return (lo + hi) / 2


def all_runs() -> list[dict]:
    study = [dict(r, group=f"study:{r['setting']}", threads=1, cpu="AMD EPYC (the relational study)")
             for r in load(STUDY)]
    return [*load(), *study]


LABELS = ("collapsed", "recovered", "healthy", "stalled")


def cmd_detector(args) -> None:
    runs = all_runs()
    print(f"CollapseWatch as shipped: {CRITERIA}")
    for ent_label in args.label_ent:
        verdicts: dict[tuple[str, int], list[tuple[dict, int | None]]] = {}
        for every in args.every:
            for r in runs:
                if logged(r, every):
                    verdicts.setdefault((label(r, ent_label), every), []).append((r, replay(r, every)))
        print(f"\nOutcomes with 'collapsed values' = every teacher entropy >= {ent_label} of ln K\n")
        print("| outcome | logged every | runs | flagged | not flagged | warning at step | logged steps after the "
              "target reached its ceiling |")
        print("|---|---:|---:|---:|---:|---|---|")
        for every in args.every:
            for lab in LABELS:
                vs = verdicts.get((lab, every), [])
                if not vs:
                    continue
                steps = [s for _, s in vs if s is not None]
                lags = [(s - c) // every for r, s in vs if s is not None for c in [ceiling_step(r, every)]
                        if c is not None]
                span = lambda xs: f"{min(xs)}-{max(xs)} (median {statistics.median(xs):g})" if xs else ""  # noqa
                print(f"| {lab} | {every} | {len(vs)} | {len(steps)} | {len(vs) - len(steps)} | {span(steps)} | "
                      f"{span(lags)} |")
        if args.margins:
            print("\nThe margin of each threshold: the value past which the nearest flagged collapsed run would go "
                  "unflagged, and the value past which the nearest unflagged healthy (or stalled) run would be "
                  "flagged; with the other thresholds at their defaults, and alone (the others always met)\n")
            print("| threshold | default | logged every | others | loses a collapsed run at | flags a healthy run at "
                  "| flags a stalled run at |")
            print("|---|---:|---:|---|---:|---:|---:|")
            for name, sign in CRITERIA_SIGNS.items():
                for every in args.every:
                    for others, base in (("at defaults", CRITERIA), ("always met", RELAXED)):
                        if base is RELAXED and name not in ("ent_uniform", "loss_rel_tol"):
                            continue  # the std sign stands alone anyway; the gate and the patience act on the others
                        default = getattr(CRITERIA, name)
                        base = replace(base, **{name: default})
                        crit = {lab: [(c, flag) for r, _ in verdicts.get((lab, every), [])
                                      for c in [critical(r, every, name, base)] if c is not None
                                      for flag in [replay(r, every, base) is not None]] for lab in LABELS}
                        near = min if sign < 0 else max  # the critical value nearest the default, on each side
                        far = max if sign < 0 else min
                        lose = near([c for c, flag in crit["collapsed"] if flag], default=None)
                        gain_h = far([c for c, flag in crit["healthy"] if not flag], default=None)
                        gain_s = far([c for c, flag in crit["stalled"] if not flag], default=None)
                        fmt = lambda x: "never" if x is None else f"{x:.4g}"  # noqa: E731
                        print(f"| {name} | {default:g} | {every} | {others} | {fmt(lose)} | {fmt(gain_h)} | "
                              f"{fmt(gain_s)} |")
        if args.list:
            for (lab, every), vs in sorted(verdicts.items()):
                for r, step in vs:
                    print(f"{lab:9s} {every:3d} {'flagged' if step is not None else 'quiet':8s} {r['group']:26s} "
                          f"{r['dataset']:9s} {r['method']:6s} s{r['seed']} t{r['threads']} gain "
                          f"{r['knn'] - r['knn0']:+5.1f} warning {step} ceiling {ceiling_step(r, every)}")


def cmd_provoked(args) -> None:
    """The provoked collapse of tests/system/test_collapse.py, on every seed and thread count run: when the warning
    comes, and how far past the thresholds the run is at the end of the test's budget."""
    budget = next(int(a.split("=")[1]) for a in COLLAPSE_ARGS if a.startswith("train.max_steps="))
    print(f"| dataset | method | seed | threads | target near uniform from step | warning at step (every 5 / 20) | "
          f"at step {budget}: min entropy / ln K | max abs(loss / ln K - 1) | kNN at the end - random init |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted((r for r in load() if r["group"] == "provoked"),
                    key=lambda r: (r["dataset"], r["method"], r["threads"], r["seed"])):
        at = next(v for v in r["steps"] if v["step"] >= budget)
        ent = min(v for k, v in at.items() if k.startswith("ent_"))
        off = max(abs(at[t] / math.log(queue_size(r)) - 1) for t in METHODS[r["method"]].relation_terms)
        print(f"| {r['dataset']} | {r['method']} | {r['seed']} | {r['threads']} | {ceiling_step(r, 5)} | "
              f"{replay(r, 5)} / {replay(r, 20)} | {ent:.4f} | {off:.5f} | {r['knn'] - r['knn0']:+.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--group", choices=[*GROUPS, "all"], required=True)
    r.add_argument("--datasets", nargs="*", choices=list(DEMO_DATASETS))
    r.add_argument("--threads", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--workdir", default="/tmp/cgh-portability")
    sub.add_parser("margins")
    d = sub.add_parser("detector")
    d.add_argument("--every", nargs="+", type=int, default=[5, 20], help="log intervals to replay at")
    d.add_argument("--list", action="store_true", help="every run, with its label and the detector's verdict")
    d.add_argument("--margins", action="store_true", help="the value of each threshold that would change a verdict")
    d.add_argument("--label-ent", nargs="+", type=float, default=[0.95, 0.99],
                   help="teacher entropies (fraction of ln K) that count as collapsed values for the outcome")
    sub.add_parser("provoked")
    args = p.parse_args()
    {"run": cmd_run, "margins": cmd_margins, "detector": cmd_detector, "provoked": cmd_provoked}[args.cmd](args)


if __name__ == "__main__":
    main()
