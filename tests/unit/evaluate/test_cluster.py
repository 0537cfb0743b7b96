"""Clustering metrics on hand-computed cases, k-means on separable data, and the ``cgh cluster`` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cgh.evaluate.cluster import clustering_metrics, contingency, hungarian_accuracy, kmeans, l2_normalize
from tests.reference import expected_mi

LN2, LN3 = math.log(2), math.log(3)


def test_permuted_labelling_is_perfect():
    # The same partition under other names: every metric is 1.
    true = [0, 0, 1, 1, 2, 2]
    pred = [2, 2, 0, 0, 1, 1]
    m = clustering_metrics(true, pred)
    for key in ("nmi", "ami", "ari", "acc"):
        assert m[key] == pytest.approx(1.0), key
    assert (m["num_clusters"], m["num_classes"]) == (3, 3)


def test_merge_of_two_classes_hand_computed():
    # Classes 0 and 1 merged into cluster 0; class 2 alone in cluster 1. Contingency (clusters x classes):
    #   [[2, 2, 0],
    #    [0, 0, 2]]
    true = [0, 0, 1, 1, 2, 2]
    pred = [0, 0, 0, 0, 1, 1]
    assert contingency(true, pred).tolist() == [[2, 2, 0], [0, 0, 2]]
    m = clustering_metrics(true, pred)
    # ACC: cluster 0 -> class 0 (2 right), cluster 1 -> class 2 (2 right), class 1 unmatched: 4/6.
    assert m["acc"] == pytest.approx(4 / 6)
    # NMI: H(true) = ln 3; H(pred) = H(2/3, 1/3) = ln 3 - (2/3) ln 2. pred is a function of true, so
    # MI = H(pred) = ln 3 - (2/3) ln 2 = 0.636514. Arithmetic mean of the entropies: (ln 3 + MI) / 2 = 0.867563.
    # NMI = 0.636514 / 0.867563 = 0.733680.
    mi = LN3 - 2 / 3 * LN2
    assert m["nmi"] == pytest.approx(mi / ((LN3 + mi) / 2))
    assert m["nmi"] == pytest.approx(0.733680, abs=1e-6)
    # ARI: sum_ij C(n_ij, 2) = 1 + 1 + 1 = 3; clusters sum_i C(a_i, 2) = C(4,2) + C(2,2) = 7;
    # classes sum_j C(b_j, 2) = 3 * C(2,2) = 3; C(6, 2) = 15. Expected index 7 * 3 / 15 = 1.4; max (7 + 3) / 2 = 5.
    # ARI = (3 - 1.4) / (5 - 1.4) = 1.6 / 3.6 = 4/9.
    assert m["ari"] == pytest.approx(4 / 9)
    # AMI = (MI - E[MI]) / (mean(H) - E[MI]), E[MI] from the hypergeometric model computed above.
    emi = expected_mi(contingency(true, pred))
    assert m["ami"] == pytest.approx((mi - emi) / ((LN3 + mi) / 2 - emi))
    assert 0 < m["ami"] < m["nmi"]


def test_constant_prediction_scores_zero():
    # One cluster for two classes: MI = 0 so NMI = AMI = 0; ARI = 0 (no better than chance); ACC = 2/4.
    m = clustering_metrics([0, 0, 1, 1], [5, 5, 5, 5])
    assert m["nmi"] == pytest.approx(0.0)
    assert m["ami"] == pytest.approx(0.0)
    assert m["ari"] == pytest.approx(0.0)
    assert m["acc"] == pytest.approx(0.5)


def test_hungarian_beats_greedy():
    # Contingency (clusters x classes) [[3, 2], [2, 0]]: greedy takes the 3 and is left with 0 (3/7);
    # the optimal assignment takes cluster 0 -> class 1 (2) and cluster 1 -> class 0 (2): 4/7.
    true = [0, 0, 0, 1, 1, 0, 0]
    pred = [0, 0, 0, 0, 0, 1, 1]
    assert contingency(true, pred).tolist() == [[3, 2], [2, 0]]
    assert hungarian_accuracy(true, pred) == pytest.approx(4 / 7)


def test_more_clusters_than_classes():
    # Class 0 split over clusters 0 (2 samples) and 1 (1 sample); class 1 is cluster 2. Only one cluster can take
    # class 0: 2 + 3 = 5 of 6 right.
    true = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 1, 2, 2, 2]
    assert hungarian_accuracy(true, pred) == pytest.approx(5 / 6)
    # Splitting a class keeps the clusters pure: every cluster is inside one class, so H(true | pred) = 0 and
    # MI = H(true) = ln 2 (two classes of 3). H(pred) = H(2/6, 1/6, 3/6).
    h_pred = -(2 / 6 * math.log(2 / 6) + 1 / 6 * math.log(1 / 6) + 3 / 6 * math.log(3 / 6))
    assert clustering_metrics(true, pred)["nmi"] == pytest.approx(LN2 / ((LN2 + h_pred) / 2))


def test_arbitrary_label_values():
    # Ids need not be 0..K-1 (e.g. ImageNet class 999, or cluster ids from another tool).
    assert hungarian_accuracy(np.array([999, 999, 3]), np.array([-7, -7, 40])) == pytest.approx(1.0)


@pytest.mark.parametrize("true, pred, match", [
    ([0, 1], [0], "same length"),
    ([], [], "0 samples"),
    ([[0, 1]], [[0, 1]], "1-D"),
    ([0.5, 1.0], [0, 1], "integer"),
])
def test_bad_inputs(true, pred, match):
    with pytest.raises(ValueError, match=match):
        clustering_metrics(true, pred)


def test_kmeans_recovers_separable_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16, dtype=np.float32) * 5  # 4 orthogonal directions: well apart after L2 normalisation
    labels = np.repeat(np.arange(4), 25)
    feats = centres[labels] + 0.3 * rng.standard_normal((100, 16)).astype(np.float32)
    pred = kmeans(feats, 4, seed=0)
    assert pred.shape == (100,) and pred.dtype == np.int64
    m = clustering_metrics(labels, pred)
    assert m["acc"] == pytest.approx(1.0) and m["nmi"] == pytest.approx(1.0)
    # Deterministic for a seed.
    assert np.array_equal(pred, kmeans(feats, 4, seed=0))


def test_kmeans_validates():
    feats = np.ones((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        kmeans(feats, 6)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(np.ones(5), 2)
    bad = feats.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans(bad, 2)


def test_l2_normalize_rows():
    x = l2_normalize([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(x, [[0.6, 0.8], [0.0, 0.0]])


# ---- command line ----------------------------------------------------------------------------------------------------


def _tiny_backbone(path):
    import torch

    from cgh.model.backbone import ResNet

    torch.manual_seed(0)
    torch.save({k: v for k, v in ResNet("resnet18", stem="cifar", width=8).state_dict().items()}, path)
    return path


SYNTH = ["--dataset", "synthetic", "--data-option", "synthetic_test_size=120", "--data-option",
         "synthetic_classes=4", "--data-option", "synthetic_image_size=16", "--batch-size", "64"]


def test_cli_cluster_json(tmp_path, capsys):
    from cgh.cli import main

    ckpt = _tiny_backbone(tmp_path / "tv.pth")
    assert main(["cluster", str(ckpt), *SYNTH, "--json", "--n-init", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["command"] == "cluster"
    m, p = result["metrics"], result["protocol"]
    for key in ("nmi", "ami", "ari", "acc"):
        assert -100.0 <= m[key] <= 100.0
    assert m["acc"] >= 25.0  # Hungarian accuracy is never below the largest class share (4 balanced classes)
    assert p["clusters"] == [4] and p["features"] == "global" and p["dataset"] == "synthetic"
    assert p["n_init"] == 2 and p["max_iter"] == 20 and p["checkpoint"] == str(ckpt)


def test_cli_cluster_several_counts_and_text(tmp_path, capsys):
    from cgh.cli import main

    ckpt = _tiny_backbone(tmp_path / "tv.pth")
    assert main(["cluster", str(ckpt), *SYNTH, "--clusters", "2", "8", "--features", "hypercolumn"]) == 0
    line = capsys.readouterr().out
    assert "k=2:" in line and "k=8:" in line and "NMI" in line and "hypercolumn" in line
    assert main(["cluster", str(ckpt), *SYNTH, "--clusters", "1000"]) == 2
    assert "--clusters" in capsys.readouterr().err
    assert main(["cluster", str(ckpt), *SYNTH, "--features", "hypercolumn_head"]) == 2
    assert "hypercolumn head" in capsys.readouterr().err
