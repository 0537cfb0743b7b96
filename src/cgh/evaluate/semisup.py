"""Semi-supervised fine-tuning with 1 % or 10 % of the labels (SPEC 5.4, the authors' ``eval_semisup.py`` from SwAV).

The whole network is trained (train mode) with a fresh ``fc``: the pretrained ResNet (``load_backbone(...).backbone``)
plus ``nn.Linear(num_features, num_classes)`` at PyTorch's default init (SPEC 5.4 leaves the fc at its random init).
BN is plain BN on one process and SyncBN when distributed (SPEC 5.4 converts to SyncBN; on one process that is the
same computation, so we do not pay for it).

Defaults (SPEC 5.4, all flags): SGD momentum 0.9, wd 0; trunk lr 0.005, head (fc) lr 0.02; MultiStepLR at epochs
[30, 60] with gamma 0.1; 70 epochs; batch 256 in total. Train augmentation RandomResizedCrop(scale 0.08-1) + flip on
device; test Resize 256 + CenterCrop 224 at 224 px, plain normalisation for small images (SPEC 3.4). Every epoch
sees every labelled image (the final partial batch is kept, as the authors' loader does). The best top-1 and top-5
over the evaluated epochs are reported, with the final ones.

FIX (SPEC 5.4, 7.15): the authors normalise with std (0.228, 0.224, 0.225), a typo inherited from SwAV; we use the
dataset's own statistics (ImageNet: 0.229, 0.224, 0.225), the ones the backbone was pretrained with.

Labelled subsets: for ImageNet and ImageNet-100 with ``--fraction 0.01`` / ``0.1``, the standard SimCLR lists
shipped with cgh (splits ``train_1pct`` / ``train_10pct``, 12811 / 128116 images; ImageNet-100 keeps its classes'
files). Any other dataset or fraction: a class-balanced draw of round(fraction * n_c) images (at least one) from
every class c, reproducible from ``--subset-seed`` and independent of the training seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgh.backbone import ResNet

IMAGENET_LISTS = {0.01: "train_1pct", 0.1: "train_10pct"}  # SPEC 5.4: the SimCLR subset files
IMAGENET_DATASETS = ("imagenet", "imagenet100")
RRC_SCALE = (0.08, 1.0)  # SPEC 5.4: RandomResizedCrop(224) with torchvision's default scale


class Classifier(nn.Module):
    """A pretrained ResNet trunk and a fresh linear head: logits = fc(pool(layer4)). ``fc`` is the head (SPEC 5.4:
    the parameters named ``fc`` get the head lr)."""

    def __init__(self, backbone: ResNet, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.fc = nn.Linear(backbone.num_features, num_classes)  # PyTorch's default init, as SPEC 5.4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone.features(x))  # (N, C)


def build_optimizer(classifier: Classifier, trunk_lr: float = 0.005, head_lr: float = 0.02, momentum: float = 0.9,
                    weight_decay: float = 0.0) -> torch.optim.SGD:
    """SGD with two groups, ``trunk`` (every backbone parameter) at ``trunk_lr`` and ``head`` (fc) at ``head_lr``."""
    head = list(classifier.fc.parameters())
    head_ids = {id(p) for p in head}
    trunk = [p for p in classifier.parameters() if id(p) not in head_ids]
    return torch.optim.SGD([{"params": trunk, "lr": trunk_lr, "name": "trunk"},
                            {"params": head, "lr": head_lr, "name": "head"}],
                           lr=head_lr, momentum=momentum, weight_decay=weight_decay)


def balanced_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a class-balanced ``fraction`` of the labelled images: round(fraction * n_c), at least 1, from
    each class c present (unlabelled -1 rows are never drawn). The same (labels, fraction, seed) give the same subset;
    each class's draw uses its own generator (seeded from ``seed`` and the class), so a class's picks do not depend on
    the other classes."""
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = labels.cpu()
    picked = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        members = (labels == c).nonzero().squeeze(1)  # (n_c,)
        take = max(1, round(fraction * members.numel()))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + int(c))
        picked.append(members[torch.randperm(members.numel(), generator=gen)[:take]])
    if not picked:
        raise ValueError("balanced_subset: no labelled image (every label is -1)")
    return torch.cat(picked).sort().values


