"""Linear probe on frozen global or hypercolumn features (docs/evaluation.md#linear-probe, and the supplementary's Table
1).

The probe is a frozen backbone kept in eval mode (BN statistics untouched, ``requires_grad_(False)``) plus ONE
``nn.Linear`` initialised N(0, 0.01) with bias 0 (docs/evaluation.md#linear-probe), optionally after a BatchNorm1d
*without* affine parameters (``feature_norm="bn"``: a fixed standardisation of each feature, learned from the training
features; it adds no trainable parameter, so the classifier stays linear in the features). After training, the
backbone's weights and BN buffers (and the CGH head's, for ``hypercolumn_head``) are checked to be bit-identical to
before.

Two training paths:
  - **features** (``augment="none"``): the training and test features are extracted once (test transform) and the
    linear layer is trained on the cached tensors: 100 epochs of CIFAR-10 take seconds. ``train_linear``.
  - **augmented** (``augment="rrc"``): every step crops and flips on device (RandomResizedCrop scale 0.08-1 + flip,
    docs/evaluation.md#linear-probe) and runs the frozen backbone under ``no_grad``. ``train_linear_augmented``.
The test split is always evaluated on cached test features (the test transform is deterministic and the backbone is
frozen, so this is exact). Best and final top-1 / top-5 are reported.

Protocols (every number is also a flag):
  - ``imagenet`` = the authors' (docs/evaluation.md#linear-probe, = ReSSL's linear_eval): SGD lr 0.3 (NOT batch-scaled),
    momentum 0.9, wd 0, 100 epochs, per-iteration cosine to 0, no warm-up, batch 256, train RRC(224, 0.08-1) + flip,
    test Resize 256 + CenterCrop 224, no feature normalisation.
  - ``small`` (default for every other dataset): the same optimiser, schedule, epochs and batch, but on precomputed
    features (``augment="none"``) with the non-affine BN in front. Why: on 32-96 px datasets the probe's accuracy is
    decided by the features, and the cached path makes 100 epochs cost one feature pass instead of 100 backbone passes
    (on CPU: about a second instead of hours). The BN makes the lr independent of the feature scale, which differs
    between methods, layers, widths and training lengths, so the authors' lr 0.3 needs no per-checkpoint search. wd 0
    as the authors: a linear layer over tens of thousands of cached features does not overfit in 100 epochs (final
    and best accuracies agree within a point in the measurement).

Hypercolumn probe (docs/evaluation.md#linear-probe leaves the choice open): ``--features hypercolumn`` is option (a),
the global average pool of the raw stacked [layer3 resized to layer4, layer4] map: 768-d for ResNet-18, 3072-d for
ResNet-50. It is our recommended hypercolumn probe because it exists for every method's checkpoint and for torchvision
weights, so "global vs hypercolumn" compares like with like across MoCo-v2, ReSSL and CGH (Table 1 of the supplementary
puts them side by side), and it probes the backbone, not a pretext head. Option (b), ``--features hypercolumn_head``,
uses the frozen trained CGH head's 1x1 conv-BN-ReLU (pooled, 512 / 2048-d): CGH checkpoints only. ``--feature-norm``
defaults to ``bn`` for the small protocol and to ``none`` for the authors' ImageNet protocol (their global probe has
none, and docs/evaluation.md#linear-probe asks for the same settings for the hypercolumn probe; pass ``--feature-norm
bn`` to add it).

The measurement behind these defaults (lr, ``feature_norm``, global vs hypercolumn features) is in
benchmarks/linear_probe.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cgh.data import build_pretrain_loader
from cgh.evaluate.classify import (  # noqa: F401 - RRC_SCALE re-exported
    IMAGENET_DATASETS,
    RRC_SCALE,
    EpochLog,
    ProbeResult,
    percent,
    topk_hits,
    train_crops,
)
from cgh.optim.schedule import cosine_decay
from cgh.runtime.device import autocast

# protocol -> defaults of the probe's numbers (every one is a flag; see the module docstring for the reasons).
PROTOCOLS: dict[str, dict[str, Any]] = {
    # docs/evaluation.md#linear-probe: eval_lincls.py's ImageNet override, = ReSSL's linear_eval.
    "imagenet": {"lr": 0.3, "momentum": 0.9, "weight_decay": 0.0, "epochs": 100, "batch_size": 256,
                 "augment": "rrc", "feature_norm": "none"},
    # Same optimiser numbers on precomputed features with a non-affine BN (module docstring).
    "small": {"lr": 0.3, "momentum": 0.9, "weight_decay": 0.0, "epochs": 100, "batch_size": 256,
              "augment": "none", "feature_norm": "bn"},
}
FEATURE_NORMS = ("bn", "none")
AUGMENTS = ("none", "rrc")


def protocol_numbers(protocol: str, dataset: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """(name, numbers) of a probe protocol: ``protocol`` "auto" is "imagenet" for ImageNet / ImageNet-100 and "small"
    elsewhere; ``overrides`` that are not None (lr, momentum, weight_decay, epochs, batch_size, augment,
    feature_norm) replace the protocol's numbers."""
    name = protocol if protocol != "auto" else ("imagenet" if dataset in IMAGENET_DATASETS else "small")
    numbers = dict(PROTOCOLS[name])
    numbers.update({k: v for k, v in overrides.items() if k in numbers and v is not None})
    return name, numbers


