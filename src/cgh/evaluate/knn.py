"""Weighted kNN classification on L2-normalised features (InstDisc / MoCo demo / DINO protocol,
docs/evaluation.md#knn-monitor, docs/evaluation.md#knn-evaluation).

Each test feature takes its k most cosine-similar bank features; neighbour j votes for its class with weight
exp(sim_j / T); classes are ranked by their summed weight. The bank is processed in chunks of test rows and is not
copied, so the memory is the bank plus one (chunk, N_bank) similarity block (benchmarks/knn_memory.md), and an
ImageNet-sized bank fits in memory.

``cgh knn CHECKPOINT`` (docs/evaluation.md#knn-evaluation, cgh.commands.knn): pooled backbone features, L2-normalised, k
in {10, 20, 100, 200} at T = 0.07, top-1 and top-5 on the test split with the train split as the memory bank. Fixed from
the authors' script (docs/method.md#quirk-eval-scripts): no torch.distributed needed, the class count is read from the
data (not 1000), and the chunking is by a row count, not "100 chunks".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIMILARITY = "nd,md->nm"  # test rows against bank rows
DEFAULT_KS = (10, 20, 100, 200)  # docs/evaluation.md#knn-evaluation


def _check_inputs(bank, bank_labels, queries, num_classes, ks, t, chunk_size) -> None:
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"knn expects bank (N, D) and queries (Q, D), got {tuple(bank.shape)}, {tuple(queries.shape)}")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must have shape ({bank.shape[0]},), got {tuple(bank_labels.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("knn needs a non-empty bank (N >= 1)")
    if any(k < 1 for k in ks) or not ks or t <= 0:
        raise ValueError(f"knn needs k >= 1 and t > 0, got k={list(ks)}, t={t}")
    if num_classes < 1 or chunk_size < 1:
        raise ValueError(f"knn needs num_classes >= 1 and chunk_size >= 1, got {num_classes}, {chunk_size}")
    if bank_labels.numel() and (int(bank_labels.min()) < 0 or int(bank_labels.max()) >= num_classes):
        raise ValueError(f"bank_labels must lie in [0, {num_classes}) (num_classes); got "
                         f"[{int(bank_labels.min())}, {int(bank_labels.max())}]")


def _neighbours(bank: torch.Tensor, queries: torch.Tensor, k: int, chunk_size: int):
    """Yield (start, top_sim (n, k), top_idx (n, k)) per chunk of query rows, neighbours sorted by similarity.

    The bank is not copied (a float32 bank is used as it is): instead of normalising it, each chunk's similarities
    are divided by the bank rows' norms, (q . b) / |b| = q . (b / |b|). Memory: the bank, its N norms and one
    (chunk, N) similarity block (F.normalize(bank) would hold a second bank: 2 GiB more for 1M x 512, and keeping
    the previous block while the next one is computed would hold two).
    """
    bank = bank.float()
    inv_norm = bank.norm(dim=1).clamp_min(1e-12).reciprocal()  # (N,), F.normalize's eps
    for start in range(0, queries.shape[0], chunk_size):
        q = F.normalize(queries[start : start + chunk_size].float().to(bank.device), dim=1)
        sim = torch.einsum(SIMILARITY, q, bank).mul_(inv_norm)  # (n, N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # (n, k), sorted descending
        del sim  # before the next block exists: otherwise two (chunk, N) blocks are alive at once
        yield start, top_sim, top_idx


def _vote(top_sim: torch.Tensor, top_labels: torch.Tensor, num_classes: int, t: float) -> torch.Tensor:
    weights = (top_sim / t).exp()  # (n, k)
    scores = torch.zeros(top_sim.shape[0], num_classes, device=top_sim.device)
    return scores.scatter_add_(1, top_labels, weights)  # (n, C)


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
    _check_inputs(bank, bank_labels, queries, num_classes, [k], t, chunk_size)
    k = min(k, bank.shape[0])
    bank_labels = bank_labels.to(bank.device)
    out = [_vote(s, bank_labels[i], num_classes, t) for _, s, i in _neighbours(bank, queries, k, chunk_size)]
    return torch.cat(out) if out else torch.zeros(0, num_classes, device=bank.device)


def knn_accuracy(bank, bank_labels, queries, query_labels, num_classes, k=20, t=0.07, chunk_size=256) -> float:
    """Top-1 accuracy in percent of weighted kNN."""
    scores = knn_scores(bank, bank_labels, queries, num_classes, k, t, chunk_size)
    return 100.0 * (scores.argmax(1) == query_labels.to(scores.device)).float().mean().item()


@torch.no_grad()
def knn_evaluate(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    ks=DEFAULT_KS,
    t: float = 0.07,
    chunk_size: int = 256,
) -> dict[int, dict[str, float]]:
    """Top-1 and top-5 accuracy (percent) of weighted kNN for several k at once: ``{k: {"top1": .., "top5": ..}}``.

    The max(k) nearest neighbours are found once per chunk of ``chunk_size`` query rows (the (chunk, N) similarity
    matrix is the largest tensor held: 256 x 1.28M float32 = 1.3 GB for ImageNet); each k uses the first k of them.
    k larger than the bank is capped at N (the result stays under the k asked for). Top-5 is top-min(5, C) when there
    are fewer than 5 classes. A query is counted correct at top-n when its label is among the n best-scored classes.
    Shapes as in ``knn_scores``; query_labels: (Q,) int64. Q = 0 gives NaN accuracies.
    """
    ks = [int(k) for k in ks]
    _check_inputs(bank, bank_labels, queries, num_classes, ks, t, chunk_size)
    if query_labels.shape != (queries.shape[0],):
        raise ValueError(f"query_labels must have shape ({queries.shape[0]},), got {tuple(query_labels.shape)}")
    kmax = min(max(ks), bank.shape[0])
    top_n = min(5, num_classes)
    bank_labels = bank_labels.to(bank.device)
    query_labels = query_labels.to(bank.device)
    correct = {k: torch.zeros(2, dtype=torch.float64) for k in ks}  # [top1, top5] counts
    for start, top_sim, top_idx in _neighbours(bank, queries, kmax, chunk_size):
        top_labels = bank_labels[top_idx]  # (n, kmax)
        y = query_labels[start : start + top_sim.shape[0]].view(-1, 1)  # (n, 1)
        for k in ks:
            kk = min(k, kmax)
            scores = _vote(top_sim[:, :kk], top_labels[:, :kk], num_classes, t)  # (n, C)
            ranked = scores.topk(top_n, dim=1).indices  # (n, top_n)
            hits = ranked == y  # (n, top_n)
            correct[k][0] += hits[:, 0].sum().item()
            correct[k][1] += hits.any(dim=1).sum().item()
    q = queries.shape[0]
    return {k: {"top1": 100.0 * c[0].item() / q if q else float("nan"),
                "top5": 100.0 * c[1].item() / q if q else float("nan")} for k, c in correct.items()}
