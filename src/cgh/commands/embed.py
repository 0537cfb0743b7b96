"""``cgh embed``: write the features of every image of a split to .npy files, with a table of each row's index,
label, class and path (cgh.evaluate.embed).

    cgh embed runs/x/checkpoints/last.pt --out emb.npy                       emb.npy (N, D), emb.csv, emb.json
    cgh embed CKPT --features global hypercolumn --out emb.npy              emb.global.npy, emb.hypercolumn.npy, ...
    cgh embed CKPT --dataset folder --data-path /data/photos --split all --format parquet --out photos

The split is ``--split`` (default: the evaluation test split, ``data.eval_test_split`` or ``--test-split``);
unlabelled images are embedded too (label -1). Features are written chunk by chunk into memory-mapped .npy files,
so the memory used does not grow with the number of images.
"""

from __future__ import annotations

import argparse

from cgh.checkpoints.pretrained import FEATURE_KINDS
from cgh.commands.common import (
    add_eval_arguments,
    check_feature_kind,
    checkpoint_label,
    emit,
    resolve_eval_setup,
)
from cgh.data import open_split
from cgh.errors import ConfigError, DataError
from cgh.evaluate.embed import TABLE_FORMATS, check_table_format, output_paths, write_embeddings
from cgh.evaluate.features import num_classes_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser, features=False)
    parser.add_argument("--split", default=None,
                        help="split to embed (default: the evaluation test split, data.eval_test_split); "
                             "unlabelled images are kept, with label -1")
    parser.add_argument("--features", choices=FEATURE_KINDS, nargs="+", default=["global"],
                        help="one or more of: global (pooled layer4), hypercolumn (GAP of [layer3->layer4 size, "
                             "layer4]), hypercolumn_head (the trained CGH head); default global")
    parser.add_argument("--out", default="embeddings.npy", metavar="FILE.npy",
                        help="FILE.npy: the (N, D) float32 features; with several --features FILE.<kind>.npy each; "
                             "next to them FILE.csv (or .parquet: index, label, class, path) and FILE.json "
                             "(what was written). Default embeddings.npy")
    parser.add_argument("--format", choices=TABLE_FORMATS, default="csv",
                        help="the per-image table: csv, or parquet (needs pyarrow)")
    parser.add_argument("--chunk-size", type=int, default=None, metavar="N",
                        help="images per chunk written at once (default: 256 MiB of features, a multiple of "
                             "--batch-size)")


def run(args: argparse.Namespace) -> int:
    kinds = list(args.features)
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"--features lists a kind twice: {kinds}")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be a positive integer, got {args.chunk_size}")
    check_table_format(args.format)  # before any work: parquet without pyarrow fails here
    setup = resolve_eval_setup(args, need_train=False, need_test=False)
    for kind in kinds:
        check_feature_kind(setup.model, kind, args.checkpoint)
    split = args.split or setup.cfg.data.eval_test_split
    source = open_split(setup.cfg, split)
    if len(source) == 0:
        raise DataError(f"{source.name}: the {split} split is empty")
    protocol = {k: v for k, v in setup.protocol.items() if k not in ("train_split", "test_split", "num_train",
                                                                        "num_test")}
    protocol.update(split=split, num_images=len(source), num_classes=num_classes_of(source) or None,
                    num_unlabelled=int((source.labels < 0).sum()), features=kinds,
                    feature_dims={k: setup.model.feature_dim(k) for k in kinds}, normalised=False,
                    table_format=args.format)
    result = write_embeddings(setup.model, source, kinds, args.out, image_size=setup.image_size, mean=setup.mean,
                              std=setup.std, batch_size=setup.batch_size, device=setup.device,
                              num_workers=setup.num_workers, amp=setup.amp, table_format=args.format,
                              chunk_size=args.chunk_size, progress=setup.progress, desc=f"embedding {split}",
                              meta=protocol, corrupt=setup.cfg.data.corrupt)
    protocol["chunk_rows"] = result.chunk_rows
    setup.note_skipped(source.name, result.skipped)
    protocol.update({k: setup.protocol[k] for k in ("skipped_files",) if k in setup.protocol})
    features, table, manifest = output_paths(args.out, kinds, args.format)
    files = {"features": {k: str(p) for k, p in features.items()}, "table": str(table), "manifest": str(manifest)}
    metrics = {"num_images": result.num_images, "feature_dims": result.dims, "files": files}
    shapes = ", ".join(f"{p} ({result.num_images}, {result.dims[k]})" for k, p in files["features"].items())
    line = (f"wrote {shapes} and {table}: {protocol['dataset']} {split}, {', '.join(kinds)} features "
            f"({checkpoint_label(protocol)})")
    emit(args, "embed", metrics, protocol, line)
    return 0
