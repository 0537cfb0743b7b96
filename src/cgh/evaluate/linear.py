"""Linear probe on frozen global or hypercolumn features (SPEC 5.3, and the supplementary's Table 1).

The probe is a frozen backbone kept in eval mode (BN statistics untouched, ``requires_grad_(False)``) plus ONE
``nn.Linear`` initialised N(0, 0.01) with bias 0 (SPEC 5.3), optionally after a BatchNorm1d *without* affine
parameters (``feature_norm="bn"``: a fixed standardisation of each feature, learned from the training features; it
adds no trainable parameter, so the classifier stays linear in the features). After training, the backbone's
weights and BN buffers (and the CGH head's, for ``hypercolumn_head``) are checked to be bit-identical to before.

Two training paths:
  - **features** (``augment="none"``): the training and test features are extracted once (test transform) and the
    linear layer is trained on the cached tensors: 100 epochs of CIFAR-10 take seconds. ``train_linear``.
  - **augmented** (``augment="rrc"``): every step crops and flips on device (RandomResizedCrop scale 0.08-1 + flip,
    SPEC 5.3) and runs the frozen backbone under ``no_grad``. ``train_linear_augmented``.
The test split is always evaluated on cached test features (the test transform is deterministic and the backbone is
frozen, so this is exact). Best and final top-1 / top-5 are reported.

Protocols (every number is also a flag):
  - ``imagenet`` = the authors' (SPEC 5.3, = ReSSL's linear_eval): SGD lr 0.3 (NOT batch-scaled), momentum 0.9,
    wd 0, 100 epochs, per-iteration cosine to 0, no warm-up, batch 256, train RRC(224, 0.08-1) + flip, test Resize 256
    + CenterCrop 224, no feature normalisation.
  - ``small`` (default for every other dataset): the same optimiser, schedule, epochs and batch, but on precomputed
    features (``augment="none"``) with the non-affine BN in front. Why: on 32-96 px datasets the probe's accuracy is
    decided by the features, and the cached path makes 100 epochs cost one feature pass instead of 100 backbone passes
    (on CPU: about a second instead of hours). The BN makes the lr independent of the feature scale, which differs
    between methods, layers, widths and training lengths, so the authors' lr 0.3 needs no per-checkpoint search (the
    measurement below). wd 0 as the authors: a linear layer over tens of thousands of cached features does not
    overfit in 100 epochs (final and best accuracies agree within a point below).

Hypercolumn probe (SPEC 5.3 leaves the choice open): ``--features hypercolumn`` is option (a), the global average
pool of the raw stacked [layer3 resized to layer4, layer4] map: 768-d for ResNet-18, 3072-d for ResNet-50. It is our
recommended hypercolumn probe because it exists for every method's checkpoint and for torchvision weights, so "global
vs hypercolumn" compares like with like across MoCo-v2, ReSSL and CGH (Table 1 of the supplementary puts them side by
side), and it probes the backbone, not a pretext head. Option (b), ``--features hypercolumn_head``, uses the frozen
trained CGH head's 1x1 conv-BN-ReLU (pooled, 512 / 2048-d): CGH checkpoints only. ``--feature-norm`` defaults to
``bn`` for the small protocol and to ``none`` for the authors' ImageNet protocol (their global probe has none, and
SPEC 5.3 asks for the same settings for the hypercolumn probe; pass ``--feature-norm bn`` to add it).

Measurement behind the defaults (synthetic data, 10 classes, 32 px, ResNet-18 CIFAR stem width 16; probe on cached
features, 100 epochs, batch 256, momentum 0.9, wd 0; final test top-1 %, 2000 test images for the first row, 1000
for the second; "bn / none" = ``feature_norm``):

    backbone                                   lr    global bn / none   hypercolumn bn / none
    supervised stand-in (fine-tuned 71.7 %)    0.03  79.1 / 79.4        81.7 / 79.8
                                               0.3   80.0 / 79.9        81.7 / 81.9
                                               3.0   77.7 / 78.0        81.1 / 80.5
    random init                                0.3   17.2 / 15.3        18.6 / 15.6   (train loss 1.9 / 4.4, 1.8 / 5.6)

With BN, lr 0.3 is the best or within 0.2 points of the best of {0.03, 0.3, 3} for both backbones and both features;
without it the raw scale decides (the random-init features at lr 0.3 end at 2-3x the training loss). On the trained
backbone, at each option's best lr, the two agree within 0.2 points, so the BN costs nothing and removes an lr
search. The hypercolumn probe beats the global one by about 2 points on the trained backbone, the direction of
Table 1 (70.8 vs 70.5 on ImageNet). Layer3 and layer4 parts of the pooled hypercolumn had similar magnitudes here
(mean |x| 0.76 vs 0.64); they need not on other networks, which is one more reason for the BN. A 15-epoch CGH run on
2000 images learned too little to separate the options (all within 2 points, at the random-init level), so the
stand-in is a supervised network; a shared CPU cannot pretrain further.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# protocol -> defaults of the probe's numbers (every one is a flag; see the module docstring for the reasons).
PROTOCOLS: dict[str, dict[str, Any]] = {
    # SPEC 5.3: eval_lincls.py's ImageNet override, = ReSSL's linear_eval.
    "imagenet": {"lr": 0.3, "momentum": 0.9, "weight_decay": 0.0, "epochs": 100, "batch_size": 256,
                 "augment": "rrc", "feature_norm": "none"},
    # Same optimiser numbers on precomputed features with a non-affine BN (module docstring).
    "small": {"lr": 0.3, "momentum": 0.9, "weight_decay": 0.0, "epochs": 100, "batch_size": 256,
              "augment": "none", "feature_norm": "bn"},
}
IMAGENET_DATASETS = ("imagenet", "imagenet100")
RRC_SCALE = (0.08, 1.0)  # SPEC 3.4 / 5.3: torchvision RandomResizedCrop's default scale for the probe's training crops
FEATURE_NORMS = ("bn", "none")
AUGMENTS = ("none", "rrc")


class LinearProbe(nn.Module):
    """[BatchNorm1d(affine=False)] + Linear(in_dim, num_classes), the weights N(0, 0.01) and the bias 0 (SPEC 5.3).

    ``feature_norm="bn"`` standardises each input feature with batch statistics in training and running statistics in
    eval; it has no parameters, so the probe is still one linear map of the features (MAE's linear probe does the same).
    """

    def __init__(self, in_dim: int, num_classes: int, feature_norm: str = "bn"):
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {list(FEATURE_NORMS)}, got {feature_norm!r}")
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"LinearProbe needs in_dim >= 1 and num_classes >= 1, got {in_dim}, {num_classes}")
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if feature_norm == "bn" else nn.Identity()
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(features))  # (N, C)


@dataclass
class ProbeResult:
    """Accuracies in percent on the test split; ``history`` holds one record per evaluated epoch."""

    best_top1: float
    best_top5: float
    best_epoch: int
    final_top1: float
    final_top5: float
    final_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    probe: LinearProbe | None = None
    seconds: float = 0.0

    def metrics(self) -> dict[str, Any]:
        return {"best_top1": self.best_top1, "best_top5": self.best_top5, "best_epoch": self.best_epoch,
                "final_top1": self.final_top1, "final_top5": self.final_top5, "final_train_loss": self.final_loss,
                "seconds": round(self.seconds, 2)}


def cosine_lr(step: int, total: int, base_lr: float) -> float:
    """Per-iteration cosine from ``base_lr`` to 0, no warm-up (SPEC 5.3)."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


@torch.no_grad()
def evaluate_probe(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor, chunk: int = 4096
                   ) -> tuple[float, float]:
    """(top-1, top-5) in percent of ``probe`` on features (N, D) with labels (N,); top-5 is top-min(5, C)."""
    was_training = probe.training
    probe.eval()
    hits1 = hits5 = 0
    device = next(probe.parameters()).device
    for start in range(0, features.shape[0], chunk):
        logits = probe(features[start : start + chunk].to(device).float())  # (n, C)
        y = labels[start : start + chunk].to(device).view(-1, 1)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (n, 5)
        hits1 += int((ranked[:, :1] == y).sum())
        hits5 += int((ranked == y).any(dim=1).sum())
    probe.train(was_training)
    n = features.shape[0]
    return (100.0 * hits1 / n, 100.0 * hits5 / n) if n else (float("nan"), float("nan"))


def _check_features(features: torch.Tensor, labels: torch.Tensor, num_classes: int, what: str) -> None:
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"{what}: expected features (N, D) and labels (N,), got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{what}: labels must lie in [0, {num_classes}) (num_classes), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")


