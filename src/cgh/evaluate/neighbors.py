"""Nearest neighbours in the memory bank, and the picture of them that SSL papers show: a grid of query images, each
followed by its k most similar bank images (``cgh neighbors``, in cgh.commands.neighbors; the demo report's grids).

    select_queries(n, num, seed)                          a seeded sample of query rows
    nearest_neighbours(bank, bank_labels, queries, ...)   the k most cosine-similar bank rows of each query
    display_images(source, indices, image_size)           uint8 images as the evaluation transform crops them
    neighbours_figure(result, query_source, bank_source, path, ...)   the PNG grid
    grid_pixels(num_queries, k)                           its size in pixels

Similarity is the cosine that the kNN classifier votes with, found by the same chunked search
(``cgh.evaluate.knn._neighbours``: the bank is not copied), so a grid shows the first k of the neighbours that
``cgh knn`` counts. Precision@k is the share, in percent, of the Q x k neighbours whose label is their query's.
In the figure each neighbour is framed green when its label is the query's and red otherwise; the query's class
(its name when the dataset names its classes, else the label number) is in the left margin, each neighbour's class
and similarity under it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgh.augment import EvalTransform
from cgh.data import FileSource
from cgh.data.decode import eval_resize, resize_center_crop, to_uint8_chw
from cgh.evaluate.knn import _neighbours

# Frame colours (RGB in [0, 1]): a neighbour with the query's label, one with another label, the query itself.
CORRECT_COLOUR = (0.0, 0.62, 0.0)
WRONG_COLOUR = (0.86, 0.0, 0.0)
QUERY_COLOUR = (0.2, 0.2, 0.2)
FRAME_POINTS = 3.5  # frame line width; at 100 dpi about 5 px, half of it over the image's edge
# Layout in inches, multiples of 1/4 so that at 100 dpi every size is a whole number of pixels (grid_pixels).
_DPI = 100
_CELL = 1.0  # an image
_LABEL = 1.25  # left margin: the query's class
_GAP = 0.5  # between the query and its first neighbour
_SPACE = 0.25  # between neighbours
_RIGHT = 0.25
_TITLE = 0.75
_HEADER = 0.25  # column titles above the first row
_CAPTION = 0.25  # class and similarity under each image
_ROW_GAP = 0.25
_MIN_WIDTH = 6.0  # room for the title when k is small
_CAPTION_CHARS = 14  # a neighbour's class name under it
_MARGIN_CHARS = 14  # the query's, in the left margin


@dataclass
class Neighbours:
    """The k nearest bank images of each query, most similar first."""

    query_index: np.ndarray  # (Q,) int64: rows of the query source
    query_labels: np.ndarray  # (Q,) int64
    index: np.ndarray  # (Q, k) int64: rows of the bank source
    labels: np.ndarray  # (Q, k) int64: their labels
    similarity: np.ndarray  # (Q, k) float32: their cosine similarity to the query

    @property
    def k(self) -> int:
        return int(self.index.shape[1])

    @property
    def correct(self) -> np.ndarray:
        """(Q, k) bool: the neighbour has its query's label."""
        return self.labels == self.query_labels[:, None]

    @property
    def precision(self) -> float:
        """Precision@k in percent: the share of the Q x k neighbours with their query's label (NaN for Q = 0)."""
        return 100.0 * float(self.correct.mean()) if self.correct.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: precision@k, k and, per query, its row, label and neighbours (rows, labels, similarities)."""
        return {"precision_at_k": self.precision, "k": self.k,
                "queries": [{"index": int(self.query_index[q]), "label": int(self.query_labels[q]),
                             "neighbours": self.index[q].tolist(), "neighbour_labels": self.labels[q].tolist(),
                             "similarity": [round(float(s), 6) for s in self.similarity[q]]}
                            for q in range(len(self.query_index))]}


def select_queries(n: int, num: int, seed: int = 0) -> np.ndarray:
    """``num`` distinct rows of ``n``, drawn with ``seed``, sorted: the same seed gives the same queries (the demo
    shows every method the same images)."""
    if not 1 <= num <= n:
        raise ValueError(f"cannot draw {num} queries from {n} images; expected 1 <= num <= {n}")
    return np.sort(np.random.default_rng(seed).choice(n, size=num, replace=False)).astype(np.int64)


@torch.no_grad()
def nearest_neighbours(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                       query_labels: torch.Tensor, k: int = 8, *, query_index=None, bank_index=None,
                       chunk_size: int = 256) -> Neighbours:
    """The ``k`` most cosine-similar rows of ``bank`` (N, D) for each row of ``queries`` (Q, D); features need not be
    normalised. bank_labels (N,), query_labels (Q,): int64. query_index (Q,) / bank_index (N,): the rows' indices in
    their sources, reported instead of the positions (e.g. the labelled rows of a bank with unlabelled images
    removed); default: the positions. ValueError for k outside [1, N] or mismatched shapes."""
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"expected bank (N, D) and queries (Q, D), got {tuple(bank.shape)}, {tuple(queries.shape)}")
    n, q = bank.shape[0], queries.shape[0]
    if bank_labels.shape != (n,) or query_labels.shape != (q,):
        raise ValueError(f"expected bank_labels ({n},) and query_labels ({q},), got {tuple(bank_labels.shape)}, "
                         f"{tuple(query_labels.shape)}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} neighbours asked for, but the bank has {n} images; expected 1 <= k <= {n}")
    sims, idx = [], []
    for _, top_sim, top_idx in _neighbours(bank, queries, k, chunk_size):  # (n, k) each, most similar first
        sims.append(top_sim.float().cpu())
        idx.append(top_idx.cpu())
    top_sim = torch.cat(sims) if sims else torch.empty(0, k)
    top_idx = torch.cat(idx) if idx else torch.empty(0, k, dtype=torch.int64)
    rows = np.arange(n) if bank_index is None else np.asarray(bank_index, dtype=np.int64)
    query_rows = np.arange(q) if query_index is None else np.asarray(query_index, dtype=np.int64)
    if rows.shape != (n,) or query_rows.shape != (q,):
        raise ValueError(f"expected bank_index ({n},) and query_index ({q},), got {rows.shape}, {query_rows.shape}")
    return Neighbours(query_rows, query_labels.cpu().numpy().astype(np.int64), rows[top_idx.numpy()],
                      bank_labels.cpu()[top_idx].numpy().astype(np.int64), top_sim.numpy())


def display_images(source, indices, image_size: int) -> torch.Tensor:
    """Images ``indices`` of ``source`` as uint8 (n, 3, S, S), S = ``image_size``, cropped as the test transform crops
    them (docs/method.md#test-transforms): an ArraySource's stored pixels (resized and centre-cropped on the fly when
    they are not S x S, as ``EvalTransform`` does), a FileSource's files decoded, resized to ``eval_resize(S)`` and
    centre-cropped, as the evaluation loader does."""
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if isinstance(source, FileSource):
        short = eval_resize(image_size)
        if not idx:
            return torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
        return torch.stack([to_uint8_chw(resize_center_crop(source.load(i), short, image_size)) for i in idx])
    images = source.images[idx]  # (n, 3, H, W) uint8
    if tuple(images.shape[-2:]) == (image_size, image_size):
        return images
    unit = EvalTransform(image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(images)  # (n, 3, S, S) in [0, 1]
    return unit.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def grid_pixels(num_queries: int, k: int) -> tuple[int, int]:
    """(width, height) in pixels of ``neighbours_figure``'s PNG for ``num_queries`` rows of ``k`` neighbours."""
    width, height = _figure_inches(num_queries, k)
    return round(width * _DPI), round(height * _DPI)


