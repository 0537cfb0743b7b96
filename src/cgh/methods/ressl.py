"""ReSSL (Zheng et al. 2021): the student matches the teacher's sharpened relations to a queue of past keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgh.backbone import ResNet
from cgh.config import MethodConfig
from cgh.ema import ema_update, make_teacher
from cgh.losses import relation_logits, relation_loss
from cgh.methods.common import build_encoder, teacher_forward
from cgh.queue import FeatureQueue


class ReSSL(nn.Module):
    """views = [weak view (teacher), strong view (student), *strong local crops].

    loss = CE(softmax(k.queue / tau_t), q.queue / tau_s) with tau_t = ``temp_teacher_global`` (0.04) and tau_s =
    ``temp_student_global`` (0.1), ReSSL's values. Multi-crop as in the ReSSL repo (SPEC 2.7): every strong crop is a
    student of the same teacher relation, and the loss is averaged over all crops' rows.
    """

    needs_find_unused = False

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__()
        self.cfg, self.shuffle = cfg, shuffle
        self.student = build_encoder(backbone, cfg, hypercolumn=False, bn_splits=bn_splits)
        self.teacher = make_teacher(self.student)
        self.queue = FeatureQueue(cfg.queue_size, cfg.feat_dim)

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0):
        weak, *strong = views
        ema_update(self.student, self.teacher, momentum)

        k = F.normalize(teacher_forward(self.teacher, weak, self.shuffle, hyper=False).z, dim=1)  # (B, D)
        logits_k = relation_logits(k, self.queue.features)  # (B, K)
        losses = []
        for x in strong:  # the 'global' strong view, then the local crops (equal rows each: a mean of means)
            q = F.normalize(self.student(x, hyper=False).z, dim=1)  # (B, D)
            losses.append(relation_loss(relation_logits(q, self.queue.features), logits_k,
                                        self.cfg.temp_student_global, self.cfg.temp_teacher_global))
        loss = torch.stack(losses).mean()

        self.queue.push(k)
        return loss, {"relation": loss.detach()}
