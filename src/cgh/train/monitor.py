"""The kNN monitor of pretraining: weighted kNN accuracy of the student on a labelled split
(docs/evaluation.md#knn-monitor, with the fixes of docs/method.md#quirk-knn-monitor: backbone features by default, no
double counting under DDP, STL-10's labelled train split as the bank).

Features come from the one extraction loop of the evaluation (cgh.evaluate.features.collect), on each process's
shard of the split, and are gathered over processes before the vote.

``knn_monitor`` builds it, or says in one line why it is off rather than measure nothing: a split without labels
(a flat folder), no held-out test split (a folder with train/ only), or a test split holding the images of the bank
or of the pretraining split (a folder of class folders: every split is the same images). Undecodable files follow
data.corrupt: left out and reported once ('skip'), or an error ('error').
"""

from __future__ import annotations

import math
import os
import sys
from typing import NamedTuple

import torch
from torch import nn

from cgh.augment import EvalTransform
from cgh.config import Config
from cgh.data import build_eval_loader, open_split
from cgh.data.configured import check_same_classes, resolve_split, split_location
from cgh.data.normalization import dataset_normalization
from cgh.errors import ConfigError
from cgh.evaluate.features import collect
from cgh.evaluate.knn import knn_accuracy
from cgh.runtime import dist
from cgh.wording import counted


def labelled_split(cfg: Config, split: str, device: torch.device, what: str):
    """(source, sharded eval loader) of a labelled split of the configured dataset (``labelled_loader``)."""
    src = open_split(cfg, split)
    return src, labelled_loader(cfg, src, device, what)


def labelled_loader(cfg: Config, src, device: torch.device, what: str):
    """The sharded eval loader of ``src``; a source without labels is a ConfigError naming ``what`` needs it.
    Undecodable files follow data.corrupt (left out, or an error)."""
    d = cfg.data
    if not has_labels(src):
        off = "train.knn_every=0" if "kNN" in what else "train.online_probe=false"
        raise ConfigError(f"{what}: split {src.name!r} has no labels; set data.eval_train_split / "
                          f"data.eval_test_split to labelled splits or {off}")
    return build_eval_loader(src, d.image_size, 256, num_workers=d.num_workers, device=device, rank=dist.rank(),
                             world_size=dist.world_size(), corrupt=d.corrupt)


def has_labels(source) -> bool:
    return len(source) > 0 and bool((source.labels >= 0).any())


class Off(NamedTuple):
    """Why a monitor of pretraining is off: ``line()`` is the one line printed on stderr, ``reason`` the banner's."""

    level: str  # "note", or "warning" where the user's data would have made its accuracy meaningless
    what: str
    reason: str
    advice: str

    def line(self) -> str:
        return f"{self.level}: the {self.what} is off: {self.reason}; {self.advice}"


HELD_OUT = ("keep held-out images apart (PATH/train/<class>/ and PATH/val/<class>/) or name a split in "
            "data.eval_test_split")


def held_out_test_split(cfg: Config, what: str, trained: dict[str, str]) -> tuple[str | None, Off | None]:
    """(the test split of a monitor, None), or (None, why ``what`` is off): the dataset has no test split ('auto'
    found none), or its images are those of a split in ``trained`` (role -> split): an accuracy measured on the
    images the monitor learnt from would mean nothing."""
    d = cfg.data
    test = resolve_split(cfg, d.eval_test_split)
    if test is None:
        return None, Off("note", what, f"{d.path} has no test nor val split to measure it on",
                         f"add one ({os.path.join(d.path, 'val', '<class>')}/) or name one in data.eval_test_split")
    where = split_location(cfg, test)
    for role, split in trained.items():
        if split_location(cfg, split) == where:
            return None, Off("warning", what, f"its test split {d.name}:{test} is the same images as {role} "
                                              f"{d.name}:{split} ({where}): its accuracy would mean nothing", HELD_OUT)
    return test, None


def knn_monitor(cfg: Config, device: torch.device, amp_dtype: torch.dtype | None
                ) -> tuple[KnnMonitor | None, Off | None]:
    """The pretraining run's kNN monitor, or None and why it is off: a split without labels (a flat folder), or no
    held-out test split (``held_out_test_split``)."""
    d = cfg.data
    bank = open_split(cfg, d.eval_train_split)
    if not has_labels(bank):
        return None, no_labels("kNN monitor", bank)
    test, off = held_out_test_split(cfg, "kNN monitor", {"its bank": d.eval_train_split,
                                                         "the pretraining split": d.split})
    if off:
        return None, off
    test_src = open_split(cfg, test)
    if not has_labels(test_src):
        return None, no_labels("kNN monitor", test_src)
    return KnnMonitor(cfg, device, amp_dtype, bank, test_src), None


def no_labels(what: str, source) -> Off:
    return Off("note", what, f"{source.name} has no labels (no class sub-folders)",
               "it needs labelled splits (PATH/train/<class>/, PATH/val/<class>/)")


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
    """``monitor(encoder) -> top-1 %`` on ``data.eval_test_split`` (or the ``test`` source) with
    ``data.eval_train_split`` (or the ``bank`` source) as the bank. Undecodable files are left out with
    data.corrupt=skip: ``skipped`` holds their paths (this process's share), and the first call that meets them
    prints a note."""

    def __init__(self, cfg: Config, device: torch.device, amp_dtype: torch.dtype | None, bank=None, test=None):
        d = cfg.data
        self.train_src = bank if bank is not None else open_split(cfg, d.eval_train_split)
        self.test_src = test if test is not None else open_split(cfg, d.eval_test_split)
        self.train_loader = labelled_loader(cfg, self.train_src, device, "kNN monitor")
        self.test_loader = labelled_loader(cfg, self.test_src, device, "kNN monitor")
        check_same_classes(self.train_src, self.test_src)
        self.num_classes = int(max(self.train_src.labels.max(), self.test_src.labels.max())) + 1
        self.transform = EvalTransform(d.image_size, *dataset_normalization(d)).to(device)
        self.cfg, self.device, self.amp_dtype = cfg, device, amp_dtype
        self.skipped: list[str] = []

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
        new = [p for _, p in self.train_loader.skipped + self.test_loader.skipped if p not in self.skipped]
        if new:
            self.skipped += new
            print(f"note: the kNN monitor left out {counted(len(new), 'undecodable image')} (data.corrupt=skip), e.g. "
                  f"{', '.join(new[:3])}", file=sys.stderr, flush=True)
        return knn_accuracy(bank, bank_y, test, test_y, self.num_classes, t.knn_k, t.knn_t)


def knn_below_start(metrics: dict, run_dir) -> str | None:
    """A note when the monitor's last kNN (``metrics["knn_top1"]``) is below its epoch-0 value, the random
    initialisation's (``metrics["knn_init"]``), else None. Not a collapse: a run can lose kNN accuracy while a linear
    probe gains (issue 23: every method of a short run on a folder of photographs ended below its random-init kNN),
    so the note says how to check."""
    start, last = metrics.get("knn_init"), metrics.get("knn_top1")
    if start is None or last is None or not last < start:
        return None
    return (f"the kNN monitor ended at {last:.2f}% top-1, below the {start:.2f}% of the random initialisation "
            f"(epoch 0): for kNN this run made the features worse. A linear probe may still gain: compare `cgh linear "
            f"{run_dir}` with `cgh linear {run_dir} --random-init` (not a collapse warning)")