class _Trainer:
    """The optimiser, the per-iteration schedule and the per-epoch evaluation shared by both training paths."""

    def __init__(self, probe: LinearProbe, *, lr, momentum, weight_decay, epochs, steps_per_epoch, test_features,
                 test_labels, eval_every, log):
        self.probe, self.lr, self.epochs = probe, lr, epochs
        self.total = epochs * steps_per_epoch
        # SPEC 5.3: SGD on the linear layer only; wd 0 in the authors' protocol.
        self.optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.test_features, self.test_labels = test_features, test_labels
        self.eval_every, self.log = max(1, eval_every), log
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best = (-1.0, float("nan"), 0)
        self.last = (float("nan"), float("nan"))
        self.loss = float("nan")
        self.start = time.time()

    def train_step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.step, self.total, self.lr)
        loss = F.cross_entropy(self.probe(features), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self._loss_sum += loss.detach()
        self._loss_n += 1

    def begin_epoch(self) -> None:
        self.probe.train()
        self._loss_sum, self._loss_n = torch.zeros(()), 0

    def end_epoch(self, epoch: int) -> None:
        self.loss = float(self._loss_sum) / max(1, self._loss_n)
        if (epoch + 1) % self.eval_every and epoch + 1 != self.epochs:
            return
        top1, top5 = evaluate_probe(self.probe, self.test_features, self.test_labels)
        self.last = (top1, top5)
        if top1 > self.best[0]:
            self.best = (top1, top5, epoch + 1)
        self.history.append({"epoch": epoch + 1, "loss": self.loss, "top1": top1, "top5": top5})
        if self.log:
            print(f"epoch {epoch + 1}/{self.epochs}  loss {self.loss:.4f}  top-1 {top1:.2f}%  top-5 {top5:.2f}%",
                  file=sys.stderr, flush=True)

    def result(self) -> ProbeResult:
        best1, best5, best_epoch = self.best
        return ProbeResult(best1, best5, best_epoch, self.last[0], self.last[1], self.loss, self.history,
                           self.probe, time.time() - self.start)


def train_linear(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    lr: float = 0.3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    feature_norm: str = "bn",
    seed: int = 0,
    device: str | torch.device = "cpu",
    eval_every: int = 1,
    log: bool = False,
) -> ProbeResult:
    """Train a ``LinearProbe`` on precomputed features (the fast path) and evaluate it on the test features.

    train_features (N, D) and test_features (M, D) float, labels (N,) / (M,) int64 in [0, num_classes). Mini-batches
    of ``batch_size`` rows in a fresh random order each epoch (the last one may be smaller), SGD with a per-iteration
    cosine from ``lr`` to 0. Deterministic for a given ``seed`` (its own generator; the global RNG is not touched).
    """
    _check_features(train_features, train_labels, num_classes, "train")
    _check_features(test_features, test_labels, num_classes, "test")
    if train_features.shape[1] != test_features.shape[1] or train_features.shape[0] == 0:
        raise ValueError(f"train and test features must be non-empty with the same D, got "
                         f"{tuple(train_features.shape)} and {tuple(test_features.shape)}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG; leave it untouched
        probe = LinearProbe(train_features.shape[1], num_classes, feature_norm)
    with torch.no_grad():
        probe.fc.weight.normal_(0.0, 0.01, generator=gen)  # SPEC 5.3, from the probe's own generator
    probe.to(device)
    x, y = train_features.to(device).float(), train_labels.to(device)
    n = x.shape[0]
    # A batch of one row cannot be batch-normalised: drop a trailing singleton batch under BN.
    steps = math.ceil(n / batch_size) - (1 if feature_norm == "bn" and n % batch_size == 1 and n > 1 else 0)
    trainer = _Trainer(probe, lr=lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
                       steps_per_epoch=steps, test_features=test_features, test_labels=test_labels,
                       eval_every=eval_every, log=log)
    for epoch in range(epochs):
        trainer.begin_epoch()
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            trainer.train_step(x[idx], y[idx])
        trainer.end_epoch(epoch)
    return trainer.result()


def snapshot_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer of ``module`` (to check afterwards that nothing changed)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def check_unchanged(module: nn.Module, before: dict[str, torch.Tensor], what: str = "backbone") -> None:
    """RuntimeError unless every parameter and buffer (BN running statistics and counters included) of ``module`` is
    bit-identical to ``before``: the frozen-backbone guarantee of SPEC 5.3 (the authors assert it on the weights)."""
    after = module.state_dict()
    changed = [k for k, v in before.items() if k not in after or not torch.equal(after[k].cpu(), v.cpu())]
    if changed or set(after) != set(before):
        raise RuntimeError(f"the frozen {what} changed during the linear probe: {changed[:5]} "
                           f"({len(changed)} tensors); this is a bug")


def train_linear_augmented(
    model,
    kind: str,
    train_source,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    *,
    image_size: int,
    mean,
    std,
    epochs: int = 100,
    lr: float = 0.3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    feature_norm: str = "none",
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp: torch.dtype | None = None,
    num_workers: int = 0,
    eval_every: int = 1,
    log: bool = False,
) -> ProbeResult:
    """Train a ``LinearProbe`` through the frozen ``model`` (a PretrainedBackbone) with on-device augmentation.

    Each step: RandomResizedCrop(image_size, scale 0.08-1) + flip (SPEC 5.3) on device, the frozen backbone's ``kind``
    features under ``no_grad`` (eval mode), then the probe. The caller freezes the model (``run`` does, and checks it
    afterwards); this function also keeps it in eval mode. Crops and the batch order come from the global RNG and the
    loader's ``seed``.
    """
    from cgh.augment import AugParams, ViewAugment, ViewSpec
    from cgh.data import build_pretrain_loader

    _check_features(test_features, test_labels, num_classes, "test")
    device = torch.device(device)
    specs = [ViewSpec(image_size, RRC_SCALE, strong=False)]
    augment = ViewAugment(specs, AugParams(), mean, std).to(device)
    loader = build_pretrain_loader(train_source, specs, min(batch_size, len(train_source)), seed=seed, rank=0,
                                   world_size=1, num_workers=num_workers, device=device, corrupt="error")
    torch.manual_seed(seed)
    probe = LinearProbe(model.feature_dim(kind), num_classes, feature_norm).to(device)
    model.eval()
    trainer = _Trainer(probe, lr=lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
                       steps_per_epoch=len(loader), test_features=test_features, test_labels=test_labels,
                       eval_every=eval_every, log=log)
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        trainer.begin_epoch()
        for batch in loader:
            labels = batch.labels.to(device)
            if bool((labels < 0).any()):
                raise ValueError(f"{train_source.name}: the probe's training split has unlabelled images (-1)")
            with torch.no_grad():
                (x,) = augment(batch)  # (B, 3, S, S) normalised
                with autocast:
                    f = model.features(x, kind)  # (B, D)
            trainer.train_step(f.float(), labels)
        trainer.end_epoch(epoch)
    return trainer.result()


# ---------------------------------------------------------------------------------------------------------------------
# cgh linear
# ---------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cgh.evaluate.features import add_checkpoint_arguments, add_data_arguments
    from cgh.pretrained import FEATURE_KINDS

    add_checkpoint_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--features", choices=FEATURE_KINDS, default="global",
                        help="global: pooled layer4 (SPEC 5.3); hypercolumn: GAP of the raw stacked [layer3 -> "
                             "layer4 size, layer4] map (SPEC 5.3 option a, any method); hypercolumn_head: the frozen "
                             "CGH head's pooled conv-BN-ReLU (option b, CGH checkpoints only)")
    parser.add_argument("--protocol", choices=("auto", *PROTOCOLS), default="auto",
                        help="imagenet: the authors' (SPEC 5.3); small: cached features + non-affine BN; auto: "
                             "imagenet for ImageNet/ImageNet-100, else small")
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
    name = args.protocol if args.protocol != "auto" else ("imagenet" if dataset in IMAGENET_DATASETS else "small")
    numbers = dict(PROTOCOLS[name])
    for key in ("lr", "momentum", "weight_decay", "epochs", "batch_size", "augment", "feature_norm"):
        value = getattr(args, key, None)
        if value is not None:
            numbers[key] = value
    return name, numbers


def run(args: argparse.Namespace) -> int:
    from cgh.errors import ConfigError
    from cgh.evaluate.features import check_feature_kind, checkpoint_label, emit, resolve_eval_setup

    setup = resolve_eval_setup(args)
    name, p = resolve_protocol(args, setup.cfg.data.name)
    if p["epochs"] < 1 or p["lr"] <= 0 or p["batch_size"] < 1 or p["weight_decay"] < 0 or args.eval_every < 1:
        raise ConfigError(f"need --epochs >= 1, --lr > 0, --batch-size >= 1, --weight-decay >= 0 and --eval-every "
                          f">= 1; got {p}")
    model, kind = setup.model, args.features
    check_feature_kind(model, kind, args.checkpoint)
    # Freeze: eval mode (BN statistics untouched) and no gradients (SPEC 5.3); checked bit for bit afterwards.
    model.eval().requires_grad_(False)
    before = snapshot_state(model)
    log = setup.progress
    test_features, test_labels = setup.features(setup.test_source, kind, desc="test features")
    common = dict(epochs=p["epochs"], lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
                  batch_size=p["batch_size"], feature_norm=p["feature_norm"], seed=args.seed, device=setup.device,
                  eval_every=args.eval_every, log=log)
    if p["augment"] == "none":
        train_features, train_labels = setup.features(setup.train_source, kind, desc="train features")
        result = train_linear(train_features, train_labels, test_features, test_labels, setup.num_classes, **common)
    else:
        result = train_linear_augmented(model, kind, setup.train_source, test_features, test_labels,
                                        setup.num_classes, image_size=setup.image_size, mean=setup.mean,
                                        std=setup.std, amp=setup.amp, num_workers=setup.num_workers, **common)
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
            f"{checkpoint_label(protocol)}, {name} protocol, {p['epochs']} epochs): "
            f"best top-1 {m['best_top1']:.2f}% top-5 {m['best_top5']:.2f}% "
            f"(epoch {m['best_epoch']}), final top-1 {m['final_top1']:.2f}% top-5 {m['final_top5']:.2f}%")
    emit(args, "linear", m, protocol, line)
    return 0
