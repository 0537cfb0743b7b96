"""What the methods share: building the student encoder, the teacher forward with batch shuffle, and the one
constructor of the single-context methods (MoCo-v2, ReSSL)."""

from __future__ import annotations

import torch
from torch import nn

from cgh.config import MethodConfig
from cgh.model.backbone import STAGE_NAMES, ResNet
from cgh.model.ema import make_teacher
from cgh.model.heads import Encoder, EncoderOutput, HypercolumnHead, mlp
from cgh.model.queue import FeatureQueue
from cgh.model.splitbn import norm_layer_factory
from cgh.runtime import dist


def build_encoder(backbone: ResNet, cfg: MethodConfig, hypercolumn: bool, bn_splits: int = 1) -> Encoder:
    """Student encoder: backbone + global MLP head (+ hypercolumn head for CGH), all dimensions from ``cfg``.

    The hypercolumn head's 1x1 conv reduces to the backbone's pooled width (docs/method.md#hypercolumn-head: 2048 for
    ResNet-50, 512 for ResNet-18) and uses the backbone's BN splits (``cfg.hyper_bn='split'``) or one BN over the
    process's batch ('plain', the authors' single-GPU head); the global MLP's BN (``cfg.head_bn``) uses the backbone's
    splits.
    """
    head_norm = norm_layer_factory(bn_splits, dims=1) if cfg.head_bn else None
    projector = mlp(backbone.num_features, cfg.hid_dim, cfg.feat_dim, head_norm)
    hyper = None
    hyper_splits = bn_splits if cfg.hyper_bn == "split" else 1  # 'plain': the authors' single-GPU head
    if hypercolumn:
        hyper = HypercolumnHead(
            dict(zip(STAGE_NAMES, backbone.stage_channels, strict=True)),
            layers=cfg.hyper_layers,
            reduce_dim=backbone.num_features,
            hid_dim=cfg.hid_dim,
            out_dim=cfg.hyper_dim,
            resize=cfg.hyper_resize,
            target=cfg.hyper_target,
            scale=cfg.hyper_scale,
            l2norm=cfg.hyper_l2norm,
            norm_layer=norm_layer_factory(hyper_splits),
            mlp_norm_layer=norm_layer_factory(hyper_splits, dims=1) if cfg.head_bn else None,
        )
    return Encoder(backbone, projector, hyper)


@torch.no_grad()
def teacher_forward(teacher: nn.Module, x: torch.Tensor, shuffle: bool, hyper: bool = True) -> EncoderOutput:
    """The teacher in train mode (batch statistics) under no_grad, on a shuffled batch when ``shuffle``
    (docs/method.md#teacher-shuffle).

    Shuffling hides which rows of the teacher's BN batch belong together with the student's, so BN statistics cannot
    leak the positive pair (MoCo's Shuffle-BN). Outputs come back in the input's order.
    """
    if not shuffle:
        return teacher(x, hyper=hyper)
    x, inverse = dist.shuffle_batch(x)
    out = teacher(x, hyper=hyper)
    return EncoderOutput(*(None if t is None else dist.unshuffle_batch(t, inverse) for t in out))


class SingleContext(nn.Module):
    """A global-context method: backbone + MLP student, its EMA teacher and one queue of teacher keys.

    ``warmup_steps``: the InfoNCE warm-up's length, for a method that has one (``uses_warmup``; 0 otherwise).
    """

    needs_find_unused = False  # every parameter gets a gradient every step
    uses_warmup = False

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__()
        self.cfg, self.shuffle = cfg, shuffle
        self.warmup_steps = warmup_steps if self.uses_warmup else 0
        self.student = build_encoder(backbone, cfg, hypercolumn=False, bn_splits=bn_splits)
        self.teacher = make_teacher(self.student)
        self.queue = FeatureQueue(cfg.queue_size, cfg.feat_dim)


class SharedWeights(nn.Module):
    """What SimSiam and SimCLR share: two strong views through one network, no momentum encoder (``teacher`` is the
    student itself, not a copy: nothing is averaged and the checkpoint holds one network), no queue, no warm-up and
    no relation target (the collapse watch reads their feature std, cgh.model.diagnostics)."""

    teacher_view = "strong"
    relation_terms = ()
    needs_find_unused = False
    warmup_steps = 0

    @property
    def teacher(self) -> nn.Module:
        """The target branch: the student under stop-gradient (SimSiam) or the student itself (SimCLR)."""
        return self.student
