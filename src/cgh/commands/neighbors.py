"""``cgh neighbors``: a PNG grid of test images and their nearest neighbours in the memory bank, correct neighbours
framed green and wrong ones red (cgh.evaluate.neighbors).

    cgh neighbors runs/x/checkpoints/last.pt --queries 8 --k 8 --out grid.png
    cgh neighbors CKPT --features hypercolumn --seed 3 --json

The bank is the evaluation train split (its labelled images, as in ``cgh knn``), the queries ``--queries`` images of
the evaluation test split drawn with ``--seed``; similarity is the cosine of the (L2-normalised) features.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cgh.commands.common import (
    add_eval_arguments,
    check_feature_kind,
    checkpoint_label,
    emit,
    resolve_eval_setup,
)
from cgh.errors import ConfigError, DataError
from cgh.evaluate.neighbors import nearest_neighbours, neighbours_figure, select_queries


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser)
    parser.add_argument("--queries", type=int, default=8, metavar="N",
                        help="test images to show, one row each (default 8)")
    parser.add_argument("--k", type=int, default=8, help="neighbours per query (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of the query images (default 0)")
    parser.add_argument("--out", default="neighbors.png", metavar="PATH.png",
                        help="output PNG (default: neighbors.png)")


def run(args: argparse.Namespace) -> int:
    if args.queries < 1 or args.k < 1:
        raise ConfigError(f"--queries and --k must be >= 1, got {args.queries} and {args.k}")
    setup = resolve_eval_setup(args, allow_unlabelled_train=True)
    check_feature_kind(setup.model, args.features, args.checkpoint)
    bank_source, test_source = setup.train_source, setup.test_source
    labelled = bank_source.labels >= 0  # an unlabelled image cannot be judged right or wrong (e.g. STL-10's)
    bank_index = labelled.nonzero().view(-1)
    if args.k > len(bank_index):
        raise ConfigError(f"--k {args.k} is larger than the bank: {bank_source.name} has {len(bank_index)} "
                          f"labelled images")
    if args.queries > len(test_source):
        raise ConfigError(f"--queries {args.queries} is more than the {len(test_source)} images of "
                          f"{test_source.name}")
    query_index = select_queries(len(test_source), args.queries, args.seed)
    left_out: list[tuple[int, str]] = []  # undecodable files (data.corrupt=skip): their rows are missing
    bank, bank_labels = setup.features(bank_source, args.features, desc="memory bank", skipped=left_out)
    if left_out:
        decoded = torch.ones(len(bank_source), dtype=torch.bool)
        decoded[[i for i, _ in left_out]] = False
        labelled, bank_index = labelled[decoded], (labelled & decoded).nonzero().view(-1)
        if args.k > len(bank_index):
            raise ConfigError(f"--k {args.k} is larger than the bank: {bank_source.name} has {len(bank_index)} "
                              f"labelled images that decode")
    left_out = []
    queries, query_labels = setup.features(test_source.subset(query_index), args.features, desc="queries",
                                           skipped=left_out)
    query_index = np.delete(query_index, [i for i, _ in left_out])
    if len(query_index) == 0:
        raise DataError(f"{test_source.name}: none of the {args.queries} query images decodes; choose others with "
                        f"--seed")
    result = nearest_neighbours(bank[labelled].to(setup.device), bank_labels[labelled], queries.to(setup.device),
                                query_labels, args.k, query_index=query_index, bank_index=bank_index.numpy())
    p = setup.protocol
    where = p["checkpoint"] if len(p["checkpoint"]) <= 60 else "…" + p["checkpoint"][-59:]
    title = (f"{checkpoint_label(p)} ({where}): {args.features} features, {p['dataset']} "
             f"{p['test_split']} queries, nearest of {len(bank_index)} {p['train_split']} images")
    out = neighbours_figure(result, test_source, bank_source, args.out, image_size=setup.image_size, title=title)
    protocol = dict(p, features=args.features, feature_dim=int(bank.shape[1]), k=args.k, num_queries=len(query_index),
                    seed=args.seed, bank_size=len(bank_index), similarity="cosine", out=str(out))
    found = result.to_dict()
    metrics = {"precision_at_k": found["precision_at_k"], "k": args.k, "out": str(out), "queries": found["queries"]}
    line = (f"wrote {out}: {len(query_index)} {p['dataset']} {p['test_split']} "
            f"{'query' if len(query_index) == 1 else 'queries'} x {args.k} nearest {p['train_split']} "
            f"{'image' if args.k == 1 else 'images'} ({args.features} features, {checkpoint_label(p)}): "
            f"precision@{args.k} {result.precision:.2f}%")
    emit(args, "neighbors", metrics, protocol, line)
    return 0
