"""cgh.cost: the supervised reference of `cgh cost` and of benchmarks/gpu_check.py."""

from __future__ import annotations

from torch import nn

from cgh.backbone import SplitBatchNorm
from cgh.config import load_config
from cgh.cost import Supervised


def test_supervised_reference_uses_plain_bn_whatever_the_bn_mode():
    """Issue 19: with the one-process default (bn_mode auto -> split, 8 splits) the supervised baseline ran split BN,
    so "CGH / supervised" was measured against a slowed baseline. A supervised run uses plain BN."""
    for mode in ("auto", "split"):
        cfg = load_config("demo", [f"model.bn_mode={mode}", "model.bn_splits=8", "model.width=4"])
        model = Supervised(cfg, num_classes=10)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and not any(isinstance(m, SplitBatchNorm) for m in bns)