class LinearProbe(nn.Module):
    """[BatchNorm1d(affine=False)] + Linear(in_dim, num_classes), the weights N(0, 0.01) and the bias 0
    (docs/evaluation.md#linear-probe).

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
        h1, h5 = topk_hits(logits, labels[start : start + chunk])
        hits1, hits5 = hits1 + h1, hits5 + h5
    probe.train(was_training)
    return percent(hits1, hits5, features.shape[0])


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
        # docs/evaluation.md#linear-probe: SGD on the linear layer only; wd 0 in the authors' protocol.
        self.optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.test_features, self.test_labels = test_features, test_labels
        self.eval_every = max(1, eval_every)
        self.epoch_log = EpochLog(epochs, log)
        self.step = 0
        self.loss = float("nan")

    def train_step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        for group in self.optimizer.param_groups:  # docs/evaluation.md#linear-probe: per-iteration cosine to 0, no
                                                   # warm-up
            group["lr"] = cosine_decay(self.lr, self.step / max(1, self.total))
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
        self.epoch_log.record(epoch + 1, self.loss, *evaluate_probe(self.probe, self.test_features, self.test_labels))

    def result(self) -> ProbeResult:
        return self.epoch_log.result(self.loss, probe=self.probe)


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
        probe.fc.weight.normal_(0.0, 0.01, generator=gen)  # docs/evaluation.md#linear-probe, from the probe's own
                                                           # generator
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
    bit-identical to ``before``: the frozen-backbone guarantee of docs/evaluation.md#linear-probe (the authors assert it
    on the weights)."""
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
    corrupt: str = "error",
    skipped: list[str] | None = None,
) -> ProbeResult:
    """Train a ``LinearProbe`` through the frozen ``model`` (a PretrainedBackbone) with on-device augmentation.

    Each step: RandomResizedCrop(image_size, scale 0.08-1) + flip (docs/evaluation.md#linear-probe) on device, the
    frozen backbone's ``kind`` features under ``no_grad`` (eval mode), then the probe. The caller freezes the model
    (``run`` does, and checks it afterwards); this function also keeps it in eval mode. Crops and the batch order come
    from the global RNG and the loader's ``seed``. corrupt: an undecodable training image is a DataError ('error'),
    or replaced in its batch by another image of it ('skip', as in pretraining) and its path appended to
    ``skipped`` (once per epoch it is met).
    """
    _check_features(test_features, test_labels, num_classes, "test")
    device = torch.device(device)
    specs, augment = train_crops(image_size, mean, std)
    augment = augment.to(device)
    loader = build_pretrain_loader(train_source, specs, min(batch_size, len(train_source)), seed=seed, rank=0,
                                   world_size=1, num_workers=num_workers, device=device, corrupt=corrupt)
    torch.manual_seed(seed)
    probe = LinearProbe(model.feature_dim(kind), num_classes, feature_norm).to(device)
    model.eval()
    trainer = _Trainer(probe, lr=lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
                       steps_per_epoch=len(loader), test_features=test_features, test_labels=test_labels,
                       eval_every=eval_every, log=log)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        trainer.begin_epoch()
        for batch in loader:
            labels = batch.labels.to(device)
            if bool((labels < 0).any()):
                raise ValueError(f"{train_source.name}: the probe's training split has unlabelled images (-1)")
            with torch.no_grad():
                (x,) = augment(batch)  # (B, 3, S, S) normalised
                with autocast(device, amp):
                    f = model.features(x, kind)  # (B, D)
            trainer.train_step(f.float(), labels)
        if skipped is not None:
            skipped += loader.bad_files
        trainer.end_epoch(epoch)
    return trainer.result()
