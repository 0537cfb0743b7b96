"""MoCo-v2 (Chen et al. 2020): InfoNCE between a query and its momentum key, against a queue of past keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgh.backbone import ResNet
from cgh.config import MethodConfig
from cgh.diagnostics import context_diagnostics
from cgh.ema import ema_update, make_teacher
from cgh.losses import info_nce
from cgh.methods.common import build_encoder, teacher_forward
from cgh.queue import FeatureQueue


class MoCoV2(nn.Module):
    """views = [key view, query view]: both strong in MoCo-v2 (aug.teacher_view=strong; SPEC 3.2 ssl_transforms).

    The asymmetric loss of the MoCo paper: one InfoNCE term per step (the symmetric variant costs 2x).
    Temperature ``cfg.temperature`` (MoCo-v2: 0.2).
    """

    needs_find_unused = False
    relation_terms = ()  # no relation target (cgh.diagnostics)

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__()
        self.cfg, self.shuffle = cfg, shuffle
        self.student = build_encoder(backbone, cfg, hypercolumn=False, bn_splits=bn_splits)
        self.teacher = make_teacher(self.student)
        self.queue = FeatureQueue(cfg.queue_size, cfg.feat_dim)

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0, diagnose: bool = False):
        x_k, x_q = views[0], views[1]
        ema_update(self.student, self.teacher, momentum)  # before the key forward, as in the authors' code

        q = F.normalize(self.student(x_q, hyper=False).z, dim=1)  # (B, D)
        k = F.normalize(teacher_forward(self.teacher, x_k, self.shuffle, hyper=False).z, dim=1)  # (B, D)

        loss = info_nce(q, k, self.queue.features, self.cfg.temperature)
        terms = {"nce": loss.detach()}
        if diagnose:  # no relation target in MoCo-v2: the spread of the queries only (cgh.diagnostics)
            terms.update(context_diagnostics("global", q))
        self.queue.push(k)  # after the logits: the current keys are never their own negatives
        return loss, terms
