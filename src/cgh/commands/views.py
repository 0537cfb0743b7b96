"""``cgh views``: a PNG grid of the weak, strong and local views the model sees (cgh.viewgrid).

The augmentation is the dataset preset's (``cgh.augment.build_augment`` on its config: e.g. no blur for CIFAR-10),
the views ``cgh.views.pretrain_views`` of its crop scales; datasets without a preset use the default recipe.
"""

from __future__ import annotations

import argparse

import numpy as np

from cgh.augment import build_augment, dataset_normalization
from cgh.commands.common import dataset_config, has_preset
from cgh.errors import CGHError, ConfigError
from cgh.viewgrid import draw_views, grid_images, save_view_grid
from cgh.views import pretrain_views

_MAX_LOCAL = 4  # docs/method.md#multi-crop-views defines four local crops
_SYNTHETIC_IMAGES = 500


def _bounded_int(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help="dataset name: synthetic, cifar10, cifar100, stl10, tinyimagenet, imagenet, imagenet100, "
        "folder or npz (default: synthetic)",
    )
    parser.add_argument("--path", default=None, help="dataset root or file (not needed for synthetic)")
    parser.add_argument("--split", default="train", help="split to draw images from (default: train)")
    parser.add_argument(
        "--image-size",
        type=_bounded_int(8),
        default=None,
        metavar="PX",
        help="global crop size; default: the images' own size for array datasets (STL-10: 64, "
        "docs/method.md#small-datasets), 224 for file datasets",
    )
    parser.add_argument(
        "--num-images",
        type=_bounded_int(1, 64),
        default=8,
        metavar="N",
        help="rows of the grid, one image each (default: 8)",
    )
    parser.add_argument(
        "--local",
        type=_bounded_int(0, _MAX_LOCAL),
        default=0,
        metavar="N",
        help=f"also show N local crops, 0..{_MAX_LOCAL} (docs/method.md#multi-crop-views; default: 0)",
    )
    parser.add_argument(
        "--teacher",
        choices=("weak", "strong"),
        default="weak",
        help="teacher view: weak = crop+flip (ReSSL/CGH), strong = MoCo-v2's (default: weak)",
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the images and the augmentations (default: 0)")
    parser.add_argument("--out", default="views.png", metavar="PATH.png", help="output PNG (default: views.png)")


def _open(args: argparse.Namespace):
    from cgh.data import open_source  # looked up when the command runs

    # The synthetic set is generated, not read: render a few hundred images to pick from instead of the 10000 of its
    # train split (seconds), since a picture of the augmentation needs only images of the same distribution.
    options = {"size": _SYNTHETIC_IMAGES} if args.dataset == "synthetic" else {}
    return open_source(args.dataset, args.path, args.split, **options)


def run(args: argparse.Namespace) -> int:
    source = _open(args)
    if len(source) == 0:
        raise CGHError(f"{source.name}: the dataset is empty")
    n = min(args.num_images, len(source))
    rng = np.random.default_rng(args.seed)
    indices = sorted(int(i) for i in rng.choice(len(source), size=n, replace=False))

    cfg = dataset_config(args.dataset)
    arrays = hasattr(source, "images")
    if args.image_size:
        size = args.image_size
    elif arrays and not has_preset(args.dataset):
        size = int(min(source.images.shape[-2:]))  # an array set without a preset: its images' own size
    else:
        size = cfg.data.image_size  # the preset's training size (STL-10: 64), else 224
    images = grid_images(source, indices, size)
    try:
        specs = pretrain_views(size, teacher=args.teacher, weak_scale=tuple(cfg.aug.weak_scale),
                               strong_scale=tuple(cfg.aug.strong_scale), num_local=args.local)
        augment = build_augment(cfg, specs)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    views = draw_views(images, augment, args.seed)

    labels = getattr(source, "labels", None)
    classes = getattr(source, "classes", [])
    row_labels = []
    for i in indices:
        label = int(labels[i]) if labels is not None else -1
        row_labels.append(classes[label] if 0 <= label < len(classes) else f"#{i}")
    mean, std = dataset_normalization(cfg.data)  # what build_augment normalised with
    out = save_view_grid(args.out, images, views, specs, mean=mean, std=std, teacher=args.teacher,
                         title=f"{source.name}: views seen in pretraining (seed {args.seed})", row_labels=row_labels,
                         original="original" if arrays else "original, resized")
    print(out)
    return 0
