"""Weighted kNN (docs/evaluation.md#knn-monitor, docs/evaluation.md#knn-evaluation) on hand-built features whose
neighbours and votes are known.

And in bounded memory, checked on a small scale: the largest tensor allocated while
classifying is the (chunk, N) similarity block, whatever the number of queries, and the bank is never copied
(benchmarks/knn_memory.py measures the same on a 1M x 512 bank; the real process's peak memory:
tests/system/test_knn_memory.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cgh.evaluate.knn import knn_accuracy, knn_evaluate, knn_scores


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# Bank on the unit circle: class 0 at 0/10/20 degrees, class 1 at 90/100, class 2 at 180.
BANK = torch.tensor([unit(a) for a in (0, 10, 20, 90, 100, 180)])
BANK_LABELS = torch.tensor([0, 0, 0, 1, 1, 2])


def test_scores_are_exp_weighted_votes_of_the_k_nearest():
    q = torch.tensor([unit(5)])
    t = 0.07
    # Nearest first: 0 and 10 degrees (both 5 degrees away), 20 (15), 90 (85), 100 (95), 180 (175).
    w = lambda deg: math.exp(math.cos(math.radians(deg)) / t)  # noqa: E731
    expected = {
        1: [w(5), 0, 0],
        3: [2 * w(5) + w(15), 0, 0],
        4: [2 * w(5) + w(15), w(85), 0],
        6: [2 * w(5) + w(15), w(85) + w(95), w(175)],
    }
    for k, want in expected.items():
        got = knn_scores(BANK, BANK_LABELS, q, num_classes=3, k=k, t=t)
        assert got.shape == (1, 3)
        torch.testing.assert_close(got[0], torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=0)


def test_weighting_beats_majority_at_low_temperature():
    # One neighbour of class 1 at similarity 1, two of class 0 at similarity 0.5 (60 degrees away on either side).
    bank = torch.tensor([unit(0), unit(60), unit(-60)])
    labels = torch.tensor([1, 0, 0])
    q = torch.tensor([unit(0)])
    y = torch.tensor([1])
    # T = 0.07: exp(1/0.07) >> 2 exp(0.5/0.07), class 1 wins; T = 100: the votes are nearly equal, class 0 wins 2:1.
    assert knn_evaluate(bank, labels, q, y, 2, ks=[3], t=0.07)[3]["top1"] == 100.0
    assert knn_evaluate(bank, labels, q, y, 2, ks=[3], t=100.0)[3]["top1"] == 0.0
    # k = 1 sees the class-1 neighbour only, whatever the temperature.
    assert knn_evaluate(bank, labels, q, y, 2, ks=[1], t=100.0)[1]["top1"] == 100.0


def test_small_k_and_top5_with_fewer_classes():
    queries = torch.tensor([unit(5), unit(95), unit(178), unit(50)])
    labels = torch.tensor([0, 1, 2, 1])  # the last sits between the clusters, nearer class 0's 20-degree point
    res = knn_evaluate(BANK, BANK_LABELS, queries, labels, num_classes=3, ks=[1, 3], t=0.07)
    # k=1: 50 degrees is nearest to 20 (30 away) vs 90 (40 away) -> class 0, wrong; the others are right.
    assert res[1]["top1"] == 75.0
    # k=3: 50 -> 20 (30), 10 (40), 90 (40): class 0 has two votes of similar weight -> still wrong.
    assert res[3]["top1"] == 75.0
    # 3 classes: top-5 is top-3, every query is right.
    assert res[1]["top5"] == res[3]["top5"] == 100.0


def test_top5_with_many_classes():
    # 7 classes; the query's nearest neighbours are of classes 0..6 in order of similarity; its label is class 4
    # (5th best score) for top-5 right, and class 6 (7th) for top-5 wrong.
    angles = [0, 5, 10, 15, 20, 25, 30]
    bank = torch.tensor([unit(a) for a in angles])
    bank_labels = torch.arange(7)
    q = torch.tensor([unit(-1), unit(-1), unit(-1)])
    y = torch.tensor([0, 4, 6])
    res = knn_evaluate(bank, bank_labels, q, y, num_classes=7, ks=[7], t=0.07)[7]
    assert res["top1"] == pytest.approx(100 / 3)
    assert res["top5"] == pytest.approx(200 / 3)


def test_k_larger_than_bank_is_capped():
    q = torch.tensor([unit(5), unit(170)])
    y = torch.tensor([0, 2])
    res = knn_evaluate(BANK, BANK_LABELS, q, y, 3, ks=[6, 200], t=0.07)
    assert res[200] == res[6]
    torch.testing.assert_close(knn_scores(BANK, BANK_LABELS, q, 3, k=200), knn_scores(BANK, BANK_LABELS, q, 3, k=6))


def test_chunking_gives_the_unchunked_result():
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(300, 16, generator=gen)
    bank_labels = torch.randint(0, 10, (300,), generator=gen)
    queries = torch.randn(50, 16, generator=gen)
    query_labels = torch.randint(0, 10, (50,), generator=gen)
    ks = [1, 3, 10, 20, 100]
    whole = knn_evaluate(bank, bank_labels, queries, query_labels, 10, ks, 0.07, chunk_size=1000)
    chunked = knn_evaluate(bank, bank_labels, queries, query_labels, 10, ks, 0.07, chunk_size=7)  # 8 chunks
    assert whole == chunked
    torch.testing.assert_close(knn_scores(bank, bank_labels, queries, 10, 20, 0.07, chunk_size=7),
                               knn_scores(bank, bank_labels, queries, 10, 20, 0.07, chunk_size=1000),
                               rtol=1e-5, atol=0)  # matmul blocking differs with the chunk size: last-bit differences
    # The multi-k function agrees with the single-k accuracy the training monitor uses.
    for k in ks:
        assert whole[k]["top1"] == pytest.approx(knn_accuracy(bank, bank_labels, queries, query_labels, 10, k, 0.07))


def test_features_need_not_be_normalised():
    q = torch.tensor([unit(5)]) * 7.0
    assert knn_evaluate(BANK * 3.0, BANK_LABELS, q, torch.tensor([0]), 3, ks=[3])[3]["top1"] == 100.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bank=torch.zeros(4, 3), queries=torch.zeros(2, 2)), r"bank \(N, D\) and queries \(Q, D\)"),
        (dict(bank_labels=torch.zeros(3, dtype=torch.int64)), r"bank_labels must have shape \(6,\)"),
        (dict(ks=[0]), "k >= 1"),
        (dict(t=0.0), "t > 0"),
        (dict(bank_labels=torch.tensor([0, 0, 0, 1, 1, 5])), r"\[0, 3\)"),
        (dict(query_labels=torch.zeros(5, dtype=torch.int64)), r"query_labels must have shape \(1,\)"),
    ],
)
def test_bad_inputs_name_the_expected_shape_or_value(kwargs, match):
    args = dict(bank=BANK, bank_labels=BANK_LABELS, queries=torch.tensor([unit(5)]),
                query_labels=torch.tensor([0]), num_classes=3, ks=[1], t=0.07)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        knn_evaluate(**args)


# ---------------------------------------------------------------------------------------------------------------------
# Memory: the largest allocation, and the bank never copied
# ---------------------------------------------------------------------------------------------------------------------


N, D, CLASSES = 20_000, 128, 10


class Allocations(TorchDispatchMode):
    """Records the size in bytes of every tensor storage an op creates (views and in-place results excluded)."""

    def __init__(self):
        super().__init__()
        self.sizes: list[tuple[int, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs, _ = tree_flatten((args, kwargs))
        known = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        outputs, _ = tree_flatten(out)
        for t in outputs:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in known:
                self.sizes.append((t.untyped_storage().nbytes(), str(func)))
        return out

    @property
    def largest(self) -> int:
        return max(size for size, _ in self.sizes)


@pytest.fixture(scope="module")
def bank():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=gen), torch.randint(0, CLASSES, (N,), generator=gen)


@pytest.mark.parametrize("chunk", [8, 16])
def test_largest_allocation_is_one_similarity_block(bank, chunk):
    features, labels = bank
    largest = {}
    for q in (64, 256):  # 4x the queries: the same largest allocation
        queries = torch.randn(q, D)
        with Allocations() as evaluate:
            knn_evaluate(features, labels, queries, torch.randint(0, CLASSES, (q,)), CLASSES, ks=(10, 20, 200),
                         chunk_size=chunk)
        with Allocations() as scores:
            knn_scores(features, labels, queries, CLASSES, k=20, chunk_size=chunk)
        largest[q] = (evaluate.largest, scores.largest)
        block = chunk * N * 4  # (chunk, N) float32
        assert evaluate.largest <= block and scores.largest <= block, (evaluate.sizes[-5:], block)
        # The bank (N x D, 8x the largest block here) is never copied.
        assert not any(size >= features.numel() * 4 for size, _ in evaluate.sizes + scores.sizes)
    assert largest[64] == largest[256]


def test_chunking_does_not_change_the_result(bank):
    """The memory fix (no normalised copy of the bank: similarities divided by the bank norms) keeps the answer:
    unnormalised features give what their normalised copies give."""
    features, labels = bank
    queries = torch.randn(100, D)
    query_labels = torch.randint(0, CLASSES, (100,))
    scaled = features * torch.rand(N, 1) * 10  # norms far from 1
    unit = torch.nn.functional.normalize(features, dim=1)
    a = knn_evaluate(scaled, labels, queries, query_labels, CLASSES, ks=(10, 200), chunk_size=7)
    b = knn_evaluate(unit, labels, queries, query_labels, CLASSES, ks=(10, 200), chunk_size=100)
    assert a == b
    torch.testing.assert_close(knn_scores(scaled, labels, queries, CLASSES, chunk_size=13),
                               knn_scores(unit, labels, queries, CLASSES, chunk_size=100), rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("one_torch_thread")
def test_cli_says_when_k_is_more_than_the_bank(one_step_runs, capsys):
    """`cgh knn RUN --k 500` on a 300-image bank silently voted with 300: a note, the line and --json say so."""
    import json

    from cgh.cli import main

    run = str(one_step_runs["cgh"])  # a bank of the 256 synthetic training images of the TINY config
    assert main(["knn", run, "--k", "20", "300", "500", "--json"]) == 0
    captured = capsys.readouterr()
    p = json.loads(captured.out)["protocol"]
    assert p["k"] == [20, 300, 500] and p["k_effective"] == [20, 256, 256] and p["bank_size"] == 256
    note = ("k=300, 500 are more than the 256 labelled images of the memory bank synthetic:train: each votes with "
            "all 256 (k_effective in --json); give --k up to 256")
    assert p["notes"] == [note] and captured.err.count("note: ") == 1 and f"note: {note}" in captured.err
    assert main(["knn", run, "--k", "20", "500"]) == 0
    captured = capsys.readouterr()
    assert "k=500 (all 256) top-1" in captured.out and "k=20 top-1" in captured.out
    assert "note: k=500 is more than the 256 labelled images" in captured.err
    assert "it votes with all 256" in captured.err
    assert main(["knn", run, "--k", "20"]) == 0
    assert "note" not in capsys.readouterr().err
