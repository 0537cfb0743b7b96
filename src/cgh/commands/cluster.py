"""``cgh cluster``: k-means on frozen features, scored with NMI, AMI, ARI and Hungarian accuracy
(docs/evaluation.md#clustering; cgh.evaluate.cluster)."""

from __future__ import annotations

import argparse
import time

from cgh.commands.common import (
    add_eval_arguments,
    check_feature_kind,
    checkpoint_label,
    emit,
    resolve_eval_setup,
)
from cgh.errors import ConfigError
from cgh.evaluate.cluster import DEFAULT_MAX_ITER, DEFAULT_N_INIT, cluster_and_score
from cgh.wording import counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser, protocol="docs/evaluation.md#clustering")
    parser.add_argument("--clusters", nargs="+", type=int, default=None, metavar="K",
                        help="number(s) of clusters; several are clustered independently (default: the number of "
                             "classes, as the authors' 1000 for ImageNet)")
    parser.add_argument("--n-init", type=int, default=DEFAULT_N_INIT,
                        help=f"k-means restarts, best inertia kept (default {DEFAULT_N_INIT}: faiss nredo, "
                             "docs/evaluation.md#clustering)")
    parser.add_argument("--max-iter", "--niter", dest="max_iter", type=int, default=DEFAULT_MAX_ITER,
                        help=f"Lloyd iterations per restart (default {DEFAULT_MAX_ITER}: faiss niter, "
                             "docs/evaluation.md#clustering)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")


def run(args: argparse.Namespace) -> int:
    if args.n_init < 1 or args.max_iter < 1:
        raise ConfigError(f"need --n-init >= 1 and --max-iter >= 1, got {args.n_init} and {args.max_iter}")
    # The evaluation (test) split is clustered: docs/evaluation.md#clustering clusters ImageNet val. --test-split picks
    # another split.
    setup = resolve_eval_setup(args, need_train=False, need_test=True)
    model, kind, source = setup.model, args.features, setup.test_source
    check_feature_kind(model, kind, args.checkpoint)
    counts = args.clusters or [setup.num_classes]
    if any(k < 1 or k > len(source) for k in counts):
        raise ConfigError(f"--clusters must be in [1, {len(source)}] (the images of {source.name}), got {counts}")
    feats, labels = setup.features(source, kind, desc="features")
    start = time.time()
    levels = []
    for k in counts:
        m = cluster_and_score(feats.numpy(), labels.numpy(), k, n_init=args.n_init, max_iter=args.max_iter,
                              seed=args.seed)
        levels.append({"clusters": k, **{key: 100.0 * m[key] for key in ("nmi", "ami", "ari", "acc")},
                       "clusters_used": m["num_clusters"]})
    elapsed = time.time() - start
    metrics = {key: levels[0][key] for key in ("nmi", "ami", "ari", "acc")}
    if len(levels) > 1:
        metrics["levels"] = levels
    protocol = dict(setup.protocol, features=kind, feature_dim=int(feats.shape[1]), normalize="l2", split=source.name,
                    clusters=counts, n_init=args.n_init, max_iter=args.max_iter, seed=args.seed,
                    algorithm="sklearn KMeans (k-means++ init)", units="percent", kmeans_seconds=round(elapsed, 2))
    what = (f"{checkpoint_label(setup.protocol)} {kind} features on {source.name} ({counted(len(source), 'image')}, "
            f"{counted(setup.num_classes, 'class')})")
    parts = [f"k={lv['clusters']}: NMI {lv['nmi']:.2f}  AMI {lv['ami']:.2f}  ARI {lv['ari']:.2f}  "
             f"ACC {lv['acc']:.2f}" for lv in levels]
    emit(args, "cluster", metrics, protocol, f"k-means of {what}: " + "; ".join(parts) + " (%)")
    return 0
