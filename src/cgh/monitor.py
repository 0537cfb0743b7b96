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


class KnnMonitor:
    """``monitor(encoder) -> top-1 %`` on ``data.eval_test_split`` with ``data.eval_train_split`` as the bank."""

    def __init__(self, cfg: Config, device: torch.device, amp_dtype: torch.dtype | None):
        d = cfg.data
        self.train_src = open_split(cfg, d.eval_train_split)
        self.test_src = open_split(cfg, d.eval_test_split)
        for src in (self.train_src, self.test_src):
            if len(src) == 0 or bool((src.labels < 0).all()):
                raise ConfigError(f"kNN monitor: split {src.name!r} has no labels; set data.eval_train_split / "
                                  f"data.eval_test_split to labelled splits or train.knn_every=0")
        self.num_classes = int(max(self.train_src.labels.max(), self.test_src.labels.max())) + 1
        kw = dict(num_workers=d.num_workers, device=device, rank=dist.rank(), world_size=dist.world_size())
        self.train_loader = build_eval_loader(self.train_src, d.image_size, 256, **kw)
        self.test_loader = build_eval_loader(self.test_src, d.image_size, 256, **kw)
        self.transform = EvalTransform(d.image_size, *dataset_normalization(d)).to(device)
        self.cfg, self.device, self.amp_dtype = cfg, device, amp_dtype

    def features(self, encoder: nn.Module, loader, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised features of a split from ``encoder`` in eval mode, gathered over processes."""
        projection = self.cfg.train.knn_features == "projection"

        def fn(x: torch.Tensor) -> torch.Tensor:
            out = encoder(x, hyper=False)
            return out.z if projection else out.pooled

        was_training = encoder.training
        encoder.eval()
        try:
            f, y = collect(fn, loader, self.transform, device=self.device, amp=self.amp_dtype, limit=limit,
                           out_device=self.device)
        finally:
            encoder.train(was_training)
        return dist.all_gather_varlen(nn.functional.normalize(f, dim=1)), dist.all_gather_varlen(y)

    def __call__(self, encoder: nn.Module) -> float:
        t = self.cfg.train
        limit = math.ceil(t.knn_max_train / dist.world_size()) if t.knn_max_train else 0
        bank, bank_y = self.features(encoder, self.train_loader, limit)
        test, test_y = self.features(encoder, self.test_loader)
        return knn_accuracy(bank, bank_y, test, test_y, self.num_classes, t.knn_k, t.knn_t)
