"""Time of one training step of supervised training, MoCo-v2, ReSSL, BYOL, SimSiam, SimCLR and CGH on the same backbone
and batch, relative to supervised, as the supplementary's Table 3 compares them (its figures: MoCo-v2 1.62, ReSSL 1.62,
BYOL 2.90, CGH 2.01). Target for this project: CGH / ReSSL <= 1.15 for ResNet-18 (CIFAR stem), batch 64, 32 x 32, on
the CPU.

    python benchmarks/training_cost.py                      # the target setting (cifar10 preset), 20 rounds
    python benchmarks/training_cost.py --config imagenet --image-size 224 --batch-size 32 --device cuda

Methods are interleaved round by round so that machine noise hits all alike; compare only ratios from one run.
Results are recorded in training_cost.md beside this file.
"""

from __future__ import annotations

import argparse
import json

from bench_env import environment
from cgh.config import load_config
from cgh.train.cost import format_table, measure, method_configs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cifar10")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    size = [f"data.image_size={args.image_size}"] if args.image_size else []
    cfg = load_config(args.config, [*args.overrides, *size])
    per_method = method_configs(args.config, [*args.overrides, *size])  # each method on its own recipe
    result = measure(cfg, batch_size=args.batch_size, warmup=args.warmup, repeats=args.rounds, device=args.device,
                     per_method=per_method)
    env = environment()
    if args.json:
        print(json.dumps({**result, "environment": env}))
    else:
        print(format_table(result))
        print(f"\n{env}")


if __name__ == "__main__":
    main()