def subset_source(source, indices: torch.Tensor, name: str):
    """The rows ``indices`` of an ArraySource or FileSource, as a source of the same kind named ``name``."""
    from cgh.data.base import ArraySource, FileSource

    idx = indices.to(torch.int64)
    if isinstance(source, ArraySource):
        return ArraySource(source.images[idx].contiguous(), source.labels[idx], source.classes, name)
    if isinstance(source, FileSource):
        return FileSource(source.root, [source.paths[i] for i in idx.tolist()], source.labels[idx], source.classes,
                          name)
    raise ValueError(f"expected an ArraySource or FileSource, got {type(source).__name__}")


def labelled_subset(cfg, fraction: float, seed: int = 0, train_source=None):
    """(source, description) of the labelled training images for ``fraction`` of the labels of ``cfg.data``'s
    training split: the shipped ImageNet lists for ImageNet / ImageNet-100 at 0.01 / 0.1, else ``balanced_subset``.
    ``train_source`` is the already opened training split (opened here when None)."""
    from cgh.train import open_split

    d = cfg.data
    split = IMAGENET_LISTS.get(fraction) if d.name in IMAGENET_DATASETS else None
    if split is not None:
        return open_split(cfg, split), f"{d.name} list {split} (SimCLR's {fraction:.0%} subset)"
    source = train_source if train_source is not None else open_split(cfg, d.eval_train_split)
    idx = balanced_subset(source.labels, fraction, seed)
    return (subset_source(source, idx, f"{source.name}[{fraction:g} balanced, seed {seed}]"),
            f"class-balanced {fraction:g} of {source.name}, seed {seed}")


@dataclasses.dataclass
class FinetuneResult:
    best_top1: float
    best_top5: float
    best_epoch: int
    final_top1: float
    final_top5: float
    final_loss: float
    history: list[dict[str, float]]
    seconds: float
    steps_per_epoch: int = 0
    images_per_epoch: int = 0  # over all processes; below the labelled count only when a 1-image tail is dropped

    def metrics(self) -> dict[str, Any]:
        return {"best_top1": self.best_top1, "best_top5": self.best_top5, "best_epoch": self.best_epoch,
                "final_top1": self.final_top1, "final_top5": self.final_top5, "final_train_loss": self.final_loss,
                "steps_per_epoch": self.steps_per_epoch, "images_per_epoch": self.images_per_epoch,
                "seconds": round(self.seconds, 2)}


@torch.no_grad()
def evaluate_classifier(classifier: nn.Module, source, *, image_size: int, mean, std, batch_size: int = 256,
                        device: str | torch.device = "cpu", amp: torch.dtype | None = None, num_workers: int = 0
                        ) -> tuple[float, float]:
    """(top-1, top-5) in percent of ``classifier`` (eval mode) on a labelled source with the test transform."""
    from cgh.augment import EvalTransform
    from cgh.data import build_eval_loader
    from cgh.evaluate.features import eval_resize

    device = torch.device(device)
    transform = EvalTransform(image_size, mean, std, resize=eval_resize(image_size)).to(device)
    was_training = classifier.training
    classifier.eval()
    hits1 = hits5 = n = 0
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    for images, y in build_eval_loader(source, image_size, batch_size, num_workers=num_workers, device=device):
        with autocast:
            logits = classifier(transform(images.to(device)))  # (B, C)
        y = torch.as_tensor(y).to(device).view(-1, 1)
        ranked = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hits1 += int((ranked[:, :1] == y).sum())
        hits5 += int((ranked == y).any(dim=1).sum())
        n += y.shape[0]
    classifier.train(was_training)
    return (100.0 * hits1 / n, 100.0 * hits5 / n) if n else (float("nan"), float("nan"))


