"""Weighted kNN classification on L2-normalised features (InstDisc / MoCo demo / DINO protocol, SPEC 5.1-5.2).

Each test feature takes its k most cosine-similar bank features; neighbour j votes for its class with weight
exp(sim_j / T); classes are ranked by their summed weight. The bank is processed in chunks of test rows, so the
(chunk, N_bank) similarity matrix is the largest thing held, and an ImageNet-sized bank fits in memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIMILARITY = "nd,md->nm"  # test rows against bank rows


@torch.no_grad()
def knn_scores(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 20,
    t: float = 0.07,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Class scores (Q, num_classes) of each query row.

    bank: (N, D) and queries: (Q, D), L2-normalised (normalised here again, harmlessly); bank_labels: (N,) int64
    in [0, num_classes). k is capped at N. Scores are sums of exp(sim / t) over the k nearest bank rows per class.
    """
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"knn expects bank (N, D) and queries (Q, D), got {tuple(bank.shape)}, {tuple(queries.shape)}")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must have shape ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    if k < 1 or t <= 0:
        raise ValueError(f"knn needs k >= 1 and t > 0, got k={k}, t={t}")
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk_size):
        q = F.normalize(queries[start : start + chunk_size].float(), dim=1)
        sim = torch.einsum(SIMILARITY, q, bank)  # (n, N)
        top_sim, top_idx = sim.topk(k, dim=1)  # (n, k)
        weights = (top_sim / t).exp()  # (n, k)
        scores = torch.zeros(q.shape[0], num_classes, device=q.device)
        scores.scatter_add_(1, bank_labels[top_idx], weights)  # (n, C)
        out.append(scores)
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_accuracy(bank, bank_labels, queries, query_labels, num_classes, k=20, t=0.07, chunk_size=256) -> float:
    """Top-1 accuracy in percent of weighted kNN."""
    scores = knn_scores(bank, bank_labels, queries, num_classes, k, t, chunk_size)
    return 100.0 * (scores.argmax(1) == query_labels.to(scores.device)).float().mean().item()
