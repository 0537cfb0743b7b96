"""Semi-supervised fine-tuning with 1 % or 10 % of the labels (docs/evaluation.md#semi-supervised, the authors'
``eval_semisup.py`` from SwAV).

The whole network is trained (train mode) with a fresh ``fc``: the pretrained ResNet (``load_backbone(...).backbone``)
plus ``nn.Linear(num_features, num_classes)`` at PyTorch's default init (docs/evaluation.md#semi-supervised leaves the
fc at its random init). BN is plain BN on one process and SyncBN when distributed (docs/evaluation.md#semi-supervised
converts to SyncBN; on one process that is the same computation, so we do not pay for it).

Defaults (docs/evaluation.md#semi-supervised, all flags): SGD momentum 0.9, wd 0; trunk lr 0.005, head (fc) lr 0.02;
MultiStepLR at epochs [30, 60] with gamma 0.1; 70 epochs; batch 256 in total. Train augmentation RandomResizedCrop(scale
0.08-1) + flip on device; test Resize 256 + CenterCrop 224 at 224 px, plain normalisation for small images
(docs/method.md#test-transforms). Every epoch sees every labelled image (the final partial batch is kept, as the
authors' loader does). The best top-1 and top-5 over the evaluated epochs are reported, with the final ones.

FIX (docs/evaluation.md#semi-supervised, docs/method.md#quirk-eval-scripts): the authors normalise with std (0.228,
0.224, 0.225), a typo inherited from SwAV; we use the dataset's own statistics (ImageNet: 0.229, 0.224, 0.225), the ones
the backbone was pretrained with.

Labelled subsets: for ImageNet and ImageNet-100 with ``--fraction 0.01`` / ``0.1``, the standard SimCLR lists
shipped with cgh (splits ``train_1pct`` / ``train_10pct``, 12811 / 128116 images; ImageNet-100 keeps its classes'
files). Any other dataset or fraction: a class-balanced draw of round(fraction * n_c) images (at least one) from
every class c, reproducible from ``--subset-seed`` and independent of the training seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgh.augment import EvalTransform
from cgh.data import GlobalBatchSampler, PretrainLoader, build_eval_loader, open_split
from cgh.evaluate.classify import (  # noqa: F401 - RRC_SCALE re-exported
    IMAGENET_DATASETS,
    RRC_SCALE,
    EpochLog,
    ProbeResult,
    percent,
    topk_hits,
    train_crops,
)
from cgh.evaluate.features import collect
from cgh.model.backbone import ResNet
from cgh.runtime import dist
from cgh.runtime.device import autocast

IMAGENET_LISTS = {0.01: "train_1pct", 0.1: "train_10pct"}  # docs/evaluation.md#semi-supervised: the SimCLR subset files
FinetuneResult = ProbeResult  # the fine-tuning's result: the probes' result type with steps and images per epoch


class Classifier(nn.Module):
    """A pretrained ResNet trunk and a fresh linear head: logits = fc(pool(layer4)). ``fc`` is the head
    (docs/evaluation.md#semi-supervised: the parameters named ``fc`` get the head lr)."""

    def __init__(self, backbone: ResNet, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.fc = nn.Linear(backbone.num_features, num_classes)  # PyTorch's default init, as
                                                                 # docs/evaluation.md#semi-supervised

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


def labelled_subset(cfg, fraction: float, seed: int = 0, train_source=None):
    """(source, description) of the labelled training images for ``fraction`` of the labels of ``cfg.data``'s
    training split: the shipped ImageNet lists for ImageNet / ImageNet-100 at 0.01 / 0.1, else ``balanced_subset``.
    ``train_source`` is the already opened training split (opened here when None)."""
    d = cfg.data
    split = IMAGENET_LISTS.get(fraction) if d.name in IMAGENET_DATASETS else None
    if split is not None:
        return open_split(cfg, split), f"{d.name} list {split} (SimCLR's {fraction:.0%} subset)"
    source = train_source if train_source is not None else open_split(cfg, d.eval_train_split)
    idx = balanced_subset(source.labels, fraction, seed)
    return (source.subset(idx, f"{source.name}[{fraction:g} balanced, seed {seed}]"),
            f"class-balanced {fraction:g} of {source.name}, seed {seed}")


@torch.no_grad()
def evaluate_classifier(classifier: nn.Module, source, *, image_size: int, mean, std, batch_size: int = 256,
                        device: str | torch.device = "cpu", amp: torch.dtype | None = None, num_workers: int = 0,
                        corrupt: str = "error", skipped: list[str] | None = None) -> tuple[float, float]:
    """(top-1, top-5) in percent of ``classifier`` (eval mode) on a labelled source with the test transform; with
    ``corrupt='skip'`` an undecodable image is left out and its path appended to ``skipped``."""
    device = torch.device(device)
    transform = EvalTransform(image_size, mean, std).to(device)
    loader = build_eval_loader(source, image_size, batch_size, num_workers=num_workers, device=device,
                               corrupt=corrupt)
    was_training = classifier.training
    classifier.eval()
    try:
        logits, labels = collect(classifier, loader, transform, device=device, amp=amp, out_device=device)
    finally:
        classifier.train(was_training)
    if skipped is not None:
        skipped += [path for _, path in loader.skipped]
    if labels.numel() == 0:
        return percent(0, 0, 0)
    return percent(*topk_hits(logits, labels), labels.shape[0])


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
    corrupt: str = "error",
    skipped: dict[str, list[str]] | None = None,
) -> tuple[Classifier, ProbeResult]:
    """Fine-tune ``backbone`` (updated in place) with a fresh fc on the labelled ``train_source``; evaluate on
    ``test_source`` every ``eval_every`` epochs and at the end. Numbers as in the module docstring
    (docs/evaluation.md#semi-supervised). ``batch_size`` is the global batch; it is capped at the number of labelled
    images so that every epoch has a step. corrupt: an undecodable image is a DataError ('error'), or ('skip')
    replaced in its training batch by another of it, left out of the test split, and its path appended to
    ``skipped[source.name]`` each time it is met.
    """
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
    if world > 1 and device.type == "cuda":  # docs/evaluation.md#semi-supervised: SyncBN across GPUs; plain BN on one
                                             # process (the same)
        # NOTE: PyTorch's SyncBatchNorm runs on GPUs only; several CPU processes (tests) keep per-process BN.
        classifier = nn.SyncBatchNorm.convert_sync_batchnorm(classifier)
    optimizer = build_optimizer(classifier, trunk_lr, head_lr, momentum, weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    net: nn.Module = classifier
    if world > 1:
        net = nn.parallel.DistributedDataParallel(classifier, device_ids=[device] if device.type == "cuda" else None)
    specs, augment = train_crops(image_size, mean, std)
    augment = augment.to(device)
    global_batch = min(batch_size, len(train_source))
    global_batch -= global_batch % world
    # The authors' loader keeps the final partial batch (drop_last False, docs/evaluation.md#semi-supervised): with 1 %
    # of CIFAR-10 (500 images) and batch 256 that is half of every epoch. It is dropped only when a process would get
    # fewer than 2 images of it, which train-mode BN cannot normalise.
    tail = len(train_source) % global_batch
    sampler = GlobalBatchSampler(len(train_source), global_batch, dist.rank(), world, seed, shuffle=True,
                                 drop_last=0 < tail < 2 * world)
    loader = PretrainLoader(train_source, specs, sampler, num_workers=num_workers, device=device, corrupt=corrupt)
    epoch_log = EpochLog(epochs, log and dist.is_main())
    loss_value = float("nan")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        classifier.train()  # the whole network in train mode (docs/evaluation.md#semi-supervised); BN statistics are
                            # updated
        loss_sum, steps, seen = torch.zeros((), device=device), 0, 0
        for batch in loader:
            seen += batch.labels.shape[0]
            (x,) = augment(batch)  # (B, 3, S, S)
            with autocast(device, amp):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), batch.labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            steps += 1
        if skipped is not None:
            skipped.setdefault(train_source.name, []).extend(loader.bad_files)
        scheduler.step()  # per epoch (docs/evaluation.md#semi-supervised: MultiStepLR at epochs 30 and 60)
        loss_value = float(dist.all_reduce_mean(loss_sum / max(1, steps)))
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            # Every process evaluates the whole test split: identical numbers on all ranks, no sharding arithmetic.
            top1, top5 = evaluate_classifier(classifier, test_source, image_size=image_size, mean=mean, std=std,
                                             batch_size=max(1, batch_size // world), device=device, amp=amp,
                                             num_workers=num_workers, corrupt=corrupt,
                                             skipped=None if skipped is None else
                                             skipped.setdefault(test_source.name, []))
            epoch_log.record(epoch + 1, loss_value, top1, top5)
    seen_all = int(dist.all_reduce_sum(torch.tensor([float(seen)], device=device)).item())
    return classifier, epoch_log.result(loss_value, steps_per_epoch=steps, images_per_epoch=seen_all)
