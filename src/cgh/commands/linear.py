"""``cgh linear``: a linear probe on frozen global or hypercolumn features (docs/evaluation.md#linear-probe;
cgh.evaluate.linear)."""

from __future__ import annotations

import argparse
from typing import Any

from cgh.commands.common import (
    add_eval_arguments,
    check_feature_kind,
    checkpoint_label,
    emit,
    resolve_eval_setup,
)
from cgh.errors import ConfigError
from cgh.evaluate.classify import RRC_SCALE
from cgh.evaluate.linear import (
    AUGMENTS,
    FEATURE_NORMS,
    PROTOCOLS,
    check_unchanged,
    protocol_numbers,
    snapshot_state,
    train_linear,
    train_linear_augmented,
)
from cgh.wording import counted

_PROTOCOL_FLAGS = ("lr", "momentum", "weight_decay", "epochs", "batch_size", "augment", "feature_norm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser, protocol="docs/evaluation.md#linear-probe")
    parser.add_argument("--protocol", choices=("auto", *PROTOCOLS), default="auto",
                        help="imagenet: the authors' (docs/evaluation.md#linear-probe); small: cached features + "
                             "non-affine BN; auto: imagenet for ImageNet/ImageNet-100, else small")
    parser.add_argument("--augment", choices=AUGMENTS, default=None,
                        help="none: train on features extracted once (fast); rrc: RandomResizedCrop(0.08-1) + flip "
                             "through the frozen backbone every step (default: the protocol's)")
    parser.add_argument("--feature-norm", choices=FEATURE_NORMS, default=None,
                        help="bn: BatchNorm1d without affine parameters before the linear layer; none: raw features "
                             "(default: the protocol's)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the protocol's (100)")
    parser.add_argument("--lr", type=float, default=None, help="SGD lr, not batch-scaled (default: 0.3)")
    parser.add_argument("--momentum", type=float, default=None, help="default 0.9")
    parser.add_argument("--weight-decay", type=float, default=None, help="default 0")
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate on the test split every N epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe's init, batch order and crops")


def resolve_protocol(args: argparse.Namespace, dataset: str) -> tuple[str, dict[str, Any]]:
    """The protocol's numbers with the flags that were given applied on top."""
    return protocol_numbers(args.protocol, dataset, **{k: getattr(args, k, None) for k in _PROTOCOL_FLAGS})


def run(args: argparse.Namespace) -> int:
    setup = resolve_eval_setup(args)
    name, p = resolve_protocol(args, setup.cfg.data.name)
    if p["epochs"] < 1 or p["lr"] <= 0 or p["batch_size"] < 1 or p["weight_decay"] < 0 or args.eval_every < 1:
        raise ConfigError(f"need --epochs >= 1, --lr > 0, --batch-size >= 1, --weight-decay >= 0 and --eval-every "
                          f">= 1; got {p}")
    model, kind = setup.model, args.features
    check_feature_kind(model, kind, args.checkpoint)
    # Freeze: eval mode (BN statistics untouched) and no gradients (docs/evaluation.md#linear-probe); checked bit for
    # bit afterwards.
    model.eval().requires_grad_(False)
    before = snapshot_state(model)
    test_features, test_labels = setup.features(setup.test_source, kind, desc="test features")
    common = dict(epochs=p["epochs"], lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
                  batch_size=p["batch_size"], feature_norm=p["feature_norm"], seed=args.seed, device=setup.device,
                  eval_every=args.eval_every, log=setup.progress)
    if p["augment"] == "none":
        train_features, train_labels = setup.features(setup.train_source, kind, desc="train features")
        result = train_linear(train_features, train_labels, test_features, test_labels, setup.num_classes, **common)
    else:
        skipped: list[str] = []
        result = train_linear_augmented(model, kind, setup.train_source, test_features, test_labels,
                                        setup.num_classes, image_size=setup.image_size, mean=setup.mean,
                                        std=setup.std, amp=setup.amp, num_workers=setup.num_workers,
                                        corrupt=setup.cfg.data.corrupt, skipped=skipped, **common)
        setup.note_skipped(setup.train_source.name, skipped)
    check_unchanged(model, before)
    protocol = dict(
        setup.protocol, features=kind, feature_dim=model.feature_dim(kind), feature_norm=p["feature_norm"],
        protocol=name, augment=p["augment"],
        train_transform=(f"RandomResizedCrop {setup.image_size} scale {list(RRC_SCALE)} + flip"
                         if p["augment"] == "rrc" else "test transform, features extracted once"),
        epochs=p["epochs"], lr=p["lr"], lr_schedule="cosine per iteration to 0, no warm-up", momentum=p["momentum"],
        weight_decay=p["weight_decay"], batch_size=p["batch_size"], optimizer="SGD", seed=args.seed,
        init="weights N(0, 0.01), bias 0", backbone="frozen, eval mode, checked bit-identical after training",
    )
    m = result.metrics()
    line = (f"linear probe {protocol['dataset']} {protocol['test_split']} ({kind} features, "
            f"{checkpoint_label(protocol)}, {name} protocol, {counted(p['epochs'], 'epoch')}): "
            f"best top-1 {m['best_top1']:.2f}% top-5 {m['best_top5']:.2f}% "
            f"(epoch {m['best_epoch']}), final top-1 {m['final_top1']:.2f}% top-5 {m['final_top5']:.2f}%")
    emit(args, "linear", m, protocol, line)
    return 0
