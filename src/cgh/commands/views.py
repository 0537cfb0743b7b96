"""``cgh views``: a PNG grid of the weak, strong and local views the model sees (cgh.augment.grid).

    cgh views --dataset cifar10 --data-path /data/cifar      # a dataset preset's augmentation
    cgh views runs/x                                         # a run's own: its config.yaml (or checkpoint)

The augmentation is the dataset preset's (``cgh.augment.build_augment`` on its config: e.g. no blur for CIFAR-10),
the views ``cgh.config.views.pretrain_views`` of its crop scales; datasets without a preset use the default recipe.
Given a run (its directory, its ``config.yaml`` or a checkpoint), everything comes from the run's config: its data and
pretraining split, image size, augmentation, teacher view and local crops; flags override single values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

import cgh.data
from cgh.augment import build_augment, dataset_normalization
from cgh.augment.grid import draw_views, grid_images, save_view_grid
from cgh.checkpoints.files import checkpoint_file, load_checkpoint
from cgh.commands.common import dataset_config, has_preset
from cgh.config import Config, config_from_dict
from cgh.config.views import pretrain_views
from cgh.data import open_split
from cgh.errors import CGHError, ConfigError, DataError
from cgh.methods import teacher_view

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
    parser.add_argument("run", nargs="?", default=None, metavar="RUN",
                        help="show a run's own views: its directory, config.yaml or a checkpoint (data, split, image "
                             "size, augmentation, teacher view and local crops from its config)")
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset name: synthetic, cifar10, cifar100, stl10, tinyimagenet, imagenet, imagenet100, "
        "folder or npz (default: the run's, else synthetic)",
    )
    parser.add_argument("--data-path", default=None,
                        help="dataset root or file, as for every other command (not needed for synthetic)")
    parser.add_argument("--path", dest="deprecated_path", default=None, help="deprecated: the same as --data-path")
    parser.add_argument("--split", default=None, help="split to draw images from (default: the run's, else train)")
    parser.add_argument(
        "--image-size",
        type=_bounded_int(8),
        default=None,
        metavar="PX",
        help="global crop size; default: the run's data.image_size, else the images' own size for array datasets "
        "(STL-10: 64, docs/method.md#small-datasets), 224 for file datasets",
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
        default=None,
        metavar="N",
        help=f"also show N local crops, 0..{_MAX_LOCAL} (docs/method.md#multi-crop-views; default: the run's "
        f"method.num_local, else 0)",
    )
    parser.add_argument(
        "--teacher",
        choices=("weak", "strong"),
        default=None,
        help="teacher view: weak = crop+flip (ReSSL/CGH), strong = MoCo-v2's (default: the run's method's, else weak)",
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the images and the augmentations (default: 0)")
    parser.add_argument("--out", default="views.png", metavar="PATH.png", help="output PNG (default: views.png)")


def run_config(path: str) -> Config:
    """The config of a run: ``RUN/config.yaml`` of a run directory, a config.yaml itself, or a checkpoint's."""
    p = Path(path)
    if p.is_dir() and (p / "config.yaml").is_file():
        p = p / "config.yaml"
    if p.suffix in (".yaml", ".yml") and p.is_file():
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse {p} as YAML: {e}") from None
        return config_from_dict(data if isinstance(data, dict) else {}, origin=str(p))
    ckpt = load_checkpoint(checkpoint_file(p))  # a run directory without config.yaml: its checkpoints/last.pt
    return config_from_dict(ckpt["config"], origin=str(p))


def _configured(args: argparse.Namespace):
    """The config whose data and augmentation are shown, the source of images, its teacher view and local crops: a
    run's (``args.run``), or the ``--dataset`` preset's with the flags' values."""
    if args.deprecated_path is not None:
        print("note: --path is deprecated; use --data-path, as every other command does", file=sys.stderr)
        args.data_path = args.data_path or args.deprecated_path
    if not args.run:
        cfg = dataset_config(args.dataset or "synthetic")
        # The synthetic set is generated, not read: render a few hundred images to pick from instead of the 10000 of
        # its train split (seconds), since a picture of the augmentation needs only images of the same distribution.
        options = {"size": _SYNTHETIC_IMAGES} if cfg.data.name == "synthetic" else {}
        source = cgh.data.open_source(cfg.data.name, args.data_path, args.split or "train", **options)
        return cfg, source, args.teacher or "weak", args.local or 0
    cfg = run_config(args.run)
    if args.dataset and args.dataset != cfg.data.name:  # another dataset, with the run's augmentation
        cfg.data = dataset_config(args.dataset).data
    if args.data_path is not None:
        cfg.data.path = args.data_path
    d = cfg.data
    d.synthetic_size, d.synthetic_test_size = min(d.synthetic_size, _SYNTHETIC_IMAGES), min(d.synthetic_test_size,
                                                                                             _SYNTHETIC_IMAGES)
    source = open_split(cfg, args.split or d.split)  # the run's pretraining split
    teacher = args.teacher or teacher_view(cfg)
    return cfg, source, teacher, args.local if args.local is not None else cfg.method.num_local


def _decodable_images(source, order, n: int, size: int, corrupt: str):
    """The first ``n`` images of ``order`` (a permutation of ``source``'s indices) that decode, sorted by index, and
    their uint8 (n, 3, size, size) grid cells. An undecodable file raises (``data.corrupt=error``) or, with ``skip``
    (the default), is named in a note on stderr and the next image of ``order`` is drawn instead, as pretraining
    leaves such a file out."""
    picked, cells, bad = [], {}, []
    for i in (int(j) for j in order):
        try:
            cells[i] = grid_images(source, [i], size)[0]
        except DataError as e:
            if corrupt == "error":
                raise
            bad.append(e)
            continue
        picked.append(i)
        if len(picked) == n:
            break
    for e in bad:
        print(f"note: skipped an undecodable image (data.corrupt=skip): {e}", file=sys.stderr)
    if not picked:
        raise DataError(f"{source.name}: none of its {len(source)} images could be decoded")
    picked.sort()
    return picked, torch.stack([cells[i] for i in picked])


def run(args: argparse.Namespace) -> int:
    cfg, source, teacher, local = _configured(args)
    if len(source) == 0:
        raise CGHError(f"{source.name}: the dataset is empty")
    n = min(args.num_images, len(source))
    rng = np.random.default_rng(args.seed)
    arrays = hasattr(source, "images")
    if args.image_size:
        size = args.image_size
    elif args.run:
        size = cfg.data.image_size  # the run's training size
    elif arrays and not has_preset(cfg.data.name):
        size = int(min(source.images.shape[-2:]))  # an array set without a preset: its images' own size
    else:
        size = cfg.data.image_size  # the preset's training size (STL-10: 64), else 224
    if arrays:
        indices = sorted(int(i) for i in rng.choice(len(source), size=n, replace=False))
        images = grid_images(source, indices, size)
    else:
        indices, images = _decodable_images(source, rng.permutation(len(source)), n, size, cfg.data.corrupt)
    try:
        specs = pretrain_views(size, teacher=teacher, weak_scale=tuple(cfg.aug.weak_scale),
                               strong_scale=tuple(cfg.aug.strong_scale), num_local=local)
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
    whose = f" by {cfg.method.name} in {args.run}" if args.run else ""
    out = save_view_grid(args.out, images, views, specs, mean=mean, std=std, teacher=teacher,
                         title=f"{source.name}: views seen in pretraining{whose} (seed {args.seed})",
                         row_labels=row_labels, original="original" if arrays else "original, resized")
    print(out)
    return 0
