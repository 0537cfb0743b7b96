"""CGH (Gao, Feng, Patras, WACV 2024): cross-context learning between global and hypercolumn features.

Two contexts of one encoder describe an image by its relations to the same queue of past images: the *global*
context (pooled layer4 -> MLP) and the *hypercolumn* context (stacked layer3+layer4 -> 1x1 conv -> MLP). Each
context's student learns the other context's teacher relations (docs/method.md#cross-context-losses):

    L_hyper = CE( softmax(k . Q / tau_t_glob),   q_h . Q_h / tau_s_hyp )     hypercolumn student <- global teacher
    L_csist = CE( softmax(k_h . Q_h / tau_t_hyp), q . Q / tau_s_glob )       global student <- hypercolumn teacher

The two queues are pushed in lockstep, so slot j of Q and Q_h is the same past image. For the first
``loss_warmup_epochs`` the loss ramps per iteration from within-context InfoNCE into these terms
(docs/method.md#infonce-warmup, docs/method.md#loss-weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgh.config import MethodConfig
from cgh.losses import cgh_loss_weights, info_nce, relation_logits, relation_loss
from cgh.methods.common import build_encoder, teacher_forward
from cgh.model.backbone import ResNet
from cgh.model.diagnostics import context_diagnostics
from cgh.model.ema import ema_update, make_teacher
from cgh.model.queue import FeatureQueue
from cgh.runtime import dist


class CGH(nn.Module):
    """views = [weak view (teacher), strong view (student), *strong local crops (multi-crop,
    docs/method.md#multi-crop)].

    Temperatures (docs/method.md#cross-context-losses, the authors' effective values): global teacher 0.04, global
    student 0.1, hypercolumn teacher 0.08, hypercolumn student 0.08; the authors hard-code the first two, here all four
    are config values. Ablations: ``context="same"`` makes each context learn from its own teacher;
    ``hyper_from_global`` and ``global_from_hyper`` switch the two directions and ``hyper_weight`` and
    ``csist_weight`` weigh them; ``hyper_layers`` chooses the stacked stages.
    """

    teacher_view = "weak"  # crop + flip for the teacher, strong for the student (docs/method.md#weak-view)
    loss_terms = ("hyper", "csist", "nce")  # nce during the warm-up only
    relation_terms = ("hyper", "csist")  # cross-context relation losses: ln K when collapsed (cgh.model.diagnostics)

    def __init__(self, backbone: ResNet, cfg: MethodConfig, bn_splits: int = 1, shuffle: bool = True,
                 warmup_steps: int = 0):
        super().__init__()
        if not (cfg.hyper_from_global or cfg.global_from_hyper):
            raise ValueError("CGH needs at least one of method.hyper_from_global and method.global_from_hyper")
        self.cfg, self.shuffle, self.warmup_steps = cfg, shuffle, warmup_steps
        self.student = build_encoder(backbone, cfg, hypercolumn=True, bn_splits=bn_splits)
        self.teacher = make_teacher(self.student)
        self.queue = FeatureQueue(cfg.queue_size, cfg.feat_dim)
        self.queue_hyper = FeatureQueue(cfg.queue_size, cfg.hyper_dim)
        if cfg.centering:  # docs/method.md#centering, with the mean (not the sum) of the batch, and only when enabled
            self.register_buffer("center", torch.zeros(1, cfg.queue_size))
            self.register_buffer("center_hyper", torch.zeros(1, cfg.queue_size))
        # With one direction off, one head gets no gradient after the warm-up; DDP must be told.
        self.needs_find_unused = not (cfg.hyper_from_global and cfg.global_from_hyper)

    def temperatures(self) -> dict[str, float]:
        c = self.cfg
        return {"teacher_global": c.temp_teacher_global, "student_global": c.temp_student_global,
                "teacher_hyper": c.temp_teacher_hyper, "student_hyper": c.temp_student_hyper,
                "infonce": c.temperature}

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0, diagnose: bool = False):
        c = self.cfg
        weak, strong, *local = views
        ema_update(self.student, self.teacher, momentum)  # docs/method.md#student-teacher: every step, before the
                                                          # teacher forward

        # ---- features: one backbone pass per view feeds both contexts ----------------------------------------
        # The teacher goes first, as in ReSSL: its no-grad pass frees each map as it goes, and run before the student
        # builds its graph it is not stacked on top of the student's saved activations (the order changes no number:
        # the two passes share nothing, and only the teacher's batch shuffle draws random numbers;
        # benchmarks/training_cost.md#side-by-side).
        t = teacher_forward(self.teacher, weak, self.shuffle, hyper=True)
        self.teacher_pooled = t.pooled  # (B, C) no grad: the online probe's input (cgh.train.online_probe)
        k, kh = F.normalize(t.z, dim=1), F.normalize(t.zh, dim=1)  # (B, D), (B, Dh), no grad
        s = self.student(strong, hyper=True)
        q, qh = F.normalize(s.z, dim=1), F.normalize(s.zh, dim=1)  # (B, D), (B, Dh)
        queue, queue_h = self.queue.features, self.queue_hyper.features  # (K, D), (K, Dh)

        # ---- relations to the queues (no temperature yet), docs/method.md#relation-logits
        # ---------------------------------------------
        lq, lqh = relation_logits(q, queue), relation_logits(qh, queue_h)  # (B, K) each
        lk_raw, lkh_raw = relation_logits(k, queue), relation_logits(kh, queue_h)  # (B, K) each, teacher
        lk, lkh = (lk_raw - self.center, lkh_raw - self.center_hyper) if c.centering else (lk_raw, lkh_raw)

        # ---- which teacher each student learns from --------------------------------------------------------------
        glob_t, hyper_t = (lk, c.temp_teacher_global), (lkh, c.temp_teacher_hyper)
        for_hyper, for_global = (glob_t, hyper_t) if c.context == "cross" else (hyper_t, glob_t)

        w_cl, w_hyper, w_csist = cgh_loss_weights(step, self.warmup_steps, c.hyper_weight, c.csist_weight)
        terms: dict[str, torch.Tensor] = {}
        loss = lq.new_zeros(())
        if c.hyper_from_global:  # hypercolumn student <- global teacher (cross context)
            terms["hyper"] = relation_loss(lqh, for_hyper[0], c.temp_student_hyper, for_hyper[1])
            loss = loss + w_hyper * terms["hyper"]
        if c.global_from_hyper:  # global student <- hypercolumn teacher, averaged with the local crops
                                 # (docs/method.md#multi-crop)
            csist = [relation_loss(lq, for_global[0], c.temp_student_global, for_global[1])]
            for x in local:  # local crops go through the global branch only
                ql = F.normalize(self.student(x, hyper=False).z, dim=1)  # (B, D)
                csist.append(relation_loss(relation_logits(ql, queue), for_global[0], c.temp_student_global,
                                           for_global[1]))
            terms["csist"] = torch.stack(csist).mean()
            loss = loss + w_csist * terms["csist"]
        if w_cl > 0:  # InfoNCE warm-up within each context (docs/method.md#infonce-warmup); skipped entirely once its
                      # weight is 0
            terms["nce"] = info_nce(q, k, queue, c.temperature) + info_nce(qh, kh, queue_h, c.temperature)
            loss = loss + w_cl * terms["nce"]

        # ---- queues in lockstep (after the logits), then the centres ---------------------------------------------
        self.queue.push(k)
        self.queue_hyper.push(kh)
        if c.centering:
            self._update_centers(lk_raw, lkh_raw)
        terms = {name: value.detach() for name, value in terms.items()}
        terms["w_nce"] = torch.tensor(w_cl)
        if diagnose:  # each context's student features and its own teacher's target (cgh.model.diagnostics)
            terms.update(context_diagnostics("global", q, lk, c.temp_teacher_global))
            terms.update(context_diagnostics("hyper", qh, lkh, c.temp_teacher_hyper))
        return loss, terms

    @torch.no_grad()
    def _update_centers(self, lk: torch.Tensor, lkh: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean over the global batch of the uncentred teacher logits
        (docs/method.md#centering)."""
        n = dist.all_reduce_sum(torch.tensor(float(lk.shape[0]), device=lk.device))
        for center, logits in ((self.center, lk), (self.center_hyper, lkh)):
            batch_mean = dist.all_reduce_sum(logits.sum(0, keepdim=True)) / n  # (1, K)
            center.mul_(self.cfg.center_momentum).add_(batch_mean, alpha=1 - self.cfg.center_momentum)
