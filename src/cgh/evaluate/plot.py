"""kNN accuracy and loss against epoch from runs' ``metrics.jsonl`` (the supplementary's Fig. 2; ``cgh plot``, in
cgh.commands.plot).

A run directory's ``metrics.jsonl`` (written by ``cgh pretrain``, see cgh/train/loop.py) holds one JSON object per line:
``start`` (the banner: method, arch, dataset, steps_per_epoch, ...), ``step``, ``epoch`` (mean loss and terms over the
epoch; ``knn_top1`` on monitor epochs, epoch 0 being the random init) and ``end``. What this module relies on:
  - a resumed run appends a second ``start`` record and may log again epochs it had logged before it was stopped:
    records are keyed by their position in training and the LAST record of a position wins;
  - a record of an interrupted epoch carries the number of completed epochs with a step count between two epoch
    boundaries; it is placed at its fractional epoch (step / steps_per_epoch), so it never replaces the completed
    epoch's record (nor its kNN value), and it is dropped once a later record reaches or passes that point (the
    resumed run re-logs that stretch of training);
  - a truncated last line (a run killed mid-write) and other unreadable lines are skipped and counted.
NOTE (Fig. 2): the authors' monitor uses the projection-MLP embedding (docs/evaluation.md#knn-monitor); ours plots
whatever ``knn_top1`` the run logged (see its config's train.knn_* settings).

Collapse diagnostics (cgh.model.diagnostics): when any run's epoch records carry them (``std_global``, ``ent_global``,
...: the mean over the epoch's logged steps), the figure gets a second row under the kNN and loss panels, on the same
epoch axis: the normalised feature std (about 1 spread, 0 collapsed) and the teacher's relation entropy as a fraction of
ln K (1: a uniform target, no signal), global context solid and hypercolumn dashed, one colour per run as above. A
row in the same PNG rather than a second file, so that a collapse reads directly under the kNN curve it explains and
one command still writes one figure. When no run logged diagnostics, the figure is the single row of kNN and loss.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cgh.errors import DataError

METRICS_FILE = "metrics.jsonl"
# Per-epoch loss terms each method logs (cgh/methods), each with its own line style (drawn with --terms): CGH's
# hyper / csist / nce, ReSSL's relation, MoCo-v2's nce.
TERM_STYLES = {"hyper": "--", "csist": ":", "nce": "-.", "relation": (0, (5, 1))}
TERMS = tuple(TERM_STYLES)
# The diagnostics of cgh.model.diagnostics (is_diagnostic), named here because that module pulls in torch and this one
# must not (tests/unit/evaluate/test_plot.py keeps the two in step). std and ent are drawn; rank and cos are read, not
# drawn.
DIAGNOSTICS = tuple(f"{stat}_{context}" for stat in ("std", "rank", "cos", "ent") for context in ("global", "hyper"))
CONTEXT_STYLES = {"global": "-", "hyper": "--"}
# cgh.model.diagnostics.CRITERIA's thresholds, drawn as reference lines: a std below STD_COLLAPSED in every context, or
# a teacher entropy at or above ENT_UNIFORM with the relation losses at ln K, is what the collapse watch counts
STD_COLLAPSED, ENT_UNIFORM = 0.05, 0.98
_DPI = 150


@dataclass
class RunCurves:
    """The curves of one run. ``knn`` and ``loss`` are lists of (epoch, value) sorted by epoch; ``terms`` maps a loss
    term to its curve, ``diagnostics`` each collapse diagnostic (``DIAGNOSTICS``) it logged. ``resumes`` counts the
    start records after the first; ``skipped_lines`` unreadable lines."""

    path: Path
    name: str
    method: str | None = None
    arch: str | None = None
    dataset: str | None = None
    knn: list[tuple[float, float]] = field(default_factory=list)
    loss: list[tuple[float, float]] = field(default_factory=list)
    terms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    diagnostics: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    resumes: int = 0
    skipped_lines: int = 0
    status: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} ({self.name})" if self.method and self.method != self.name else self.name

    def summary(self) -> dict[str, Any]:
        best = max(self.knn, key=lambda p: p[1]) if self.knn else None
        return {
            "path": str(self.path), "method": self.method, "arch": self.arch, "dataset": self.dataset,
            "epochs": max((e for e, _ in self.loss + self.knn), default=0),
            "knn_points": len(self.knn), "last_knn_top1": self.knn[-1][1] if self.knn else None,
            "best_knn_top1": best[1] if best else None, "best_knn_epoch": best[0] if best else None,
            "last_loss": self.loss[-1][1] if self.loss else None, "resumes": self.resumes,
            "skipped_lines": self.skipped_lines, "status": self.status,
        }


def _metrics_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.is_file():
        raise DataError(f"no {METRICS_FILE} at {p}; expected a run directory written by `cgh pretrain` or the path of "
                        f"its {METRICS_FILE}")
    return p


def _method_from_config(run_dir: Path) -> str | None:
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        return None
    try:
        import yaml

        data = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
        return (data.get("method") or {}).get("name")
    except Exception:  # a damaged config.yaml only costs the label
        return None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_run(path: str | os.PathLike, name: str | None = None) -> RunCurves:
    """Parse a run directory (or its ``metrics.jsonl``) into curves; see the module docstring for the rules."""
    mpath = _metrics_path(path)
    run = RunCurves(path=mpath.parent, name=name or mpath.parent.name)
    points: dict[float, dict[str, Any]] = {}  # position in training (epochs) -> the last epoch record there
    partial: dict[float, int] = {}  # position of an interrupted epoch's record -> its line number
    latest: list[tuple[int, float]] = []  # (line number, position) of every epoch record
    steps_per_epoch: int | None = None
    starts = 0
    with open(mpath, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                run.skipped_lines += 1
                continue
            if not isinstance(rec, dict):
                run.skipped_lines += 1
                continue
            kind = rec.get("kind")
            if kind == "start":
                starts += 1
                run.method = rec.get("method") or run.method
                run.arch = rec.get("arch") or run.arch
                run.dataset = rec.get("dataset") or run.dataset
                spe = rec.get("steps_per_epoch")
                steps_per_epoch = spe if isinstance(spe, int) and spe > 0 else steps_per_epoch
            elif kind == "epoch" and _finite(rec.get("epoch")):
                x = float(rec["epoch"])
                step = rec.get("step")
                if steps_per_epoch and _finite(step) and step != rec["epoch"] * steps_per_epoch:
                    x = step / steps_per_epoch  # an interrupted epoch: between two epoch boundaries
                    partial[x] = lineno
                else:
                    partial.pop(x, None)
                points[x] = rec  # last wins (resumed runs log some epochs twice)
                latest.append((lineno, x))
            elif kind == "end":
                run.status = rec.get("status")
    for x, lineno in partial.items():
        if any(n > lineno and later >= x for n, later in latest):
            del points[x]
    run.resumes = max(0, starts - 1)
    run.method = run.method or _method_from_config(run.path)
    for x in sorted(points):
        rec = points[x]
        if _finite(rec.get("knn_top1")):
            run.knn.append((x, float(rec["knn_top1"])))
        if _finite(rec.get("loss")):
            run.loss.append((x, float(rec["loss"])))
        for term in TERMS:
            if _finite(rec.get(term)):
                run.terms.setdefault(term, []).append((x, float(rec[term])))
        for name in DIAGNOSTICS:  # absent from epochs without a logged step (steps_per_epoch < train.log_every)
            if _finite(rec.get(name)):
                run.diagnostics.setdefault(name, []).append((x, float(rec[name])))
    return run


def plot_curves(runs: list[RunCurves | str | os.PathLike], path: str | os.PathLike, *,
                labels: list[str] | None = None, title: str | None = None, terms: bool = False) -> Path:
    """Write a PNG with two panels, kNN top-1 (%) and loss against epoch, one colour per run, and a second row with
    the collapse diagnostics when any run logged them (module docstring; the figure is ``curves_figure``'s).

    runs: ``RunCurves`` or run directories. labels: legend entries (default: method + run directory name).
    terms: also draw each run's loss terms (hyper, csist, nce, relation) as thinner lines, one style per term.
    A run without kNN records is still drawn in the loss panel (and the kNN panel says which runs had none).
    """
    fig = curves_figure(runs, labels=labels, title=title, terms=terms)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def curves_figure(runs: list[RunCurves | str | os.PathLike], *, labels: list[str] | None = None,
                  title: str | None = None, terms: bool = False):
    """The matplotlib Figure that ``plot_curves`` writes (same arguments, without the path)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state; Figure.savefig renders with Agg
    from matplotlib.ticker import MaxNLocator

    curves = [r if isinstance(r, RunCurves) else read_run(r) for r in runs]
    if not curves:
        raise ValueError("plot_curves needs at least one run")
    if labels is not None and len(labels) != len(curves):
        raise ValueError(f"got {len(labels)} labels for {len(curves)} runs; expected one label per run")
    labels = labels or [c.label for c in curves]
    diagnosed = any(r.diagnostics for r in curves)
    if diagnosed:
        fig = Figure(figsize=(12, 9.0), dpi=_DPI, layout="constrained")
        (ax_knn, ax_loss), (ax_std, ax_ent) = fig.subplots(2, 2, sharex=True)  # one epoch axis for the four
    else:  # no run logged diagnostics: one row
        fig = Figure(figsize=(12, 4.8), dpi=_DPI, layout="constrained")
        ax_knn, ax_loss = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(curves))]
    no_knn = []
    for run, label, colour in zip(curves, labels, colours, strict=True):
        if run.knn:
            xs, ys = zip(*run.knn, strict=True)
            ax_knn.plot(xs, ys, marker="o", markersize=3.5, color=colour, label=label)
        else:
            no_knn.append(label)
        if run.loss:
            xs, ys = zip(*run.loss, strict=True)
            ax_loss.plot(xs, ys, color=colour, label=label, linewidth=1.6, marker="o" if len(xs) == 1 else None)
        if terms:
            for term, pts in run.terms.items():
                xs, ys = zip(*pts, strict=True)
                ax_loss.plot(xs, ys, color=colour, linestyle=TERM_STYLES[term], linewidth=1.0, alpha=0.8,
                             label=f"{label}: {term}", marker="x" if len(xs) == 1 else None)  # a lone point shows
    ax_knn.set(xlabel="epoch", ylabel="kNN top-1 accuracy (%)", title="kNN monitor (top-1, %)")
    ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="loss")
    for ax in (ax_knn, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs; fractional points (interrupted) still drawn
        ax.grid(True, alpha=0.3)
    _legend(ax_knn, ax_knn.get_legend_handles_labels()[0],
            ["no kNN records in: " + ", ".join(no_knn)] if no_knn else [])
    _legend(ax_loss, ax_loss.get_legend_handles_labels()[0],
            [] if any(r.loss for r in curves) else ["no epoch records yet"])
    if diagnosed:
        for ax in (ax_knn, ax_loss):
            ax.set_xlabel("")  # the shared epoch axis is labelled under the bottom row
        _draw_diagnostics(ax_std, ax_ent, curves, labels, colours)
    datasets = sorted({r.dataset.split(" (")[0] for r in curves if r.dataset})
    fig.suptitle(title or "Training progress" + (f" on {', '.join(datasets)}" if datasets else ""))
    return fig


def _legend(ax, handles: list, notes: list[str]) -> None:
    """The panel's legend, its ``notes`` (which runs lack what) as grey entries of their own at its end: a note
    drawn in the panel could lie under the legend, which loc="best" places wherever the curves leave room (it hid
    "no teacher relation target in: mocov2"). A panel without a legend shows its notes in its middle instead."""
    from matplotlib.lines import Line2D

    if not handles:
        if notes:
            ax.text(0.5, 0.5, "\n".join(notes), transform=ax.transAxes, ha="center", va="center", fontsize=8,
                    color="0.35", wrap=True)
        return
    blank = [Line2D([], [], linestyle="none", label=note) for note in notes]  # a label without a line
    legend = ax.legend(handles=[*handles, *blank], fontsize=8, loc="best")
    for text in legend.get_texts()[len(handles):]:
        text.set_color("0.35")


def _draw_diagnostics(ax_std, ax_ent, curves: list[RunCurves], labels: list[str], colours: list[str]) -> None:
    """The diagnostics row: feature std and teacher relation entropy fraction per context, against epoch."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels = {"std": ax_std, "ent": ax_ent}
    drawn: dict[str, list[Line2D]] = {"std": [], "ent": []}  # one legend entry per run drawn in the panel
    contexts: dict[str, set[str]] = {"std": set(), "ent": set()}
    top = {"std": 1.2, "ent": 1.05}
    for run, label, colour in zip(curves, labels, colours, strict=True):
        for stat, ax in panels.items():
            for context, style in CONTEXT_STYLES.items():
                pts = run.diagnostics.get(f"{stat}_{context}")
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, color=colour, linestyle=style, linewidth=1.6 if context == "global" else 1.2,
                        marker="o" if len(xs) == 1 else None)
                top[stat] = max(top[stat], 1.05 * max(ys))
                contexts[stat].add(context)
            if any(f"{stat}_{c}" in run.diagnostics for c in CONTEXT_STYLES):
                drawn[stat].append(Line2D([], [], color=colour, label=label))
    ax_std.axhline(STD_COLLAPSED, color="0.5", linestyle=":", linewidth=1.0)
    ax_ent.axhline(ENT_UNIFORM, color="0.5", linestyle=":", linewidth=1.0)
    refs = {"std": Line2D([], [], color="0.5", linestyle=":", label=f"collapse threshold ({STD_COLLAPSED:g})"),
            "ent": Line2D([], [], color="0.5", linestyle=":", label=f"uniform target, no signal (>= {ENT_UNIFORM:g})")}
    ax_std.set(xlabel="epoch", ylabel="std of the L2-normalised features × √D", ylim=(0, top["std"]),
               title="feature spread (1: spread over the sphere, 0: collapsed)")
    ax_ent.set(xlabel="epoch", ylabel="teacher relation entropy / ln K", ylim=(0, top["ent"]),
               title="teacher target entropy (1: uniform, no signal)")
    missing = [label for run, label in zip(curves, labels, strict=True) if not run.diagnostics]
    no_target = [label for run, label in zip(curves, labels, strict=True)  # MoCo-v2 has no relation target
                 if run.diagnostics and not any(f"ent_{c}" in run.diagnostics for c in CONTEXT_STYLES)]
    notes = {"std": ["no diagnostics in: " + ", ".join(missing)] if missing else [],
             "ent": ["no teacher relation target in: " + ", ".join(no_target)] if no_target else []}
    for stat, ax in panels.items():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        styles = [] if "hyper" not in contexts[stat] else [  # the line styles, when there are two contexts
            Line2D([], [], color="0.2", linestyle=CONTEXT_STYLES[c], label=name)
            for c, name in (("global", "global"), ("hyper", "hypercolumn"))]
        _legend(ax, [*drawn[stat], *styles, refs[stat]] if drawn[stat] else [], notes[stat])
