"""MoCo-v2 (Chen et al. 2020): InfoNCE between a query and its momentum key, against a queue of past keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cgh.losses import info_nce
from cgh.methods.common import SingleContext, teacher_forward
from cgh.model.diagnostics import context_diagnostics
from cgh.model.ema import ema_update


class MoCoV2(SingleContext):
    """views = [key view, query view]: both strong in MoCo-v2 (docs/method.md#weak-view ssl_transforms).

    The asymmetric loss of the MoCo paper: one InfoNCE term per step (the symmetric variant costs 2x).
    Temperature ``cfg.temperature`` (MoCo-v2: 0.2).
    """

    teacher_view = "strong"  # two identically distributed strong views (MoCo-v2's aug+)
    loss_terms = ("nce",)
    relation_terms = ()  # no relation target (cgh.model.diagnostics)

    def temperatures(self) -> dict[str, float]:
        return {"infonce": self.cfg.temperature}

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0, diagnose: bool = False):
        x_k, x_q = views[0], views[1]
        ema_update(self.student, self.teacher, momentum)  # before the key forward, as in the authors' code

        q = F.normalize(self.student(x_q, hyper=False).z, dim=1)  # (B, D)
        t = teacher_forward(self.teacher, x_k, self.shuffle, hyper=False)
        self.teacher_pooled = t.pooled  # (B, C) no grad: the online probe's input (cgh.train.online_probe)
        k = F.normalize(t.z, dim=1)  # (B, D)

        loss = info_nce(q, k, self.queue.features, self.cfg.temperature)
        terms = {"nce": loss.detach()}
        if diagnose:  # no relation target in MoCo-v2: the spread of the queries only (cgh.model.diagnostics)
            terms.update(context_diagnostics("global", q))
        self.queue.push(k)  # after the logits: the current keys are never their own negatives
        return loss, terms
