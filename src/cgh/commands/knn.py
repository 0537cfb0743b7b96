"""``cgh knn``: weighted kNN classification with a pretrained backbone (docs/evaluation.md#knn-evaluation;
cgh.evaluate.knn)."""

from __future__ import annotations

import argparse
import sys

from cgh.commands.common import (
    add_eval_arguments,
    check_feature_kind,
    checkpoint_label,
    emit,
    resolve_eval_setup,
)
from cgh.errors import ConfigError
from cgh.evaluate.knn import DEFAULT_KS, knn_evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser, protocol="docs/evaluation.md#knn-evaluation")
    parser.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_KS),
                        help="neighbour counts (docs/evaluation.md#knn-evaluation)")
    parser.add_argument("--temperature", type=float, default=0.07,
                        help="vote weight exp(sim / T) (docs/evaluation.md#knn-evaluation: 0.07)")
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="query rows per similarity block; lower it if a large bank runs out of memory")


def run(args: argparse.Namespace) -> int:
    if any(k < 1 for k in args.k) or args.temperature <= 0 or args.chunk_size < 1:
        raise ConfigError(f"--k values must be >= 1, --temperature > 0 and --chunk-size >= 1; got k={args.k}, "
                          f"temperature={args.temperature}, chunk_size={args.chunk_size}")
    setup = resolve_eval_setup(args, allow_unlabelled_train=True)
    check_feature_kind(setup.model, args.features, args.checkpoint)
    bank, bank_labels = setup.features(setup.train_source, args.features, desc="memory bank")
    queries, query_labels = setup.features(setup.test_source, args.features, desc="test")
    labelled = bank_labels >= 0  # an unlabelled image cannot vote (e.g. STL-10's train+unlabeled)
    bank, bank_labels = bank[labelled], bank_labels[labelled]
    device = setup.device
    results = knn_evaluate(bank.to(device), bank_labels.to(device), queries.to(device), query_labels.to(device),
                           setup.num_classes, args.k, args.temperature, args.chunk_size)
    n = int(bank.shape[0])
    protocol = dict(setup.protocol, features=args.features, feature_dim=int(bank.shape[1]), k=list(args.k),
                    k_effective=[min(k, n) for k in args.k], temperature=args.temperature,
                    bank_size=n, normalised=True, top5_is_top=min(5, setup.num_classes))
    capped = [k for k in args.k if k > n]
    if capped:  # every image of the bank votes: say so rather than report k=500 for a vote of 300
        one = len(capped) == 1
        note = (f"k={', '.join(map(str, capped))} {'is' if one else 'are'} more than the {n} labelled images of the "
                f"memory bank {setup.train_source.name}: {'it votes' if one else 'each votes'} with all {n} "
                f"(k_effective in --json); give --k up to {n}")
        print(f"note: {note}", file=sys.stderr, flush=True)
        protocol["notes"] = [note]
    metrics = {str(k): v for k, v in results.items()}
    p = protocol
    line = (f"kNN {p['dataset']} {p['test_split']} ({args.features} features, {checkpoint_label(p)}, "
            f"T={args.temperature}): "
            + ", ".join(f"k={k}{f' (all {n})' if k > n else ''} top-1 {v['top1']:.2f}% top-5 {v['top5']:.2f}%"
                        for k, v in results.items()))
    emit(args, "knn", metrics, protocol, line)
    return 0
