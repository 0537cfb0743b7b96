"""A t-SNE picture of chosen classes, one panel per checkpoint (the supplementary's Fig. 3; ``cgh tsne``, in
cgh.commands.tsne).

Fig. 3 shows the training set of Tiny-ImageNet's first 20 classes for MoCo-v2, ReSSL and CGH side by side. Here:
``cgh tsne moco.pt ressl.pt cgh.pt --labels MoCo-v2 ReSSL CGH`` takes the first 20 classes (or ``--classes``) of the
evaluation train split, at most ``--per-class`` images of each, extracts each checkpoint's features on the SAME
images, and embeds each panel separately:
  - features are L2-normalised (the geometry kNN and clustering use), then reduced to 50 dimensions with PCA (the usual
    speed-up, e.g. the t-SNE paper's own setting, and scikit-learn's advice), then scikit-learn's Barnes-Hut TSNE
    (perplexity 30, PCA initialisation, ``seed``);
  - colours come from matplotlib's qualitative ``tab20`` reordered so that the first 10 classes get its 10 saturated
    hues and the next 10 their light partners (adjacent classes never share a hue); beyond 20 classes markers vary.
The dataset comes from the first checkpoint's training config unless ``--dataset`` is given (as every evaluation
command); the other checkpoints are evaluated on exactly the same images.
NOTE: the supplementary does not give its t-SNE settings; these are scikit-learn's defaults plus the PCA step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_NUM_CLASSES = 20  # Fig. 3: "the first 20 classes"
DEFAULT_PER_CLASS = 500  # all of a Tiny-ImageNet class's training images (500 each); lower it for speed
PCA_DIM = 50
# Up to this many points the exact O(N^2) gradient is used: at this size it is as fast as Barnes-Hut, and Barnes-Hut's
# per-iteration OpenMP overhead dominates on small sets (measured on a loaded 2-core machine: 200 points took 58 s
# with Barnes-Hut and 2.4 s exact; 500 points 5.4 s and 5.9 s).
EXACT_MAX_POINTS = 500
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_PANEL_INCHES = 5.0
_DPI = 130


def palette(n: int) -> list[tuple[tuple[float, ...], str]]:
    """(colour, marker) for ``n`` classes: tab20's dark hues, then its light ones, then repeat with other markers."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    order = [tab20[i] for i in range(0, 20, 2)] + [tab20[i] for i in range(1, 20, 2)]
    return [(order[i % 20], _MARKERS[(i // 20) % len(_MARKERS)]) for i in range(n)]


def select_indices(labels: Any, classes: Sequence[int], per_class: int | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of the samples whose label is in ``classes``, at most ``per_class`` of each (a seeded random
    subset when a class has more). ValueError for a class with no sample."""
    y = np.asarray(labels)
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be a positive integer or None, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        if idx.size == 0:
            raise ValueError(f"class {c} has no sample; expected class ids present in the labels "
                             f"(0..{int(y.max()) if y.size else -1})")
        if per_class is not None and idx.size > per_class:
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def tsne_embed(feats: Any, *, perplexity: float = 30.0, seed: int = 0, pca_dim: int | None = PCA_DIM,
               normalize: bool = True, method: str = "auto") -> np.ndarray:
    """2-D t-SNE coordinates (N, 2) of features (N, D): L2-normalise, PCA to ``pca_dim`` (when D is larger), TSNE.

    perplexity is capped at (N - 1) / 3 so that small sets still embed (scikit-learn requires perplexity < N).
    method: "barnes_hut", "exact", or "auto" = exact up to ``EXACT_MAX_POINTS`` points, else Barnes-Hut.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(feats, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"t-SNE needs features of shape (N, D) with N >= 4, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values; expected finite features")
    if perplexity <= 0:
        raise ValueError(f"perplexity must be positive, got {perplexity}")
    if method not in ("auto", "exact", "barnes_hut"):
        raise ValueError(f"method must be 'auto', 'exact' or 'barnes_hut', got {method!r}")
    if method == "auto":
        method = "exact" if x.shape[0] <= EXACT_MAX_POINTS else "barnes_hut"
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if pca_dim and x.shape[1] > pca_dim and x.shape[0] > pca_dim:
        x = PCA(n_components=pca_dim, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (x.shape[0] - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, method=method)
    return tsne.fit_transform(x).astype(np.float32)


def tsne_figure(panels: Sequence[tuple[str, Any, Any]], class_names: Sequence[str], path: str | os.PathLike, *,
                title: str | None = None, precomputed: bool = False, perplexity: float = 30.0, seed: int = 0,
                pca_dim: int | None = PCA_DIM, normalize: bool = True, method: str = "auto",
                point_size: float | None = None) -> Path:
    """Write a PNG with one t-SNE panel per ``(title, feats, labels)``, side by side, and one legend of classes.

    feats: (N, D) features, or (N, 2) coordinates with ``precomputed=True``. labels: (N,) ids indexing
    ``class_names`` (colours follow the class id, so a class has the same colour in every panel).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state; Figure.savefig renders with Agg
    from matplotlib.lines import Line2D

    if not panels:
        raise ValueError("tsne_figure needs at least one panel")
    embedded = []
    for name, feats, labels in panels:
        y = np.asarray(labels)
        xy = np.asarray(feats, dtype=np.float32) if precomputed else tsne_embed(
            feats, perplexity=perplexity, seed=seed, pca_dim=pca_dim, normalize=normalize, method=method)
        if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] != y.shape[0]:
            raise ValueError(f"panel {name!r}: expected coordinates (N, 2) and labels (N,), got {xy.shape} and "
                             f"{y.shape}")
        if y.size and (y.min() < 0 or y.max() >= len(class_names)):
            raise ValueError(f"panel {name!r}: labels must index class_names (0..{len(class_names) - 1}), got "
                             f"{y.min()}..{y.max()}")
        embedded.append((name, xy, y))
    present = sorted({int(c) for _, _, y in embedded for c in np.unique(y)})
    styles = palette(len(class_names))
    n = len(embedded)
    legend_cols = min(len(present), 10 if n >= 3 else 5)
    legend_rows = -(-len(present) // max(1, legend_cols))
    fig = Figure(figsize=(_PANEL_INCHES * n + 0.2, _PANEL_INCHES + 0.6 + 0.28 * legend_rows), dpi=_DPI,
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    size = point_size or float(np.clip(6000 / max(1, max(len(y) for _, _, y in embedded)), 2, 30))
    for ax, (name, xy, y) in zip(axes, embedded, strict=True):
        for c in present:  # one scatter per class, in class order, so overlaps are drawn the same way in every panel
            m = y == c
            colour, marker = styles[c]
            ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colour, marker=marker, linewidths=0, alpha=0.85)
        ax.set_title(name, fontsize=11)
        ax.set_xticks([])  # t-SNE coordinates carry no units; only the grouping matters
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    handles = [Line2D([], [], linestyle="", marker=styles[c][1], markersize=7, color=styles[c][0],
                      label=str(class_names[c])) for c in present]
    fig.legend(handles=handles, loc="outside lower center", ncol=legend_cols, fontsize=8.5, frameon=False,
               handletextpad=0.2, columnspacing=1.2)
    if title:
        fig.suptitle(title, fontsize=12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
