"""ReSSL (Zheng et al. 2021): the student matches the teacher's sharpened relations to a queue of past keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cgh.config import MethodConfig
from cgh.losses import cgh_loss_weights, info_nce, relation_logits, relation_loss
from cgh.methods.common import SingleContext, teacher_forward
from cgh.model.backbone import ResNet
from cgh.model.diagnostics import context_diagnostics
from cgh.model.ema import ema_update


class ReSSL(SingleContext):
    """views = [weak view (teacher), strong view (student), *strong local crops].

    loss = CE(softmax(k.queue / tau_t), q.queue / tau_s) with tau_t = ``temp_teacher_global`` (0.04) and tau_s =
    ``temp_student_global`` (0.1), ReSSL's values. Multi-crop as in the ReSSL repo (docs/method.md#multi-crop): every
    strong crop is a student of the same teacher relation, and the loss is averaged over all crops' rows.

    With ``cfg.ressl_warmup`` (a DEPARTURE from the official ReSSL, which has none; the ReSSL journal version adds
    one) the loss ramps from MoCo's InfoNCE into the relation loss over ``warmup_steps``, per iteration, with the
    weights of CGH's warm-up: (1 - alpha) InfoNCE + alpha relation.
    """

    teacher_view = "weak"  # crop + flip for the teacher, strong for the student (docs/method.md#weak-view)
    loss_terms = ("relation", "nce")  # nce only during the optional warm-up (ressl_warmup)
    relation_terms = ("relation",)  # losses against the queue's relations: ln K when collapsed (cgh.model.diagnostics)
    uses_warmup = True  # only with cfg.ressl_warmup

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__(backbone, cfg, bn_splits, shuffle, warmup_steps if cfg.ressl_warmup else 0)

    def temperatures(self) -> dict[str, float]:
        temps = {"teacher_global": self.cfg.temp_teacher_global, "student_global": self.cfg.temp_student_global}
        return temps | ({"infonce": self.cfg.temperature} if self.warmup_steps else {})

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0, diagnose: bool = False):
        weak, *strong = views
        ema_update(self.student, self.teacher, momentum)

        t = teacher_forward(self.teacher, weak, self.shuffle, hyper=False)
        self.teacher_pooled = t.pooled  # (B, C) no grad: the online probe's input (cgh.train.online_probe)
        k = F.normalize(t.z, dim=1)  # (B, D)
        logits_k = relation_logits(k, self.queue.features)  # (B, K)
        losses, q0 = [], None
        for x in strong:  # the 'global' strong view, then the local crops (equal rows each: a mean of means)
            q = F.normalize(self.student(x, hyper=False).z, dim=1)  # (B, D)
            q0 = q if q0 is None else q0
            losses.append(relation_loss(relation_logits(q, self.queue.features), logits_k,
                                        self.cfg.temp_student_global, self.cfg.temp_teacher_global))
        relation = torch.stack(losses).mean()
        terms = {"relation": relation.detach()}
        w_nce, w_hyper, w_csist = cgh_loss_weights(step, self.warmup_steps)
        loss = (w_hyper + w_csist) * relation
        if w_nce > 0:  # the optional InfoNCE warm-up (ressl_warmup), on the 'global' strong view
            nce = info_nce(q0, k, self.queue.features, self.cfg.temperature)
            loss = loss + w_nce * nce
            terms["nce"] = nce.detach()
        if self.warmup_steps:
            terms["w_nce"] = torch.tensor(w_nce)
        if diagnose:  # the student's strong view, and the teacher's target (cgh.model.diagnostics)
            terms.update(context_diagnostics("global", q0, logits_k, self.cfg.temp_teacher_global))
        self.queue.push(k)
        return loss, terms
