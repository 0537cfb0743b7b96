"""``cgh plot``: kNN accuracy and loss against epoch from runs' ``metrics.jsonl`` (the supplementary's Fig. 2;
cgh.evaluate.plot)."""

from __future__ import annotations

import argparse
import json
import sys

from cgh.errors import ConfigError
from cgh.evaluate.plot import METRICS_FILE, plot_curves, read_run
from cgh.wording import counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or their metrics.jsonl)")
    parser.add_argument("--out", default="curves.png", metavar="PATH.png", help="output PNG (default: curves.png)")
    parser.add_argument("--labels", nargs="+", default=None, help="legend entry per run (default: method (run dir))")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--terms", action="store_true", help="also draw the loss terms (dashed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text lines")


def run(args: argparse.Namespace) -> int:
    if args.labels is not None and len(args.labels) != len(args.runs):
        raise ConfigError(f"--labels got {len(args.labels)} names for {len(args.runs)} runs; expected one per run")
    curves = [read_run(r) for r in args.runs]
    out = plot_curves(curves, args.out, labels=args.labels, title=args.title, terms=args.terms)
    labels = args.labels or [c.label for c in curves]
    summaries = [{"label": label, **c.summary()} for c, label in zip(curves, labels, strict=True)]
    for c in curves:
        if c.skipped_lines:
            print(f"warning: {c.path / METRICS_FILE}: skipped {counted(c.skipped_lines, 'unreadable line')}",
                  file=sys.stderr)
    if args.json:
        print(json.dumps({"command": "plot", "out": str(out), "runs": summaries}, allow_nan=True))
        return 0
    for s in summaries:
        knn = (f"kNN top-1 {s['last_knn_top1']:.2f}% (best {s['best_knn_top1']:.2f}% at epoch {s['best_knn_epoch']:g})"
               if s["knn_points"] else "no kNN records")
        loss = f"loss {s['last_loss']:.4f}" if s["last_loss"] is not None else "no epoch loss"
        resumed = f", resumed {s['resumes']}x" if s["resumes"] else ""
        print(f"{s['label']}: {counted(float(s['epochs']), 'epoch')}, {knn}, {loss}{resumed}")
    print(f"wrote {out}")
    return 0
