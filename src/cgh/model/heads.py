"""Projection heads, the hypercolumn head, and the encoder that puts them on a backbone.

Names follow the paper: the *global* context is the pooled layer4 feature projected by an MLP; the *hypercolumn*
context stacks intermediate stages (layer3 and layer4 by default) and projects them with ``HypercolumnHead``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cgh.model.backbone import STAGE_NAMES, ResNet, Stages

# Per-stage constants of the authors' unused scale parameter (docs/method.md#hypercolumn-head); applied only with
# scale=True.
KAPPA = {"layer1": 1 / 16, "layer2": 1 / 8, "layer3": 1 / 4, "layer4": 1.0}


def mlp(in_dim: int, hid_dim: int, out_dim: int, norm_layer: Callable[[int], nn.Module] | None = None
        ) -> nn.Sequential:
    """Linear(in, hid) + ReLU + Linear(hid, out), biases on: the authors' global projection head
    (docs/method.md#global-head: 2048 -> 4096 -> 512 for ResNet-50, no BN) and the tail of their hypercolumn head
    (docs/method.md#hypercolumn-head). With ``norm_layer`` a BN follows the hidden Linear (as in MoCo v3's, BYOL's and
    solo-learn's ReSSL projectors; ``method.head_bn``)."""
    if norm_layer is None:
        return nn.Sequential(nn.Linear(in_dim, hid_dim), nn.ReLU(inplace=True), nn.Linear(hid_dim, out_dim))
    return nn.Sequential(nn.Linear(in_dim, hid_dim), norm_layer(hid_dim), nn.ReLU(inplace=True),
                         nn.Linear(hid_dim, out_dim))


def stack_hypercolumn(
    stages: Stages,
    layers: Sequence[str] = ("layer3", "layer4"),
    resize: str = "bilinear",
    target: str = "last",
    scale: bool = False,
    l2norm: bool = False,
) -> torch.Tensor:
    """Resize the chosen stages to one spatial size and concatenate them over channels -> (N, sum C_i, h, w).

    docs/method.md#hypercolumn-head: the authors resize every listed stage by bilinear interpolation
    (align_corners=False, no antialias) to the size of the *last* listed stage and concatenate; with [layer3, layer4]
    only layer3 is resized (14x14 -> 7x7 at 224 px; 8x8 -> 4x4 at 32 px with the CIFAR stem). ``resize="avgpool"`` uses
    adaptive average pooling instead (an antialiased alternative when downsampling); ``target="first"`` stacks at the
    first listed stage's size. ``scale`` multiplies each stage by its kappa and ``l2norm`` L2-normalises each stage over
    channels first; both are dead code in the authors' repo and off by default.
    """
    maps = [getattr(stages, name) for name in layers]
    h, w = maps[-1 if target == "last" else 0].shape[-2:]
    out = []
    for name, x in zip(layers, maps, strict=True):
        if l2norm:
            x = F.normalize(x, dim=1)
        if scale:
            x = x * KAPPA[name]
        if x.shape[-2:] != (h, w):
            if resize == "bilinear":
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            else:
                x = F.adaptive_avg_pool2d(x, (h, w))
        out.append(x)
    return torch.cat(out, dim=1)  # (N, sum C_i, h, w)


class HypercolumnHead(nn.Module):
    """The hypercolumn context (the authors' "FeatDistiller", docs/method.md#hypercolumn-head).

    stack(stages) -> 1x1 conv (no bias) to ``reduce_dim`` -> BN -> ReLU -> global average pool -> MLP(reduce_dim,
    hid_dim, out_dim). Defaults for ResNet-50: in 1024 + 2048 = 3072 channels, reduce to 2048, MLP 2048 -> 4096 ->
    512. The output is not normalised; the method L2-normalises it.

    NOTE: the authors' BN here is always plain, even when the backbone uses SplitBatchNorm. We use the backbone's
    norm layer, so that one process with W BN splits computes exactly what W processes compute.
    """

    def __init__(
        self,
        stage_channels: dict[str, int],
        layers: Sequence[str] = ("layer3", "layer4"),
        reduce_dim: int = 2048,
        hid_dim: int = 4096,
        out_dim: int = 512,
        resize: str = "bilinear",
        target: str = "last",
        scale: bool = False,
        l2norm: bool = False,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        mlp_norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        unknown = [name for name in layers if name not in STAGE_NAMES]
        if unknown or not layers:
            raise ValueError(f"hypercolumn layers must be a non-empty subset of {list(STAGE_NAMES)}, got "
                             f"{list(layers)}")
        if resize not in ("bilinear", "avgpool") or target not in ("last", "first"):
            raise ValueError(f"resize must be 'bilinear' or 'avgpool' and target 'last' or 'first', got {resize!r}, "
                             f"{target!r}")
        self.layers, self.resize, self.target, self.scale, self.l2norm = tuple(layers), resize, target, scale, l2norm
        in_channels = sum(stage_channels[name] for name in layers)
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, reduce_dim, kernel_size=1, bias=False), norm_layer(reduce_dim), nn.ReLU(inplace=True)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = mlp(reduce_dim, hid_dim, out_dim, mlp_norm_layer)

    def stack(self, stages: Stages) -> torch.Tensor:
        return stack_hypercolumn(stages, self.layers, self.resize, self.target, self.scale, self.l2norm)

    def reduced(self, stages: Stages) -> torch.Tensor:
        """The pooled output of the 1x1 conv-BN-ReLU (N, reduce_dim): option (b) of the hypercolumn probe
        (docs/evaluation.md#linear-probe)."""
        return torch.flatten(self.pool(self.reduce(self.stack(stages))), 1)

    def forward(self, stages: Stages) -> torch.Tensor:
        return self.mlp(self.reduced(stages))  # (N, out_dim)


class EncoderOutput(NamedTuple):
    z: torch.Tensor  # (N, feat_dim) global projection, not normalised
    zh: torch.Tensor | None  # (N, hyper_dim) hypercolumn projection, or None
    pooled: torch.Tensor  # (N, num_features) pooled backbone feature


class Encoder(nn.Module):
    """A backbone with its global projection head and, for CGH, its hypercolumn head.

    One forward pass of the backbone feeds both contexts: the hypercolumn gradients reach the backbone through the
    stacked stages, the global ones through layer4 (docs/method.md#step-features).
    """

    def __init__(self, backbone: ResNet, projector: nn.Module, hyper: HypercolumnHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.hyper = hyper

    def forward(self, x: torch.Tensor, hyper: bool = True) -> EncoderOutput:
        stages = self.backbone(x)
        pooled = self.backbone.pool(stages.layer4)  # (N, C4)
        zh = self.hyper(stages) if hyper and self.hyper is not None else None
        return EncoderOutput(self.projector(pooled), zh, pooled)
