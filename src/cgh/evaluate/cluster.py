"""k-means on frozen features, scored against the labels with NMI, AMI, ARI and Hungarian accuracy.

docs/evaluation.md#clustering (the authors' ``eval_clustering.py``): L2-normalised pooled backbone features, k-means
with 20 iterations and 5 restarts (faiss ``niter``/``nredo``), one cluster per class by default, NMI / AMI / ACC
printed. We differ on purpose:
- scikit-learn's ``KMeans`` instead of faiss on GPU (faiss is not a dependency). Like faiss, it keeps the restart with
  the lowest inertia. faiss also caps the training set at 1000 points per centroid; we always use every point.
- ``max_iter`` defaults to the authors' 20. faiss always runs ``niter`` Lloyd steps; sklearn may stop sooner once the
  centres no longer move (``tol``), where further steps would change next to nothing.
- several ``--clusters`` counts are clustered independently (flat k-means per count). The authors' comma-separated
  counts build a hierarchy scored against WordNet super-classes (``--use_super_class``), which we do not ship.
- no halving of rows with a norm above 1.5: the authors' fix for their all-reduce double count, which
  ``extract_features`` does not have.
- the metric code is ours: the authors' ``utils/metric.py`` is missing from their repository
(docs/method.md#quirk-eval-scripts). ARI is
  printed too (they computed but did not print it).

The metric functions are pure functions over label arrays, so they can score any clustering. The command is
cgh.commands.cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The authors' faiss settings (docs/evaluation.md#clustering): niter 20, nredo 5.
DEFAULT_MAX_ITER = 20
DEFAULT_N_INIT = 5


def _as_labels(labels: Any, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels (N,), got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr


def _check_pair(labels_true: Any, labels_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(labels_true, "labels_true"), _as_labels(labels_pred, "labels_pred")
    if t.shape != p.shape:
        raise ValueError(f"labels_true and labels_pred must have the same length, got {t.shape[0]} and {p.shape[0]}")
    if t.size == 0:
        raise ValueError("cannot score a clustering of 0 samples; expected at least 1 label")
    return t, p


def contingency(labels_true: Any, labels_pred: Any) -> np.ndarray:
    """Counts (n_clusters, n_classes): entry [i, j] = samples put in the i-th cluster whose class is the j-th.

    Clusters and classes are numbered by their sorted distinct values, so any integer ids work (e.g. -1 or 1000).
    """
    t, p = _check_pair(labels_true, labels_pred)
    classes, t_idx = np.unique(t, return_inverse=True)
    clusters, p_idx = np.unique(p, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (p_idx, t_idx), 1)
    return table


def hungarian_accuracy(labels_true: Any, labels_pred: Any) -> float:
    """Accuracy in [0, 1] of the best one-to-one mapping of clusters to classes (Hungarian algorithm).

    The mapping maximises the number of samples whose cluster maps to their class (scipy's ``linear_sum_assignment``
    on the contingency table). The table may be rectangular: with more clusters than classes the extra clusters map to
    no class and all their samples count as errors; with fewer, the unmatched classes are all errors. (The common
    ``cluster_acc`` pads the table to a square with zeros, which gives the same value.)
    """
    from scipy.optimize import linear_sum_assignment

    table = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def clustering_metrics(labels_true: Any, labels_pred: Any) -> dict[str, float]:
    """``{"nmi", "ami", "ari", "acc"}``, each in [0, 1] (ARI and AMI can dip below 0 for worse-than-chance).

    NMI and AMI use scikit-learn's default arithmetic-mean normalisation; ``acc`` is :func:`hungarian_accuracy`.
    Also ``num_clusters`` and ``num_classes``: the distinct values seen, for the report.
    """
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    t, p = _check_pair(labels_true, labels_pred)
    return {
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ami": float(adjusted_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
        "acc": hungarian_accuracy(t, p),
        "num_clusters": int(np.unique(p).size),
        "num_classes": int(np.unique(t).size),
    }


def l2_normalize(feats: Any, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    x = np.asarray(feats, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def kmeans(feats: Any, n_clusters: int, *, n_init: int = DEFAULT_N_INIT, max_iter: int = DEFAULT_MAX_ITER,
           seed: int = 0, normalize: bool = True) -> np.ndarray:
    """Cluster ids (N,) int64 of k-means on the rows of ``feats`` (N, D), L2-normalised first
    (docs/evaluation.md#clustering).

    ``n_init`` restarts from k-means++ seeds; the run with the lowest inertia wins (faiss ``nredo``).
    """
    from sklearn.cluster import KMeans

    x = l2_normalize(feats) if normalize else np.asarray(feats, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {x.shape}")
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"the number of clusters must be in [1, {x.shape[0]}] (the number of samples), "
                         f"got {n_clusters}")
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"n_init and max_iter must be >= 1, got {n_init} and {max_iter}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values; expected finite features")
    km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def cluster_and_score(feats: Any, labels: Any, n_clusters: int, **kmeans_kw) -> dict[str, float]:
    """k-means on ``feats`` then :func:`clustering_metrics` against ``labels``."""
    return clustering_metrics(labels, kmeans(feats, n_clusters, **kmeans_kw))
