"""``cgh cost``: time one training step of supervised, MoCo-v2, ReSSL, BYOL, SimSiam, SimCLR and CGH (Table 3;
cgh.train.cost)."""

from __future__ import annotations

import argparse
import json

from cgh.config import load_config
from cgh.train.cost import METHOD_NAMES, format_table, measure, method_configs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default="cifar10", help="preset or YAML giving the backbone and heads "
                   "(default cifar10: ResNet-18, CIFAR stem, 32 px)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds")
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, origin="command line")
    # each method on its preset recipe, as `cgh pretrain CONFIG method.name=NAME` runs it
    per_method = method_configs(args.config, args.overrides, tuple(args.methods))
    result = measure(cfg, tuple(args.methods), args.batch_size, args.warmup, args.repeats, args.device,
                     per_method=per_method)
    print(json.dumps(result) if args.json else format_table(result))
    return 0
