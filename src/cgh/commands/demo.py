"""``cgh demo``: pretrain and evaluate all three methods on built-in data and write a report (cgh.demo)."""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from pathlib import Path

from cgh.demo import ALL_METHODS, DEMO_DATASETS, DEMO_METHODS, run_demo
from cgh.demo.report import METHOD_LABELS, pm
from cgh.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the small variant the tests run (under a minute)")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<date>-<time>)")
    p.add_argument("--seed", type=int, default=0, help="the first training seed (default 0)")
    p.add_argument("--seeds", type=int, default=1,
                   help="number of training seeds: every method is pretrained and evaluated for seeds --seed, "
                        "--seed + 1, ..., and the report gives mean ± std over them (default 1, which cannot "
                        "rank the methods)")
    p.add_argument("--dataset", default="synthetic", choices=list(DEMO_DATASETS),
                   help="synthetic: the built-in generated set (default); digits: scikit-learn's handwritten "
                        "digits at 32 px, a small real dataset (1300 train / 497 test images)")
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=list(ALL_METHODS),
                   help="the methods to pretrain (default cgh ressl mocov2; byol, simsiam and simclr may be added)")
    p.add_argument("--no-cost", action="store_true", help="skip the training-cost measurement")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo preset")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this demo, for the report."""
    parts = ["cgh demo"] + (["--quick"] if args.quick else []) + ([f"--seed {args.seed}"] if args.seed else [])
    parts += [f"--seeds {args.seeds}"] if args.seeds != 1 else []
    parts += [f"--dataset {args.dataset}"] if args.dataset != "synthetic" else []
    parts += ["--methods " + " ".join(args.methods)] if args.methods != list(DEMO_METHODS) else []
    parts += ["--no-cost"] if args.no_cost else []
    return " ".join(parts + list(args.overrides))


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"demo directory {out} already exists and is not empty; choose another --out")
    summary = run_demo(out, quick=args.quick, seed=args.seed, methods=args.methods, overrides=args.overrides,
                       cost=not args.no_cost, command=_command(args), seeds=args.seeds, dataset=args.dataset)
    r, sd, seeds = summary["results"], summary["std"], summary["seeds"]
    names = ["random", *summary["methods"]]
    print()
    if len(seeds) == 1:
        print(f"{'encoder':<14}{'kNN':>8}{'linear':>9}{'hypercol.':>11}{'NMI':>7}")
        for name in names:
            x = r[name]
            print(f"{METHOD_LABELS[name]:<14}{x['knn_top1']:>7.1f}%{x['linear_global']:>8.1f}%"
                  f"{x['linear_hypercolumn']:>10.1f}%{x['nmi']:>7.1f}")
        print(f"{'raw pixels':<14}{summary['raw_pixel_knn']:>7.1f}%")
        print("(one seed cannot rank the methods: the spread between seeds is several points; use --seeds 3)")
    else:
        shown = ("knn_top1", "linear_global", "linear_hypercolumn", "nmi")
        print(f"mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))})")
        print(f"{'encoder':<14}" + "".join(f"{x:>15}" for x in ("kNN", "linear", "hypercol.", "NMI")))
        for name in names:
            print(f"{METHOD_LABELS[name]:<14}" + "".join(f"{pm(r[name][m], sd[name][m]):>15}" for m in shown))
        print(f"{'raw pixels':<14}{summary['raw_pixel_knn']:>15.1f}")
        print("\nper seed, kNN top-1 %")
        print(f"{'encoder':<14}" + "".join(f"{f'seed {s}':>9}" for s in seeds))
        for name in names:
            print(f"{METHOD_LABELS[name]:<14}"
                  + "".join(f"{summary['results_by_seed'][str(s)][name]['knn_top1']:>9.1f}" for s in seeds))
        print("\ngain over random init, kNN (mean ± std, worst seed): " + ", ".join(
            f"{METHOD_LABELS[m]} {pm(g['mean'], g['std'], signed=True)} (min {g['min']:+.1f})"
            for m, g in ((m, summary["gain_over_random"][m]["knn_top1"]) for m in summary["methods"])))
    print(f"\nreport: {summary['report']} (and report.html), {summary['timings']['total'] / 60:.1f} minutes")
    sys.stdout.flush()
    values = [v for run_ in summary["results_by_seed"].values() for x in run_.values() for v in x.values()]
    return 0 if all(math.isfinite(v) for v in values if isinstance(v, float)) else 1
