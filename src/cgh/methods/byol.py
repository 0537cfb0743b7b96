"""BYOL (Grill et al., NeurIPS 2020): an online network predicts the target network's projection of the other view.

    loss = mean_n (2 - 2 cos(q(z1_n), sg(z2'_n))) + mean_n (2 - 2 cos(q(z2_n), sg(z1'_n)))

z = projector(backbone(x)) of the online network (the student), z' of the target (its EMA, the teacher), q the
predictor; both views pass through both networks (the symmetrised loss of the paper, eq. 2 and the line after it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgh.config import MethodConfig
from cgh.losses import byol_regression
from cgh.methods.common import teacher_forward
from cgh.model.backbone import ResNet
from cgh.model.diagnostics import context_diagnostics
from cgh.model.ema import ema_update, make_teacher
from cgh.model.heads import Encoder, mlp
from cgh.model.splitbn import norm_layer_factory


class BYOL(nn.Module):
    """views = [view 1, view 2], both strong (one recipe for both: BYOL's own two recipes differ in blur and
    solarisation, which cgh's augmentation does not split; docs/method.md#new-baselines).

    Projector and predictor: Linear(hid_dim) - BN - ReLU - Linear(feat_dim), the paper's 4096 and 256 (Sec. 3.3);
    the predictor's hidden width is ``pred_hid_dim`` (4096). The target's momentum follows ``method.momentum`` and
    ``method.momentum_schedule`` (BYOL: 'cosine' from tau_base to 1, cgh.optim.schedule.momentum_at). NOTE: the EMA runs
    at the start of step k with the momentum of step k (as every cgh method); BYOL's code runs it after step k-1's
    update with that step's momentum: the same averages, the schedule one step later.
    """

    teacher_view = "strong"  # two strong views (BYOL's T and T')
    loss_terms = ("byol",)
    relation_terms = ()  # no relation target: the collapse watch reads the feature std (cgh.model.diagnostics)
    needs_find_unused = False
    warmup_steps = 0

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__()
        self.cfg, self.shuffle = cfg, shuffle
        norm = norm_layer_factory(bn_splits, dims=1)  # BN in both MLPs (BYOL Sec. 3.3), whatever method.head_bn
        self.student = Encoder(backbone, mlp(backbone.num_features, cfg.hid_dim, cfg.feat_dim, norm))
        self.teacher = make_teacher(self.student)
        self.predictor = mlp(cfg.feat_dim, cfg.pred_hid_dim, cfg.feat_dim, norm)

    def temperatures(self) -> dict[str, float]:
        return {}

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0, diagnose: bool = False):
        x1, x2 = views[0], views[1]
        ema_update(self.student, self.teacher, momentum)  # the target, from the online network's last update

        t1 = teacher_forward(self.teacher, x1, self.shuffle, hyper=False)
        t2 = teacher_forward(self.teacher, x2, self.shuffle, hyper=False)
        self.teacher_pooled = t1.pooled  # (B, C) no grad: the online probe's input (cgh.train.online_probe)
        z1, z2 = self.student(x1, hyper=False).z, self.student(x2, hyper=False).z  # (B, D) each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, D) each

        loss = byol_regression(p1, t2.z) + byol_regression(p2, t1.z)  # symmetrised (BYOL eq. 2)
        terms = {"byol": loss.detach()}
        if diagnose:  # the online projections of view 1 (cgh.model.diagnostics: std and rank, no relation target)
            terms.update(context_diagnostics("global", F.normalize(z1.detach(), dim=1)))
        return loss, terms
