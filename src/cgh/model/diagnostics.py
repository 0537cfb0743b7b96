"""Collapse and health diagnostics of a pretraining run: pure functions on a batch of features, and a watch.

Relational methods (ReSSL, CGH) have a fixed point where every feature is the same vector: every relation to the
queue is then equal, the teacher's target is uniform, the student is taught to be equally similar to everything,
the loss sits at ln K and its gradient is zero. These numbers tell a healthy run from one drifting there, cheaply
enough to leave on (benchmarks/diagnostics_cost.md). Per context (``global``, ``hyper``) of the student's batch:

    std   standard deviation over the batch of the L2-normalised features, averaged over the dimensions, times
          sqrt(D): about 1 for features spread over the sphere, 0 when collapsed (the SimSiam paper's measure).
    rank  effective rank of the batch's centred features, exp(entropy of the normalised singular values)
          (Roy and Vetterli, EUSIPCO 2007; RankMe, Garrido et al. ICML 2023): 1 .. min(N, D). It measures
          dimensional collapse; it ignores scale, so a collapse to one vector plus noise keeps a high rank (std and
          cos show that one).
    cos   mean cosine similarity between different images of the batch: about 0 when spread, 1 when collapsed.
    ent   entropy of the teacher's relation distribution softmax(k . Q / tau_t) as a fraction of ln K: 1 is a
          uniform target (no signal), small is a sharp one (only for methods with relation targets).

Shapes: N rows (the batch), D feature dimension, K queue slots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CollapseCriteria:
    """What CollapseWatch counts as a collapse: the mechanism, not one trajectory.

    The relational methods' collapse is the fixed point of the relation loss: the teacher's relation target is
    uniform (its entropy is ln K) and the student matches it (the loss is ln K, the gradient vanishes). A logged step
    is at that fixed point when, while the relation losses carry the training (the InfoNCE warm-up's weight ``w_nce``
    at most ``in_charge``), every teacher entropy is at least ``ent_uniform`` of ln K and every relation loss is
    within ``loss_rel_tol`` of ln K (relative, so that it means the same at any K). For any method, features whose
    normalised std is below ``std_collapsed`` in every context are collapsed too (the SimSiam paper's measure; the
    only sign for a method without a relation target). A collapse is reported once it has lasted ``patience``
    consecutive logged steps.

    The defaults were chosen from runs on two datasets with five seeds, one and two threads and two CPUs, collapsed
    and healthy; benchmarks/portability.md#collapse-detector gives the confusion table and the margin each threshold
    keeps on both sides.
    """

    ent_uniform: float = 0.98
    loss_rel_tol: float = 0.01
    in_charge: float = 0.5
    std_collapsed: float = 0.05
    patience: int = 3


CRITERIA = CollapseCriteria()


@torch.no_grad()
def feature_stats(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """``std``, ``rank`` and ``cos`` (module docstring) of a batch of features z: (N, D), N >= 2. Scalars on
    z's device, float32; nothing is read to the host."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"feature_stats expects (N, D) features with N >= 2, got {tuple(z.shape)}")
    with torch.autocast(z.device.type, enabled=False):  # called inside the loop's autocast: stay in float32
        z = F.normalize(z.detach().float(), dim=1)  # (N, D)
        n, d = z.shape
        std = z.std(dim=0).mean() * math.sqrt(d)
        # mean off-diagonal cosine without the (N, N) matrix: |sum_i z_i|^2 = N + sum_{i != j} z_i . z_j
        cos = (z.sum(dim=0).square().sum() - n) / (n * (n - 1))
        s = torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))  # (min(N, D),)
        p = s / s.sum().clamp_min(1e-12)
        rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {"std": std, "rank": rank, "cos": cos}