def finetune(
    backbone: ResNet,
    train_source,
    test_source,
    num_classes: int,
    *,
    image_size: int,
    mean,
    std,
    epochs: int = 70,
    trunk_lr: float = 0.005,
    head_lr: float = 0.02,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    milestones=(30, 60),
    gamma: float = 0.1,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp: torch.dtype | None = None,
    num_workers: int = 0,
    eval_every: int = 1,
    log: bool = False,
) -> tuple[Classifier, FinetuneResult]:
    """Fine-tune ``backbone`` (updated in place) with a fresh fc on the labelled ``train_source``; evaluate on
    ``test_source`` every ``eval_every`` epochs and at the end. Numbers as in the module docstring (SPEC 5.4).
    ``batch_size`` is the global batch; it is capped at the number of labelled images so that every epoch has a step.
    """
    from cgh import dist
    from cgh.augment import AugParams, ViewAugment, ViewSpec
    from cgh.data import GlobalBatchSampler, PretrainLoader

    if epochs < 1 or batch_size < 1 or trunk_lr < 0 or head_lr < 0 or eval_every < 1:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lrs >= 0, eval_every >= 1; got {epochs}, "
                         f"{batch_size}, {trunk_lr}, {head_lr}, {eval_every}")
    if len(train_source) < 2:  # train-mode BN needs two samples per batch
        raise ValueError(f"{train_source.name}: fine-tuning needs at least 2 labelled images, got {len(train_source)}")
    if bool((train_source.labels < 0).any()):
        raise ValueError(f"{train_source.name}: the fine-tuning split has unlabelled images (-1)")
    device = torch.device(device)
    torch.manual_seed(seed)
    classifier = Classifier(backbone, num_classes).to(device)
    world = dist.world_size()
    if world > 1 and device.type == "cuda":  # SPEC 5.4: SyncBN across GPUs; plain BN on one process (the same)
        # NOTE: PyTorch's SyncBatchNorm runs on GPUs only; several CPU processes (tests) keep per-process BN.
        classifier = nn.SyncBatchNorm.convert_sync_batchnorm(classifier)
    optimizer = build_optimizer(classifier, trunk_lr, head_lr, momentum, weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    net: nn.Module = classifier
    if world > 1:
        net = nn.parallel.DistributedDataParallel(classifier, device_ids=[device] if device.type == "cuda" else None)
    specs = [ViewSpec(image_size, RRC_SCALE, strong=False)]
    augment = ViewAugment(specs, AugParams(), mean, std).to(device)
    global_batch = min(batch_size, len(train_source))
    global_batch -= global_batch % world
    # The authors' loader keeps the final partial batch (drop_last False, SPEC 5.4): with 1 % of CIFAR-10 (500 images)
    # and batch 256 that is half of every epoch. It is dropped only when a process would get fewer than 2 images of
    # it, which train-mode BN cannot normalise.
    tail = len(train_source) % global_batch
    sampler = GlobalBatchSampler(len(train_source), global_batch, dist.rank(), world, seed, shuffle=True,
                                 drop_last=0 < tail < 2 * world)
    loader = PretrainLoader(train_source, specs, sampler, num_workers=num_workers, device=device, corrupt="error")
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    history: list[dict[str, float]] = []
    best, last, loss_value, start = (-1.0, float("nan"), 0), (float("nan"), float("nan")), float("nan"), time.time()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        classifier.train()  # the whole network in train mode (SPEC 5.4); BN statistics are updated
        loss_sum, steps, seen = torch.zeros((), device=device), 0, 0
        for batch in loader:
            seen += batch.labels.shape[0]
            (x,) = augment(batch)  # (B, 3, S, S)
            with autocast:
                logits = net(x)
            loss = F.cross_entropy(logits.float(), batch.labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            steps += 1
        scheduler.step()  # per epoch (SPEC 5.4: MultiStepLR at epochs 30 and 60)
        loss_value = float(dist.all_reduce_mean(loss_sum / max(1, steps)))
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            # Every process evaluates the whole test split: identical numbers on all ranks, no sharding arithmetic.
            last = evaluate_classifier(classifier, test_source, image_size=image_size, mean=mean, std=std,
                                       batch_size=max(1, batch_size // world), device=device, amp=amp,
                                       num_workers=num_workers)
            if last[0] > best[0]:
                best = (last[0], last[1], epoch + 1)
            history.append({"epoch": epoch + 1, "loss": loss_value, "top1": last[0], "top5": last[1]})
            if log and dist.is_main():
                print(f"epoch {epoch + 1}/{epochs}  loss {loss_value:.4f}  top-1 {last[0]:.2f}%  top-5 {last[1]:.2f}%",
                      file=sys.stderr, flush=True)
    seen_all = int(dist.all_reduce_sum(torch.tensor([float(seen)], device=device)).item())
    result = FinetuneResult(best[0], best[1], best[2], last[0], last[1], loss_value, history, time.time() - start,
                            steps, seen_all)
    return classifier, result


# ---------------------------------------------------------------------------------------------------------------------
# cgh semisup
# ---------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cgh.evaluate.features import add_checkpoint_arguments, add_data_arguments

    add_checkpoint_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--fraction", type=float, default=0.01,
                        help="fraction of the labels: 0.01 or 0.1 use the standard ImageNet lists on ImageNet; any "
                             "value in (0, 1] draws a class-balanced subset elsewhere (default 0.01)")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the class-balanced subset")
    parser.add_argument("--epochs", type=int, default=70, help="SPEC 5.4: 70")
    parser.add_argument("--trunk-lr", type=float, default=0.005, help="lr of the backbone (SPEC 5.4: 0.005)")
    parser.add_argument("--head-lr", type=float, default=0.02, help="lr of the fresh fc (SPEC 5.4: 0.02)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=0.0, help="SPEC 5.4: 0")
    parser.add_argument("--milestones", type=int, nargs="*", default=[30, 60], help="MultiStepLR epochs (SPEC 5.4)")
    parser.add_argument("--gamma", type=float, default=0.1, help="MultiStepLR factor (SPEC 5.4: 0.1)")
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate on the test split every N epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fc init, the batch order and the crops")


def run(args: argparse.Namespace) -> int:
    from cgh import dist
    from cgh.errors import ConfigError
    from cgh.evaluate.features import checkpoint_label, emit, num_classes_of, resolve_eval_setup

    if not 0 < args.fraction <= 1 or args.epochs < 1 or args.eval_every < 1:
        raise ConfigError(f"need --fraction in (0, 1], --epochs >= 1 and --eval-every >= 1; got {args.fraction}, "
                          f"{args.epochs}, {args.eval_every}")
    if args.milestones != sorted(args.milestones):
        raise ConfigError(f"--milestones must be increasing epochs, got {args.milestones}")
    setup = resolve_eval_setup(args, need_train=False)
    dist.init_from_env(setup.device)
    world, main = dist.world_size(), dist.is_main()
    try:
        train_source, subset = labelled_subset(setup.cfg, args.fraction, args.subset_seed)
        num_classes = max(setup.num_classes, num_classes_of(train_source))
        batch_size = setup.batch_size
        _, result = finetune(setup.model.backbone, train_source, setup.test_source, num_classes,
                             image_size=setup.image_size, mean=setup.mean, std=setup.std, epochs=args.epochs,
                             trunk_lr=args.trunk_lr, head_lr=args.head_lr, momentum=args.momentum,
                             weight_decay=args.weight_decay, milestones=args.milestones, gamma=args.gamma,
                             batch_size=batch_size, seed=args.seed, device=setup.device, amp=setup.amp,
                             num_workers=setup.num_workers, eval_every=args.eval_every, log=setup.progress)
    finally:
        dist.shutdown()
    protocol = dict(
        setup.protocol, features="fine-tuned network", fraction=args.fraction, subset=subset,
        train_split=train_source.name, num_train=len(train_source), num_classes=num_classes, epochs=args.epochs,
        trunk_lr=args.trunk_lr, head_lr=args.head_lr, momentum=args.momentum, weight_decay=args.weight_decay,
        milestones=list(args.milestones), gamma=args.gamma, batch_size=min(batch_size, len(train_source)),
        optimizer="SGD", seed=args.seed, subset_seed=args.subset_seed,
        train_transform=f"RandomResizedCrop {setup.image_size} scale {list(RRC_SCALE)} + flip",
        processes=world, bn=("SyncBN" if world > 1 and setup.device.type == "cuda" else "plain BN") + ", train mode",
        normalisation_note="dataset statistics (the authors' std 0.228 typo, SPEC 5.4, is fixed)",
    )
    m = result.metrics()
    line = (f"semi-supervised {args.fraction:g} ({len(train_source)} labelled images) {protocol['dataset']} "
            f"{protocol['test_split']} ({checkpoint_label(protocol)}, {args.epochs} epochs): best top-1 "
            f"{m['best_top1']:.2f}% top-5 {m['best_top5']:.2f}% (epoch {m['best_epoch']}), final top-1 "
            f"{m['final_top1']:.2f}% top-5 {m['final_top5']:.2f}%")
    if main:
        emit(args, "semisup", m, protocol, line)
    return 0
