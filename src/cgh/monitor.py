"""The kNN monitor of pretraining: weighted kNN accuracy of the student on a labelled split
(docs/evaluation.md#knn-monitor, with the fixes of docs/method.md#quirk-knn-monitor: backbone features by default, no
double counting under DDP, STL-10's labelled train split as the bank).

Features come from the one extraction loop of the evaluation (cgh.evaluate.features.collect), on each process's
shard of the split, and are gathered over processes before the vote.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cgh import dist
from cgh.augment import EvalTransform
from cgh.config import Config
from cgh.data import build_eval_loader, open_split
from cgh.data.normalization import dataset_normalization
from cgh.errors import ConfigError
from cgh.evaluate.features import collect
from cgh.evaluate.knn import knn_accuracy


def labelled_split(cfg: Config, split: str, device: torch.device, what: str):
    """(source, sharded eval loader) of a labelled split of the configured dataset; a split without labels is a
    ConfigError naming ``what`` needs it."""
    d = cfg.data
    src = open_split(cfg, split)
    if len(src) == 0 or bool((src.labels < 0).all()):
        off = "train.knn_every=0" if "kNN" in what else "train.online_probe=false"
        raise ConfigError(f"{what}: split {src.name!r} has no labels; set data.eval_train_split / "
                          f"data.eval_test_split to labelled splits or {off}")
    loader = build_eval_loader(src, d.image_size, 256, num_workers=d.num_workers, device=device, rank=dist.rank(),
                               world_size=dist.world_size())
    return src, loader


def split_features(encoder: nn.Module, loader, transform: nn.Module, device: torch.device, amp_dtype, kind: str,
                   limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a split from ``encoder`` in eval mode, gathered over processes: ``kind`` 'pooled' (the
    backbone's) or 'projection' (the global head's output)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        out = encoder(x, hyper=False)
        return out.z if kind == "projection" else out.pooled

    was_training = encoder.training
    encoder.eval()
    try:
        f, y = collect(fn, loader, transform, device=device, amp=amp_dtype, limit=limit, out_device=device)
    finally:
        encoder.train(was_training)
    return dist.all_gather_varlen(f), dist.all_gather_varlen(y)


class KnnMonitor:
    """``monitor(encoder) -> top-1 %`` on ``data.eval_test_split`` with ``data.eval_train_split`` as the bank."""

    def __init__(self, cfg: Config, device: torch.device, amp_dtype: torch.dtype | None):
        d = cfg.data
        self.train_src, self.train_loader = labelled_split(cfg, d.eval_train_split, device, "kNN monitor")
        self.test_src, self.test_loader = labelled_split(cfg, d.eval_test_split, device, "kNN monitor")
        self.num_classes = int(max(self.train_src.labels.max(), self.test_src.labels.max())) + 1
        self.transform = EvalTransform(d.image_size, *dataset_normalization(d)).to(device)
        self.cfg, self.device, self.amp_dtype = cfg, device, amp_dtype

    def features(self, encoder: nn.Module, loader, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised features of a split, gathered over processes."""
        kind = "projection" if self.cfg.train.knn_features == "projection" else "pooled"
        f, y = split_features(encoder, loader, self.transform, self.device, self.amp_dtype, kind, limit)
        return nn.functional.normalize(f, dim=1), y

    def __call__(self, encoder: nn.Module) -> float:
        t = self.cfg.train
        limit = math.ceil(t.knn_max_train / dist.world_size()) if t.knn_max_train else 0
        bank, bank_y = self.features(encoder, self.train_loader, limit)
        test, test_y = self.features(encoder, self.test_loader)
        return knn_accuracy(bank, bank_y, test, test_y, self.num_classes, t.knn_k, t.knn_t)
