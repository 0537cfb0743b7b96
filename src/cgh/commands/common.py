"""The command-line plumbing the evaluation commands (knn, linear, semisup, cluster, tsne) share.

- ``cgh knn runs/x/checkpoints/last.pt`` (or the run directory ``runs/x``) evaluates on the dataset the checkpoint
  was trained on: name, path, eval splits, image size, normalisation and synthetic-data options come from the config
  stored in the checkpoint;
- ``--dataset NAME`` switches dataset (its preset supplies the eval splits; ``--data-path``, ``--train-split``,
  ``--test-split``, ``--image-size`` and ``--data-option key=value`` override single values); the image size stays
  the one the checkpoint was trained at. A torchvision-format or authors' backbone carries no config, so it needs
  ``--dataset``, and is evaluated at that dataset's preset size unless ``--image-size`` says otherwise (224 for a
  folder or .npz, with a note saying so);
- ``--json`` prints exactly one JSON object on stdout: ``{"command", "metrics", "protocol"}``, where the protocol
  names the features, the dataset and splits, the image size and transform, the checkpoint and its epoch/step,
  method and architecture, plus the command's own numbers (k, temperature, epochs, lr, ...);
- a test split holding the images of the train split a command learns from is refused; one holding the images the
  checkpoint was pretrained on is warned about (stderr, and ``warnings`` in the protocol);
- data.corrupt=skip (``--data-option corrupt=skip``; the checkpoint's value by default) leaves undecodable files out,
  with a note on stderr and every path in the protocol's ``skipped_files``; error stops on the first one.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from cgh.augment import dataset_normalization
from cgh.checkpoints.pretrained import FEATURE_KINDS, PretrainedBackbone
from cgh.commands.evaluated import add_checkpoint_arguments, load_evaluated, random_init_protocol
from cgh.config import Config, config_from_dict, load_config, merge, parse_overrides, preset_names
from cgh.data import open_split
from cgh.data.configured import check_same_classes, resolve_split, saved_folder_splits, split_location
from cgh.data.decode import eval_resize
from cgh.errors import ConfigError, DataError
from cgh.evaluate.features import extract_features, num_classes_of
from cgh.runtime.device import resolve_amp, resolve_device
from cgh.wording import counted

# Datasets without a preset of their own borrow one (same image size and eval splits).
PRESET_OF = {"imagenet100": "imagenet"}
# Eval splits of datasets without a preset: every other opener names its labelled splits train / test, and 'auto'
# is test there (a folder of splits: test/ or val/, whichever it has; cgh.data.configured.resolve_split).
DEFAULT_SPLITS = ("train", "auto")
DEFAULT_BATCH_SIZE = 256


FEATURES_HELP = ("global: pooled layer4; hypercolumn: GAP of the stacked [layer3 -> layer4 size, layer4] map; "
                 "hypercolumn_head: the trained CGH head's pooled conv-BN-ReLU")


def add_eval_arguments(parser: argparse.ArgumentParser, *, features: bool = True, protocol: str = "") -> None:
    """The flags every evaluation command shares: the checkpoint, the data and (``features``) ``--features``;
    ``protocol``: the docs anchor of the command's protocol, named in the help."""
    add_checkpoint_arguments(parser, random_init=True)
    add_data_arguments(parser)
    if features:
        parser.add_argument("--features", choices=FEATURE_KINDS, default="global",
                            help=FEATURES_HELP + (f" ({protocol})" if protocol else ""))


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Dataset flags; each overrides the value stored in the checkpoint's config."""
    parser.add_argument("--dataset", default=None,
                        help="cifar10, cifar100, stl10, tinyimagenet, imagenet, imagenet100, folder, npz, synthetic "
                             "(default: the checkpoint's; required for torchvision-format backbones)")
    parser.add_argument("--data-path", default=None, help="dataset root or file (default: the checkpoint's)")
    parser.add_argument("--train-split", default=None,
                        help="labelled split for the memory bank / probe training (default: data.eval_train_split)")
    parser.add_argument("--test-split", default=None,
                        help="split the accuracy is measured on (default: data.eval_test_split)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="evaluation crop in pixels (default: the size the checkpoint was trained at, from its "
                             "config; for a file without one, the dataset preset's size, else 224; 224 gives Resize "
                             "256 + CenterCrop)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default 256)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="decoding workers for file datasets (default: data.num_workers; arrays need none)")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="any other data.* config value, e.g. synthetic_size=1000 or 'mean=[0.5,0.5,0.5]' "
                             "(repeatable)")


@dataclass
class EvalSetup:
    """Everything an evaluation command needs, resolved from the checkpoint and the flags."""

    model: PretrainedBackbone
    cfg: Config  # the data section is the evaluation's (checkpoint config + flags)
    train_source: Any
    test_source: Any
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    amp: torch.dtype | None
    batch_size: int
    num_workers: int
    progress: bool
    protocol: dict[str, Any] = field(default_factory=dict)

    def features(self, source, kind: str, desc: str = "features", model: PretrainedBackbone | None = None,
                 skipped: list[tuple[int, str]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``extract_features`` of ``model`` (default: this setup's) with this setup's transform, device, precision
        and data.corrupt; files left out as undecodable are reported (``note_skipped``) and their (index, path)
        appended to ``skipped``."""
        left_out: list[tuple[int, str]] = []
        out = extract_features(model or self.model, source, kind, image_size=self.image_size, mean=self.mean,
                               std=self.std, batch_size=self.batch_size, device=self.device,
                               num_workers=self.num_workers, amp=self.amp, progress=self.progress, desc=desc,
                               corrupt=self.cfg.data.corrupt, skipped=left_out)
        self.note_skipped(source.name, [path for _, path in left_out])
        if skipped is not None:
            skipped += left_out
        return out

    def note_skipped(self, split: str, paths: list[str]) -> None:
        """Files of ``split`` left out as undecodable (data.corrupt=skip): a note on stderr naming how many and a
        few, and every path in the protocol's ``skipped_files`` (the --json output)."""
        known = self.protocol.setdefault("skipped_files", {}).setdefault(split, [])
        new = [p for p in dict.fromkeys(paths) if p not in known]
        if not new:
            return
        known += new
        print(f"note: left out {counted(len(new), 'undecodable image')} of {split} (data.corrupt=skip; error stops "
              f"instead): {', '.join(new[:3])}{' ...' if len(new) > 3 else ''}", file=sys.stderr, flush=True)


def has_preset(name: str) -> bool:
    """Whether dataset ``name`` has a preset of its own or borrows one (``PRESET_OF``)."""
    return PRESET_OF.get(name, name) in preset_names()


def dataset_config(name: str) -> Config:
    """A config for dataset ``name``: its preset (image size, eval splits, augmentation), else the defaults."""
    if has_preset(name):
        cfg = load_config(PRESET_OF.get(name, name))
    else:
        cfg = Config()
        cfg.data.eval_train_split, cfg.data.eval_test_split = DEFAULT_SPLITS
        if name == "synthetic":
            cfg.data.image_size = cfg.data.synthetic_image_size
    cfg.data.name = name
    return cfg


def eval_config(checkpoint_config: dict[str, Any] | None, args: argparse.Namespace, origin: str) -> Config:
    """The evaluation config: the checkpoint's (or a dataset's defaults), with the data flags applied."""
    cfg = config_from_dict(checkpoint_config, origin=origin) if checkpoint_config is not None else None
    dataset = getattr(args, "dataset", None)
    if cfg is None and dataset is None:
        raise ConfigError(f"{origin} holds only backbone weights and no training config: say which dataset to "
                          f"evaluate on with --dataset (and --data-path)")
    from_defaults = cfg is None or (dataset is not None and dataset != cfg.data.name)
    if from_defaults:
        base = dataset_config(dataset)
        if cfg is None:
            cfg = base
        else:  # another dataset: none of the checkpoint's data values apply but the input size the model learnt at
            base.data.image_size = cfg.data.image_size
            cfg.data = base.data
    d = cfg.data
    options = [o if o.startswith("data.") else f"data.{o}" for o in getattr(args, "data_option", []) or []]
    if options:
        merge(cfg, parse_overrides(options), "--data-option")
        if checkpoint_config is None and d.name == "synthetic" and not any(o.startswith("data.image_size=")
                                                                            for o in options):
            d.image_size = d.synthetic_image_size  # evaluate generated images at the size they are drawn at
    for flag, key in (("data_path", "path"), ("train_split", "eval_train_split"), ("test_split", "eval_test_split"),
                      ("image_size", "image_size"), ("num_workers", "num_workers")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(d, key, value)
    d.eval_test_split = resolve_split(cfg, d.eval_test_split) or d.eval_test_split  # 'auto' -> its name, if any
    if d.image_size < 1:
        raise ConfigError(f"--image-size must be a positive integer, got {d.image_size}")
    if d.num_workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {d.num_workers}")
    return cfg


def require_labels(source, what: str, allow_unlabelled: bool = False) -> None:
    """DataError unless ``source`` has images and labels (every image labelled unless ``allow_unlabelled``)."""
    if len(source) == 0:
        raise DataError(f"{source.name}: the {what} split is empty")
    unlabelled = int((source.labels < 0).sum())
    if unlabelled == len(source) or (unlabelled and not allow_unlabelled):
        raise DataError(f"{source.name}: {unlabelled} of {len(source)} images of the {what} split have no label (-1); "
                        f"choose a labelled split with --train-split / --test-split")


def check_feature_kind(model: PretrainedBackbone, kind: str, path: str | None = None) -> None:
    """ConfigError (one line on the CLI) for a feature kind the model cannot give; ``path`` names the checkpoint."""
    if kind not in FEATURE_KINDS:
        raise ConfigError(f"unknown feature kind {kind!r}; expected one of {list(FEATURE_KINDS)}")
    if kind == "hypercolumn_head" and model.hyper_head is None:
        what = (f"the random-init {model.info.get('method')} encoder has no" if model.info.get("format") ==
                "random-init" else f"{path or model.info.get('path', 'the checkpoint')} has no trained")
        raise ConfigError(f"{what} hypercolumn head (only CGH checkpoints do); use --features "
                          f"global or hypercolumn (the pooled [layer3, layer4] stack, any backbone)")


def resolve_eval_setup(args: argparse.Namespace, *, need_train: bool = True, need_test: bool = True,
                       allow_unlabelled_train: bool = False, learns_from_train: bool | None = None) -> EvalSetup:
    """Load the backbone and open the evaluation splits as the flags and the checkpoint's config say.
    ``learns_from_train`` (default ``need_train``): the command fits or votes with the train split, so a test split
    holding the same images is refused (``check_held_out``)."""
    device = resolve_device(args.device)
    model, ckpt_config, path = load_evaluated(args, device)  # the checkpoint's network, or --random-init's
    random_init = random_init_protocol(model, getattr(args, "preset", None))
    cfg = eval_config(ckpt_config, args, path)
    d = cfg.data
    train_source = open_split(cfg, d.eval_train_split) if need_train else None
    test_source = open_split(cfg, d.eval_test_split) if need_test else None
    # random initial weights have seen no image: no split is "the one they were pretrained on"
    warnings = check_held_out(cfg, None if random_init["random_init"] else ckpt_config, need_test,
                              need_train if learns_from_train is None else learns_from_train)
    if train_source is not None:
        require_labels(train_source, "train", allow_unlabelled=allow_unlabelled_train)
    if test_source is not None:
        require_labels(test_source, "test")
    if train_source is not None and test_source is not None:
        check_same_classes(train_source, test_source)
    if ckpt_config is None and getattr(args, "image_size", None) is None and d.name in ("folder", "npz"):
        # a folder or .npz has no size of its own, and the file does not say what the model was trained at
        stem = (" (its 3x3 CIFAR stem suggests small images: 32 to 96 px)"
                if model.info.get("stem") == "cifar" and d.image_size >= 224 else "")
        print(f"note: {path} holds no training config, so it is evaluated at {d.image_size} px, the {d.name} "
              f"default{stem}; give the size it was trained at with --image-size", file=sys.stderr, flush=True)
    sources = [s for s in (train_source, test_source) if s is not None]
    mean, std = dataset_normalization(cfg.data)
    batch_size = args.batch_size if getattr(args, "batch_size", None) is not None else DEFAULT_BATCH_SIZE
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    progress = args.progress if getattr(args, "progress", None) is not None else sys.stderr.isatty()
    amp = resolve_amp(getattr(args, "amp", "none"), device)
    info = model.info
    protocol = {
        "checkpoint": None if path.startswith("preset ") else path,
        "checkpoint_format": info.get("format"),
        **random_init,
        "which": info.get("which", "student"),
        "method": info.get("method"),
        "arch": info.get("arch"),
        "stem": info.get("stem"),
        "width": info.get("width"),
        "epoch": info.get("epoch"),
        "step": info.get("step"),
        "dataset": d.name,
        "data_path": d.path,
        "train_split": d.eval_train_split if need_train else None,
        "test_split": d.eval_test_split if need_test else None,
        "num_train": len(train_source) if train_source is not None else None,
        "num_test": len(test_source) if test_source is not None else None,
        "num_classes": num_classes_of(*sources) if sources else None,
        "image_size": d.image_size,
        "test_transform": transform_name(d.image_size),
        "mean": list(mean),
        "std": list(std),
        "device": str(device),
        "amp": str(amp).replace("torch.", "") if amp is not None else "none",
        "corrupt": d.corrupt,
        **({"warnings": warnings} if warnings else {}),
    }
    return EvalSetup(model, cfg, train_source, test_source, protocol["num_classes"] or 0, d.image_size, mean, std,
                     device, amp, batch_size, d.num_workers, progress, protocol)


def check_held_out(cfg: Config, checkpoint_config: dict[str, Any] | None, test: bool, learns_from_train: bool
                   ) -> list[str]:
    """Refuse a test split holding the images of the train split a command learns from (ConfigError: a kNN vote or
    a probe measured on its own training images means nothing); warn (stderr, and returned for the protocol) when
    it holds the images the checkpoint was pretrained on."""
    d = cfg.data
    if not test:
        return []
    where = split_location(cfg, d.eval_test_split)
    if learns_from_train and split_location(cfg, d.eval_train_split) == where:
        raise ConfigError(f"the test split {d.name}:{d.eval_test_split} holds the same images as the train split "
                          f"{d.name}:{d.eval_train_split} ({where}): the accuracy would be measured on the training "
                          f"images; keep held-out images apart (PATH/train/<class>/ and PATH/val/<class>/) or name "
                          f"other splits with --train-split / --test-split")
    if checkpoint_config is None:
        return []
    pretrained = config_from_dict(checkpoint_config, origin="checkpoint")
    pretrained.data.folder_splits = saved_folder_splits(checkpoint_config)
    if pretrained.data.name != d.name or split_location(pretrained, pretrained.data.split) != where:
        return []
    warning = (f"the test split {d.name}:{d.eval_test_split} ({where}) is the split this checkpoint was pretrained "
               f"on: the result is not measured on held-out images")
    print(f"warning: {warning}", file=sys.stderr, flush=True)
    return [warning]


def transform_name(image_size: int) -> str:
    """The test transform in words, for the protocol."""
    resize = eval_resize(image_size)
    if resize == image_size:
        return f"normalise (images resized to {image_size} only when their size differs)"
    return f"Resize {resize} + CenterCrop {image_size}"


def emit(args: argparse.Namespace, command: str, metrics: dict[str, Any], protocol: dict[str, Any],
         line: str) -> dict[str, Any]:
    """Print the result: one JSON object with ``--json``, else the human line. Returns the JSON-able result."""
    result = {"command": command, "metrics": metrics, "protocol": protocol}
    if getattr(args, "json", False):
        print(json.dumps(result, allow_nan=True), flush=True)
    else:
        print(line, flush=True)
    return result


def checkpoint_label(protocol: dict[str, Any]) -> str:
    """``cgh resnet18 epoch 200`` style description of the evaluated weights, for the human result line
    (``random init (seed 0) of cgh resnet18`` for --random-init)."""
    if protocol.get("random_init"):
        return f"random init (seed {protocol['init_seed']}) of {protocol.get('method')} {protocol.get('arch')}"
    parts = [str(protocol.get("method") or protocol.get("checkpoint_format") or "backbone"), str(protocol.get("arch"))]
    if protocol.get("epoch") is not None:
        parts.append(f"epoch {protocol['epoch']}")
    return " ".join(parts)
