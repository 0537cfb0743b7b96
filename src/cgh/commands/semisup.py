"""``cgh semisup``: fine-tune with 1 % / 10 % of the labels (docs/evaluation.md#semi-supervised;
cgh.evaluate.semisup)."""

from __future__ import annotations

import argparse

from cgh.commands.common import add_eval_arguments, checkpoint_label, emit, resolve_eval_setup
from cgh.data.configured import check_same_classes
from cgh.errors import ConfigError
from cgh.evaluate.classify import RRC_SCALE
from cgh.evaluate.features import num_classes_of
from cgh.evaluate.semisup import finetune, labelled_subset
from cgh.runtime import dist
from cgh.wording import counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser, features=False)
    parser.add_argument("--fraction", type=float, default=0.01,
                        help="fraction of the labels: 0.01 or 0.1 use the standard ImageNet lists on ImageNet; any "
                             "value in (0, 1] draws a class-balanced subset elsewhere (default 0.01)")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the class-balanced subset")
    parser.add_argument("--epochs", type=int, default=70, help="docs/evaluation.md#semi-supervised: 70")
    parser.add_argument("--trunk-lr", type=float, default=0.005,
                        help="lr of the backbone (docs/evaluation.md#semi-supervised: 0.005)")
    parser.add_argument("--head-lr", type=float, default=0.02,
                        help="lr of the fresh fc (docs/evaluation.md#semi-supervised: 0.02)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=0.0, help="docs/evaluation.md#semi-supervised: 0")
    parser.add_argument("--milestones", type=int, nargs="*", default=[30, 60],
                        help="MultiStepLR epochs (docs/evaluation.md#semi-supervised)")
    parser.add_argument("--gamma", type=float, default=0.1,
                        help="MultiStepLR factor (docs/evaluation.md#semi-supervised: 0.1)")
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate on the test split every N epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fc init, the batch order and the crops")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.fraction <= 1 or args.epochs < 1 or args.eval_every < 1:
        raise ConfigError(f"need --fraction in (0, 1], --epochs >= 1 and --eval-every >= 1; got {args.fraction}, "
                          f"{args.epochs}, {args.eval_every}")
    if args.milestones != sorted(args.milestones):
        raise ConfigError(f"--milestones must be increasing epochs, got {args.milestones}")
    setup = resolve_eval_setup(args, need_train=False, learns_from_train=True)  # the train split: labelled_subset
    dist.init_from_env(setup.device)
    world, main = dist.world_size(), dist.is_main()
    try:
        train_source, subset = labelled_subset(setup.cfg, args.fraction, args.subset_seed)
        check_same_classes(train_source, setup.test_source)
        num_classes = max(setup.num_classes, num_classes_of(train_source))
        batch_size = setup.batch_size
        skipped: dict[str, list[str]] = {}
        _, result = finetune(setup.model.backbone, train_source, setup.test_source, num_classes,
                             image_size=setup.image_size, mean=setup.mean, std=setup.std, epochs=args.epochs,
                             trunk_lr=args.trunk_lr, head_lr=args.head_lr, momentum=args.momentum,
                             weight_decay=args.weight_decay, milestones=args.milestones, gamma=args.gamma,
                             batch_size=batch_size, seed=args.seed, device=setup.device, amp=setup.amp,
                             num_workers=setup.num_workers, eval_every=args.eval_every, log=setup.progress,
                             corrupt=setup.cfg.data.corrupt, skipped=skipped)
    finally:
        dist.shutdown()
    for split, paths in skipped.items() if main else ():
        setup.note_skipped(split, paths)
    protocol = dict(
        setup.protocol, features="fine-tuned network", fraction=args.fraction, subset=subset,
        train_split=train_source.name, num_train=len(train_source), num_classes=num_classes, epochs=args.epochs,
        trunk_lr=args.trunk_lr, head_lr=args.head_lr, momentum=args.momentum, weight_decay=args.weight_decay,
        milestones=list(args.milestones), gamma=args.gamma, batch_size=min(batch_size, len(train_source)),
        optimizer="SGD", seed=args.seed, subset_seed=args.subset_seed,
        train_transform=f"RandomResizedCrop {setup.image_size} scale {list(RRC_SCALE)} + flip",
        processes=world, bn=("SyncBN" if world > 1 and setup.device.type == "cuda" else "plain BN") + ", train mode",
        normalisation_note="dataset statistics (the authors' std 0.228 typo, docs/evaluation.md#semi-supervised, is "
                           "fixed)",
    )
    m = result.metrics()
    line = (f"semi-supervised {args.fraction:g} ({counted(len(train_source), 'labelled image')}) {protocol['dataset']} "
            f"{protocol['test_split']} ({checkpoint_label(protocol)}, {counted(args.epochs, 'epoch')}): best top-1 "
            f"{m['best_top1']:.2f}% top-5 {m['best_top5']:.2f}% (epoch {m['best_epoch']}), final top-1 "
            f"{m['final_top1']:.2f}% top-5 {m['final_top5']:.2f}%")
    if main:
        emit(args, "semisup", m, protocol, line)
    return 0