@torch.no_grad()
def relation_entropy(teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean entropy of softmax(teacher_logits / tau) over the rows, as a fraction of ln K.

    teacher_logits: (N, K) similarities to the queue (``cgh.losses.relation_logits``), K >= 2. A scalar in [0, 1].
    """
    if teacher_logits.ndim != 2 or teacher_logits.shape[1] < 2:
        raise ValueError(f"relation_entropy expects (N, K) logits with K >= 2, got {tuple(teacher_logits.shape)}")
    with torch.autocast(teacher_logits.device.type, enabled=False):
        log_p = F.log_softmax(teacher_logits.detach().float() / tau, dim=1)  # (N, K)
        entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
    return entropy / math.log(teacher_logits.shape[1])


def context_diagnostics(context: str, z: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                        tau_t: float | None = None) -> dict[str, torch.Tensor]:
    """The diagnostics of one context, named ``<stat>_<context>`` (e.g. ``std_global``, ``ent_hyper``)."""
    out = {f"{name}_{context}": value for name, value in feature_stats(z).items()}
    if teacher_logits is not None and tau_t is not None:
        out[f"ent_{context}"] = relation_entropy(teacher_logits, tau_t)
    return out


def is_diagnostic(name: str) -> bool:
    """Whether a logged term is one of these diagnostics (rather than a loss term)."""
    stat, _, context = name.partition("_")
    return stat in ("std", "rank", "cos", "ent") and context in ("global", "hyper")


def collapse_signs(values: Mapping[str, float], queue_size: int, relation_terms: tuple[str, ...] = (),
                   criteria: CollapseCriteria = CRITERIA) -> list[str]:
    """What in one logged step's ``values`` says the features have collapsed (empty when nothing does): the relation
    losses at their fixed point, or the feature std collapsed in every context (``CollapseCriteria``).
    ``relation_terms``: the names of the method's relation losses; ``values`` may carry ``w_nce`` (the InfoNCE
    warm-up's weight; 0 when absent) and the diagnostics of ``context_diagnostics``."""
    c, signs, ln_k = criteria, [], math.log(queue_size)
    losses = {name: values[name] for name in relation_terms if name in values}
    ents = {k: v for k, v in values.items() if is_diagnostic(k) and k.startswith("ent_")}
    w_nce = values.get("w_nce", 0.0)
    if losses and ents and w_nce <= c.in_charge and all(v >= c.ent_uniform for v in ents.values()) \
            and all(abs(v / ln_k - 1) <= c.loss_rel_tol for v in losses.values()):
        signs.append("relation losses at ln K, their fixed point (" + ", ".join(
            f"{n} {v:.4f}" for n, v in losses.items()) + f"; ln K = {ln_k:.4f}, within {c.loss_rel_tol:.0%}) "
            "against a uniform teacher target (entropy " + ", ".join(f"{k.partition('_')[2]} {v:.3f}"
                                                                       for k, v in ents.items())
            + f" of ln K, >= {c.ent_uniform})" + (f", with w_nce {w_nce:.2f}" if "w_nce" in values else ""))
    stds = {k: v for k, v in values.items() if is_diagnostic(k) and k.startswith("std_")}
    if stds and all(v < c.std_collapsed for v in stds.values()):
        signs.append("feature std " + ", ".join(f"{k.partition('_')[2]} {v:.3f}" for k, v in stds.items())
                     + f" (< {c.std_collapsed}; ~1 when spread)")
    return signs


class CollapseWatch:
    """Fed the values of every logged step; reports once when a collapse has lasted ``patience`` logged steps.

    ``update`` returns the warning text the first time the collapse is sustained, else None. It never stops the run:
    the loop does that when ``train.stop_on_collapse`` is set.
    """

    def __init__(self, queue_size: int, relation_terms: tuple[str, ...] = (), stops: bool = False,
                 criteria: CollapseCriteria = CRITERIA):
        self.queue_size, self.relation_terms, self.criteria = queue_size, tuple(relation_terms), criteria
        self.stops = stops  # whether the run stops on the warning (train.stop_on_collapse): the text says so
        self.streak, self.first_step, self.reported = 0, None, False

    def update(self, step: int, values: Mapping[str, float]) -> str | None:
        signs = collapse_signs(values, self.queue_size, self.relation_terms, self.criteria)
        if not signs:
            self.streak, self.first_step = 0, None
            return None
        self.streak += 1
        self.first_step = step if self.first_step is None else self.first_step
        if self.streak < self.criteria.patience or self.reported:
            return None
        self.reported = True
        diag = ", ".join(f"{k} {v:.3f}" for k, v in values.items() if is_diagnostic(k))
        return (f"warning: the features look collapsed since step {self.first_step} ({self.streak} logged steps): "
                f"{'; '.join(signs)} ({diag}). What decides it at small scale (benchmarks/relational_study.md): "
                "the length of the InfoNCE warm-up in steps (method.loss_warmup_min_steps; method.ressl_warmup for "
                "ReSSL) and BN in the projection heads (method.head_bn). "
                + ("Stopping (train.stop_on_collapse)." if self.stops
                   else "Set train.stop_on_collapse=true to stop such a run."))
