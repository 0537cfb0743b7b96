"""Losses as pure functions on tensors (docs/method.md#losses). No buffers, no queue mutation, no hidden normalisation.

All maths runs in float32 with autocast disabled, whatever the caller's autocast state: the relation softmaxes use
temperatures as low as 0.04, which bf16/fp16 logits cannot resolve. The losses of BYOL, SimSiam and SimCLR keep float64
inputs in float64 (the tests compare them with the papers' equations to 1e-10).

Shapes: N rows (the batch), D feature dimension, K queue slots, M rows of the global batch (over processes).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# einsum strings, named once
PAIRWISE = "nd,nd->n"  # row-wise dot products
AGAINST_QUEUE = "nd,kd->nk"  # every row against every queue slot


def _float32(x: torch.Tensor):
    """Context that turns autocast off for ``x``'s device type."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or as it is when already float32 or float64 (so that float64 tests compute in float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def relation_logits(z: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """Similarities of L2-normalised features with the queue, no temperature (docs/method.md#relation-logits).

    z: (N, D), queue: (K, D) -> (N, K), float32.
    """
    with _float32(z):
        return torch.einsum(AGAINST_QUEUE, z.float(), queue.float())  # (N, K)


def relation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau_s: float, tau_t: float
) -> torch.Tensor:
    """Soft-target cross-entropy between the teacher's sharpened relation distribution and the student's.

        L = mean_n  - sum_k  softmax(teacher_logits / tau_t)[n, k] * log_softmax(student_logits / tau_s)[n, k]

    student_logits, teacher_logits: (N, K) similarities against the same queue slots (``relation_logits``).
    The teacher side is a target: it is detached (the stop-gradient of docs/method.md#cross-context-losses). ReSSL uses
    tau_s 0.1, tau_t 0.04; CGH's four temperatures are in its config (docs/method.md#cross-context-losses). Returns a
    scalar.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"relation_loss expects two (N, K) tensors of equal shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    with _float32(student_logits):
        target = F.softmax(teacher_logits.detach().float() / tau_t, dim=1)  # (N, K)
        log_p = F.log_softmax(student_logits.float() / tau_s, dim=1)  # (N, K)
        return -(target * log_p).sum(dim=1).mean()


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo's InfoNCE: the positive is the key of the same image, the negatives are the queue
    (docs/method.md#infonce-warmup).

        L = mean_n  - log( exp(q_n.k_n / tau) / (exp(q_n.k_n / tau) + sum_j exp(q_n.queue_j / tau)) )

    q, k: (N, D) L2-normalised (k is detached: it comes from the teacher), queue: (K, D). Returns a scalar.
    """
    if q.shape != k.shape or q.ndim != 2 or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce expects q, k of shape (N, D) and queue (K, D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(queue.shape)}")
    with _float32(q):
        q, k, queue = q.float(), k.detach().float(), queue.detach().float()
        pos = torch.einsum(PAIRWISE, q, k).unsqueeze(1)  # (N, 1)
        neg = torch.einsum(AGAINST_QUEUE, q, queue)  # (N, K)
        logits = torch.cat([pos, neg], dim=1) / tau  # (N, 1 + K)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = - mean_n cos(p_n, sg(z_n)) (Chen and He, CVPR 2021, eq. 1; the official main_simsiam.py
    uses nn.CosineSimilarity(dim=1) on the detached z). p, z: (N, D), not normalised. Returns a scalar in [-1, 1]."""
    _same_rows("negative_cosine", p, z)
    with _float32(p):
        return -F.cosine_similarity(_wide(p), _wide(z.detach()), dim=1).mean()


def byol_regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss of one direction: mean_n || p_n/|p_n| - sg(z_n)/|z_n| ||^2 = mean_n (2 - 2 cos(p_n, z_n))
    (Grill et al., NeurIPS 2020, eq. 2; deepmind-research byol/utils/helpers.py regression_loss, averaged over the
    batch in byol/byol_experiment.py). p: online prediction, z: target projection (detached), (N, D). A scalar in
    [0, 4]."""
    _same_rows("byol_regression", p, z)
    with _float32(p):
        return (2 - 2 * torch.einsum(PAIRWISE, F.normalize(_wide(p), dim=1),
                                     F.normalize(_wide(z.detach()), dim=1))).mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float, all1: torch.Tensor | None = None,
            all2: torch.Tensor | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR's NT-Xent over 2M candidates (Chen et al., ICML 2020, eq. 1, both directions: the loss of each of the
    2N local anchors, averaged).

        anchor a in {z1_n, z2_n}, candidates {all1_m, all2_m}: l(a) = - log( exp(cos(a, pos)/tau) /
                                                                      sum_{c != a} exp(cos(a, c)/tau) )

    z1, z2: (N, D) the two views of this process's rows (L2-normalised here); all1, all2: (M, D) the two views of the
    global batch, gathered *with* gradient (cgh.runtime.dist.gather_rows_with_grad), and index: (N,) the positions of
    this process's rows in it. Without them the batch is its own (M = N). An anchor's positive is the other view of its
    image; its own entry (self-similarity) is masked out, leaving 2M - 2 negatives. A scalar.
    """
    _same_rows("nt_xent", z1, z2)
    if all1 is None:
        all1, all2, index = z1, z2, torch.arange(z1.shape[0], device=z1.device)
    m = all1.shape[0]
    with _float32(z1):
        anchors = F.normalize(_wide(torch.cat([z1, z2])), dim=1)  # (2N, D)
        cands = F.normalize(_wide(torch.cat([all1, all2])), dim=1)  # (2M, D)
        logits = torch.einsum(AGAINST_QUEUE, anchors, cands) / tau  # (2N, 2M)
        own = torch.cat([index, index + m])  # (2N,) each anchor's own column
        pos = torch.cat([index + m, index])  # (2N,) the other view of the same image
        logits = logits.masked_fill(F.one_hot(own, 2 * m).bool(), float("-inf"))  # no self-similarity
        return F.cross_entropy(logits, pos)


def _same_rows(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"{name} expects two (N, D) tensors of equal shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def cgh_loss_weights(step: int, warmup_steps: int, hyper: float = 0.5,
                     csist: float = 0.5) -> tuple[float, float, float]:
    """Weights (w_cl, w_hyper, w_csist) of CGH's three terms at a global iteration (docs/method.md#loss-weights).

    During the warm-up (step < warmup_steps = loss_warmup_epochs * iterations per epoch), alpha = step /
    warmup_steps and the weights are (1 - alpha, alpha * hyper, alpha * csist): pure InfoNCE at the first step,
    ramping per iteration into the two cross-context terms. Afterwards (0, hyper, csist). The authors' weights are
    hyper = csist = 1/2 (method.hyper_weight, method.csist_weight).
    """
    if step < warmup_steps:
        alpha = step / warmup_steps
        return 1.0 - alpha, hyper * alpha, csist * alpha
    return 0.0, hyper, csist
