"""``cgh tsne``: a t-SNE picture of chosen classes, one panel per checkpoint (the supplementary's Fig. 3;
cgh.evaluate.tsne)."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

from cgh.checkpoints.pretrained import FEATURE_KINDS, load_backbone
from cgh.commands.common import (
    add_checkpoint_arguments,
    add_data_arguments,
    check_feature_kind,
    emit,
    resolve_eval_setup,
)
from cgh.errors import ConfigError
from cgh.evaluate.tsne import DEFAULT_NUM_CLASSES, DEFAULT_PER_CLASS, PCA_DIM, select_indices, tsne_figure
from cgh.wording import counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("more_checkpoints", nargs="*", metavar="CHECKPOINT",
                        help="further checkpoints: one panel each, on the same images")
    add_data_arguments(parser)
    parser.add_argument("--labels", nargs="+", default=None,
                        help="panel name per checkpoint, e.g. MoCo-v2 ReSSL CGH (default: the method)")
    parser.add_argument("--features", choices=FEATURE_KINDS, default="global",
                        help="global: pooled layer4 (as Fig. 3 presumably); hypercolumn / hypercolumn_head as in "
                             "`cgh linear`")
    parser.add_argument("--classes", nargs="+", type=int, default=None, metavar="C",
                        help=f"class ids to show (default: the first {DEFAULT_NUM_CLASSES}, as Fig. 3)")
    parser.add_argument("--num-classes", type=int, default=DEFAULT_NUM_CLASSES,
                        help=f"without --classes: show classes 0..N-1 (default {DEFAULT_NUM_CLASSES})")
    parser.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS,
                        help=f"at most this many images per class, a seeded random subset (default "
                             f"{DEFAULT_PER_CLASS}: all of Tiny-ImageNet's)")
    parser.add_argument("--split", default=None,
                        help="split to draw the images from (default: the evaluation train split; Fig. 3 uses "
                             "Tiny-ImageNet's training set)")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    parser.add_argument("--pca-dim", type=int, default=PCA_DIM, help=f"PCA before t-SNE; 0 = none "
                        f"(default {PCA_DIM})")
    parser.add_argument("--seed", type=int, default=0, help="seeds the image subset, PCA and t-SNE")
    parser.add_argument("--out", default="tsne.png", metavar="PATH.png", help="output PNG (default: tsne.png)")


def run(args: argparse.Namespace) -> int:
    checkpoints = [args.checkpoint, *args.more_checkpoints]
    if args.labels is not None and len(args.labels) != len(checkpoints):
        raise ConfigError(f"--labels got {len(args.labels)} names for {len(checkpoints)} checkpoints; expected one "
                          f"per checkpoint")
    if args.per_class < 1 or args.perplexity <= 0 or args.pca_dim < 0 or args.num_classes < 1:
        raise ConfigError(f"need --per-class >= 1, --perplexity > 0, --pca-dim >= 0 and --num-classes >= 1; got "
                          f"{args.per_class}, {args.perplexity}, {args.pca_dim}, {args.num_classes}")
    if args.split is not None:
        args.train_split = args.split
    setup = resolve_eval_setup(args, need_train=True, need_test=False)
    source = setup.train_source
    class_names = list(source.classes) or [str(c) for c in range(setup.num_classes)]
    if len(class_names) < setup.num_classes:
        class_names += [str(c) for c in range(len(class_names), setup.num_classes)]
    classes = args.classes if args.classes is not None else list(range(min(args.num_classes, setup.num_classes)))
    bad = [c for c in classes if not 0 <= c < setup.num_classes]
    if bad or len(set(classes)) != len(classes):
        raise ConfigError(f"--classes must be distinct ids in [0, {setup.num_classes - 1}] ({source.name} has "
                          f"{setup.num_classes} classes), got {classes}")
    try:
        idx = select_indices(source.labels.numpy(), classes, args.per_class, args.seed)
    except ValueError as e:
        raise ConfigError(f"{source.name}: {e}") from None
    subset = source.subset(idx)

    panels, infos = [], []
    for i, path in enumerate(checkpoints):
        model = setup.model if i == 0 else load_backbone(path, which=args.which, map_location=setup.device)
        check_feature_kind(model, args.features, path)
        feats, labels = setup.features(subset, args.features, desc=f"features {i + 1}/{len(checkpoints)}", model=model)
        info = model.info
        name = args.labels[i] if args.labels else str(info.get("method") or Path(path).stem)
        epoch = f", epoch {info['epoch']}" if info.get("epoch") is not None else ""
        panels.append((f"{name}\n{args.features} features{epoch}", feats.numpy(), labels.numpy()))
        infos.append({"checkpoint": str(path), "label": name, "method": info.get("method"), "arch": info.get("arch"),
                      "epoch": info.get("epoch"), "step": info.get("step"), "feature_dim": int(feats.shape[1])})

    # Panels index colours by position in ``classes`` so that the legend lists exactly the chosen classes.
    remap = {c: j for j, c in enumerate(classes)}
    panels = [(t, f, np.vectorize(remap.__getitem__)(y)) for t, f, y in panels]
    dataset, split = setup.cfg.data.name, setup.cfg.data.eval_train_split
    title = (f"t-SNE of {dataset} {split} features: {counted(len(classes), 'class')}, {counted(len(idx), 'image')} "
             f"(perplexity {args.perplexity:g}, seed {args.seed})")
    out = tsne_figure(panels, [class_names[c] for c in classes], args.out, title=title, perplexity=args.perplexity,
                      seed=args.seed, pca_dim=args.pca_dim or None)
    protocol = copy.deepcopy(setup.protocol)
    protocol.update(features=args.features, classes=classes, class_names=[class_names[c] for c in classes],
                    per_class=args.per_class, num_images=int(len(idx)), perplexity=args.perplexity,
                    pca_dim=args.pca_dim, seed=args.seed, normalize="l2", panels=infos, out=str(out))
    line = (f"wrote {out}: t-SNE of {len(idx)} {dataset} {split} {'image' if len(idx) == 1 else 'images'} "
            f"({counted(len(classes), 'class')}), {counted(len(checkpoints), 'panel')}: "
            f"{', '.join(i['label'] for i in infos)}")
    emit(args, "tsne", {"out": str(out), "num_images": int(len(idx))}, protocol, line)
    return 0
