"""What the linear probe (cgh.evaluate.linear) and the fine-tuning (cgh.evaluate.semisup) share: their training
crops, top-k accuracy, the per-epoch record of test accuracies, and the result type.

    train_crops(image_size, mean, std)   RandomResizedCrop(scale 0.08-1) + flip on device
    (docs/evaluation.md#linear-probe, docs/evaluation.md#semi-supervised) topk_hits(logits, labels)            (top-1
    hits, top-5 hits); top-5 is top-min(5, C) EpochLog(epochs, log)                best and last test accuracies over
    the evaluated epochs, and the log line ProbeResult                          best / final top-1 and top-5 (percent),
    final loss, history, time
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cgh.augment import ViewAugment
from cgh.config.views import AugParams, ViewSpec

IMAGENET_DATASETS = ("imagenet", "imagenet100")  # the datasets the authors' ImageNet protocols are for
RRC_SCALE = (0.08, 1.0)  # docs/evaluation.md#linear-probe / docs/evaluation.md#semi-supervised: torchvision
                         # RandomResizedCrop's default scale for the training crops
FLIP_P = 0.5  # torchvision RandomHorizontalFlip's default


def train_crops(image_size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[list[ViewSpec], ViewAugment]:
    """The probes' training view, RandomResizedCrop(image_size, RRC_SCALE) + flip (no colour: a weak view), as the
    loader's specs and the on-device augmentation."""
    specs = [ViewSpec(image_size, RRC_SCALE, strong=False)]
    return specs, ViewAugment(specs, AugParams(flip_p=FLIP_P), mean, std)


def topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(top-1, top-5) counts of rows of ``logits`` (N, C) whose label (N,) is the best / among the 5 best classes;
    top-5 is top-min(5, C)."""
    y = labels.to(logits.device).view(-1, 1)  # (N, 1)
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (N, min(5, C))
    return int((ranked[:, :1] == y).sum()), int((ranked == y).any(dim=1).sum())


def percent(hits1: int, hits5: int, n: int) -> tuple[float, float]:
    """Hit counts of ``n`` samples -> (top-1, top-5) in percent; NaN for no sample."""
    return (100.0 * hits1 / n, 100.0 * hits5 / n) if n else (float("nan"), float("nan"))


@dataclass
class ProbeResult:
    """Accuracies in percent on the test split; ``history`` holds one record per evaluated epoch. ``probe`` is the
    trained linear probe (linear probe only); ``steps_per_epoch`` and ``images_per_epoch`` (fine-tuning only: over
    all processes, below the labelled count only when a 1-image tail is dropped) are reported when set."""

    best_top1: float
    best_top5: float
    best_epoch: int
    final_top1: float
    final_top5: float
    final_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    probe: nn.Module | None = None
    steps_per_epoch: int | None = None
    images_per_epoch: int | None = None

    def metrics(self) -> dict[str, Any]:
        out = {"best_top1": self.best_top1, "best_top5": self.best_top5, "best_epoch": self.best_epoch,
               "final_top1": self.final_top1, "final_top5": self.final_top5, "final_train_loss": self.final_loss}
        if self.steps_per_epoch is not None:
            out["steps_per_epoch"] = self.steps_per_epoch
        if self.images_per_epoch is not None:
            out["images_per_epoch"] = self.images_per_epoch
        out["seconds"] = round(self.seconds, 2)
        return out


class EpochLog:
    """The test accuracies of the evaluated epochs: the best (by top-1, the earliest on a tie) and the last, one
    history record each, and with ``log`` one line per evaluation on stderr."""

    def __init__(self, epochs: int, log: bool = False):
        self.epochs, self.log = epochs, log
        self.best = (-1.0, float("nan"), 0)  # (top-1, top-5, epoch)
        self.last = (float("nan"), float("nan"))
        self.history: list[dict[str, float]] = []
        self.start = time.time()

    def record(self, epoch: int, loss: float, top1: float, top5: float) -> None:
        """The test accuracies after ``epoch`` (1-based) with that epoch's mean training ``loss``."""
        self.last = (top1, top5)
        if top1 > self.best[0]:
            self.best = (top1, top5, epoch)
        self.history.append({"epoch": epoch, "loss": loss, "top1": top1, "top5": top5})
        if self.log:
            print(f"epoch {epoch}/{self.epochs}  loss {loss:.4f}  top-1 {top1:.2f}%  top-5 {top5:.2f}%",
                  file=sys.stderr, flush=True)

    def result(self, final_loss: float, **extra: Any) -> ProbeResult:
        best1, best5, best_epoch = self.best
        return ProbeResult(best1, best5, best_epoch, self.last[0], self.last[1], final_loss, self.history,
                           time.time() - self.start, **extra)