def _figure_inches(rows: int, k: int) -> tuple[float, float]:
    width = _LABEL + _CELL + _GAP + k * _CELL + (k - 1) * _SPACE + _RIGHT
    return max(width, _MIN_WIDTH), _TITLE + _HEADER + rows * (_CELL + _CAPTION) + (rows - 1) * _ROW_GAP + _CAPTION


def _name(label: int, class_names) -> str:
    if 0 <= label < len(class_names):
        return str(class_names[label])
    return f"label {label}"


def _short(text: str, chars: int = _CAPTION_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def neighbours_figure(result: Neighbours, query_source, bank_source, path: str | os.PathLike, *, image_size: int,
                      class_names=None, title: str | None = None) -> Path:
    """Write the grid of ``result`` as a PNG at ``path`` (parent folders created; ``grid_pixels`` in size) and return
    its path: one row per query, the query then its k neighbours, most similar first; images from
    ``display_images`` of the query and bank sources. class_names: default the query source's (else the bank's);
    labels outside them are shown as numbers. title: the first title line (the second gives precision@k)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state; Figure.savefig renders with Agg

    rows, k = len(result.query_index), result.k
    if rows == 0:
        raise ValueError("neighbours_figure needs at least one query")
    names = list(class_names if class_names is not None else (query_source.classes or bank_source.classes))
    queries = display_images(query_source, result.query_index, image_size)  # (Q, 3, S, S)
    neighbours = display_images(bank_source, result.index.reshape(-1), image_size).view(rows, k, 3, image_size,
                                                                                       image_size)
    width, height = _figure_inches(rows, k)
    fig = Figure(figsize=(width, height), dpi=_DPI)

    def cell(left: float, top: float, image: torch.Tensor, colour) -> Any:
        """An axes of _CELL inches whose top-left corner is (left, top) inches from the figure's top-left."""
        ax = fig.add_axes((left / width, 1 - (top + _CELL) / height, _CELL / width, _CELL / height))
        # nearest when enlarging: a 32-px image is shown as the pixels the network saw
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest" if image_size < _CELL * _DPI else
                  "antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(FRAME_POINTS)
        return ax

    def text(x: float, y: float, s: str, **kw) -> None:  # (x, y) in inches from the top-left
        fig.text(x / width, 1 - y / height, s, **kw)

    first = _LABEL + _CELL + _GAP  # left edge of neighbour 1
    top0 = _TITLE + _HEADER
    text(_LABEL + _CELL / 2, top0 - 0.05, "query", ha="center", va="bottom", fontsize=8)
    for j in range(k):
        text(first + j * (_CELL + _SPACE) + _CELL / 2, top0 - 0.05, f"neighbour {j + 1}", ha="center", va="bottom",
             fontsize=8)
    correct = result.correct
    for r in range(rows):
        top = top0 + r * (_CELL + _CAPTION + _ROW_GAP)
        label = int(result.query_labels[r])
        cell(_LABEL, top, queries[r], QUERY_COLOUR)
        text(_LABEL - 0.1, top + _CELL / 2, _short(_name(label, names), _MARGIN_CHARS), ha="right", va="center",
             fontsize=8.5, fontweight="bold")
        text(_LABEL + _CELL / 2, top + _CELL + 0.05, f"#{int(result.query_index[r])}", ha="center", va="top",
             fontsize=7, color=QUERY_COLOUR)
        for j in range(k):
            colour = CORRECT_COLOUR if correct[r, j] else WRONG_COLOUR
            left = first + j * (_CELL + _SPACE)
            cell(left, top, neighbours[r, j], colour)
            caption = f"{_short(_name(int(result.labels[r, j]), names))} {result.similarity[r, j]:.3f}"
            text(left + _CELL / 2, top + _CELL + 0.05, caption, ha="center", va="top", fontsize=7, color=colour)
    lines = [title or f"{rows} queries and their {k} nearest neighbours (cosine)",
             f"precision@{k}: {result.precision:.1f}% of the {rows * k} neighbours have their query's label "
             f"(green frame; red: another label)"]
    text(width / 2, 0.12, lines[0], ha="center", va="top", fontsize=10)
    text(width / 2, 0.42, lines[1], ha="center", va="top", fontsize=9)
    path = Path(os.path.expanduser(str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path
