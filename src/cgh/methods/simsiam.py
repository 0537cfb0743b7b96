"""SimSiam (Chen and He, CVPR 2021): one network on two views; a predictor on one side, stop-gradient on the other.

    loss = - 1/2 [ mean_n cos(p1_n, sg(z2_n)) + mean_n cos(p2_n, sg(z1_n)) ]

z = projector(backbone(x)), p = predictor(z). There is no momentum encoder: the "teacher" is the student itself
(``teacher`` is an alias, no second copy), so ``method.momentum`` is not used.
"""

from __future__ import annotations

import torch
from torch import nn

from cgh.config import MethodConfig
from cgh.losses import negative_cosine
from cgh.methods.common import SharedWeights
from cgh.model.backbone import ResNet
from cgh.model.diagnostics import context_diagnostics
from cgh.model.heads import Encoder
from cgh.model.splitbn import norm_layer_factory


def projector(in_dim: int, hid_dim: int, out_dim: int, norm) -> nn.Sequential:
    """The official code's 3-layer projector (facebookresearch/simsiam simsiam/builder.py): two Linear(no bias) - BN
    - ReLU layers of ``hid_dim`` (their ResNet-50: 2048), then Linear(out_dim) and a BN without affine parameters.
    The last Linear keeps a bias that never trains (the official code sets ``requires_grad=False`` on it: a BN
    follows)."""
    out = nn.Linear(hid_dim, out_dim)
    out.bias.requires_grad_(False)
    return nn.Sequential(nn.Linear(in_dim, hid_dim, bias=False), norm(hid_dim), nn.ReLU(inplace=True),
                         nn.Linear(hid_dim, hid_dim, bias=False), norm(hid_dim), nn.ReLU(inplace=True),
                         out, norm(out_dim, affine=False))


def predictor(dim: int, hid_dim: int, norm) -> nn.Sequential:
    """The official 2-layer predictor: Linear(dim, hid_dim, no bias) - BN - ReLU - Linear(hid_dim, dim) (2048 -> 512
    -> 2048, simsiam/builder.py)."""
    return nn.Sequential(nn.Linear(dim, hid_dim, bias=False), norm(hid_dim), nn.ReLU(inplace=True),
                         nn.Linear(hid_dim, dim))


class SimSiam(SharedWeights):
    """views = [view 1, view 2], both strong (MoCo-v2's aug+, which SimSiam's main_simsiam.py uses unchanged).

    Projector width ``hid_dim`` -> ``feat_dim`` (official: 2048 -> 2048), predictor hidden ``pred_hid_dim`` (512).
    ``method.fix_pred_lr`` keeps the predictor at the initial lr (the official ``--fix-pred-lr``, cgh.optim.schedule).
    """

    loss_terms = ("simsiam",)

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__()
        self.cfg = cfg
        norm = norm_layer_factory(bn_splits, dims=1)
        self.student = Encoder(backbone, projector(backbone.num_features, cfg.hid_dim, cfg.feat_dim, norm))
        self.predictor = predictor(cfg.feat_dim, cfg.pred_hid_dim, norm)


    def temperatures(self) -> dict[str, float]:
        return {}

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0, diagnose: bool = False):
        x1, x2 = views[0], views[1]
        s1, s2 = self.student(x1, hyper=False), self.student(x2, hyper=False)  # each view its own BN batch
        self.teacher_pooled = s1.pooled.detach()  # (B, C): the online probe's input (cgh.train.online_probe)
        z1, z2 = s1.z, s2.z  # (B, D) each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, D) each

        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))  # z detached inside (SimSiam eq. 2)
        terms = {"simsiam": loss.detach()}
        if diagnose:  # the std of the normalised z, the SimSiam paper's collapse measure (Fig. 2)
            terms.update(context_diagnostics("global", z1.detach()))
        return loss, terms
