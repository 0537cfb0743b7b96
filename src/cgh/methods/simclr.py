"""SimCLR (Chen et al., ICML 2020): each view's projection picks its other view out of the 2B - 1 other projections of
the global batch (NT-Xent, cgh.losses.nt_xent), in both directions.

Negatives are gathered from every process *with* their gradient (cgh.runtime.dist.gather_rows_with_grad), so that two
processes compute what one process computes on their joint batch; a plain all_gather would silently drop the
gradient through the other processes' negatives.
"""

from __future__ import annotations

import torch

from cgh.config import MethodConfig
from cgh.losses import nt_xent
from cgh.methods.common import SharedWeights
from cgh.model.backbone import ResNet
from cgh.model.diagnostics import context_diagnostics
from cgh.model.heads import Encoder, mlp
from cgh.model.splitbn import norm_layer_factory
from cgh.runtime import dist


class SimCLR(SharedWeights):
    """views = [view 1, view 2], both strong. No momentum encoder (``teacher`` aliases the student).

    Projector: Linear(hid_dim) - BN - ReLU - Linear(feat_dim) (SimCLR v1: one hidden layer of 2048, output 128; the BN
    as in its TF code's projection head). Temperature ``method.temperature`` (SimCLR: 0.1 on ImageNet, 0.5 in its
    CIFAR-10 recipe). NOTE: SimCLR's TF code passes both views through the network as one batch (one BN batch of 2B);
    here each view is its own BN batch, as in SimSiam's and BYOL's code.
    """

    loss_terms = ("ntxent",)

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__()
        self.cfg = cfg
        norm = norm_layer_factory(bn_splits, dims=1)
        self.student = Encoder(backbone, mlp(backbone.num_features, cfg.hid_dim, cfg.feat_dim, norm))


    def temperatures(self) -> dict[str, float]:
        return {"ntxent": self.cfg.temperature}

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0, diagnose: bool = False):
        x1, x2 = views[0], views[1]
        s1, s2 = self.student(x1, hyper=False), self.student(x2, hyper=False)
        self.teacher_pooled = s1.pooled.detach()  # (B, C): the online probe's input (cgh.train.online_probe)
        z1, z2 = s1.z, s2.z  # (b, D) this process's rows
        all1, all2 = dist.gather_rows_with_grad(z1), dist.gather_rows_with_grad(z2)  # (B, D) global batch
        index = dist.global_row_index(z1.shape[0], z1.device)  # (b,) where this process's rows are in it

        loss = nt_xent(z1, z2, self.cfg.temperature, all1, all2, index)
        terms = {"ntxent": loss.detach()}
        if diagnose:
            terms.update(context_diagnostics("global", z1.detach()))
        return loss, terms
