"""Training curves (cgh.evaluate.plot, ``cgh plot``): reading runs (resumed, truncated), the PNG and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cgh.cli import main
from cgh.errors import DataError
from cgh.evaluate.plot import plot_curves, read_run
from tests.helpers import png_size


def _write_run(d: Path, lines: list) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.jsonl").write_text("".join(x if isinstance(x, str) else json.dumps(x) + "\n" for x in lines))
    return d


def _start(method="cgh", spe=10):
    return {"kind": "start", "method": method, "arch": "resnet18", "dataset": "synthetic:train (200 images)",
            "steps_per_epoch": spe}


def _epoch(e, loss, knn=None, step=None, spe=10, **terms):
    rec = {"kind": "epoch", "epoch": e, "step": e * spe if step is None else step, "loss": loss, **terms}
    if knn is not None:
        rec["knn_top1"] = knn
    return rec


def test_read_run_resumed_duplicates_last_wins(tmp_path):
    run = _write_run(tmp_path / "cgh-run", [
        _start(),
        {"kind": "epoch", "epoch": 0, "step": 0, "knn_top1": 10.0},
        _epoch(1, 5.0, hyper=2.0, csist=2.5, nce=0.5),
        _epoch(2, 4.0, knn=30.0),
        _epoch(3, 3.5),
        _epoch(3, 9.9, step=34),  # interrupted in epoch 4 (3 epochs + 4 steps): drawn at 3.4 until superseded
        _start(),  # resumed from the end-of-epoch-2 checkpoint: epoch 3 is logged again
        _epoch(3, 3.0),
        _epoch(4, 2.5, knn=50.0),
        {"kind": "end", "status": "finished"},
    ])
    r = read_run(run)
    assert r.method == "cgh" and r.resumes == 1 and r.status == "finished" and r.skipped_lines == 0
    assert r.knn == [(0.0, 10.0), (2.0, 30.0), (4.0, 50.0)]
    assert r.loss == [(1.0, 5.0), (2.0, 4.0), (3.0, 3.0), (4.0, 2.5)]  # epoch 3: the later record; 3.4 dropped
    assert r.terms["hyper"] == [(1.0, 2.0)]
    assert r.label == "cgh (cgh-run)"


def test_read_run_keeps_final_partial_epoch_and_skips_truncated_line(tmp_path):
    run = _write_run(tmp_path / "r", [_start("ressl"), _epoch(1, 5.0), _epoch(1, 4.5, step=15),
                                      '{"kind": "epoch", "epo'])
    r = read_run(run / "metrics.jsonl")  # the file itself is accepted too
    assert r.loss == [(1.0, 5.0), (1.5, 4.5)]
    assert r.skipped_lines == 1 and r.knn == []


def test_read_run_method_from_config_and_errors(tmp_path):
    run = _write_run(tmp_path / "r", [_epoch(1, 1.0)])  # no start record: the method comes from config.yaml
    (run / "config.yaml").write_text("method:\n  name: mocov2\n")
    assert read_run(run).method == "mocov2"
    with pytest.raises(DataError, match="metrics.jsonl"):
        read_run(tmp_path / "nothing")


def test_plot_curves_png_without_knn(tmp_path):
    a = _write_run(tmp_path / "a", [_start(), *[_epoch(e, 6 - e, knn=10 * e) for e in range(1, 6)]])
    b = _write_run(tmp_path / "b", [_start("mocov2"), *[_epoch(e, 8 - e, nce=8 - e) for e in range(1, 6)]])
    out = plot_curves([a, b], tmp_path / "curves.png", terms=True)
    w, h = png_size(out)
    assert 1200 <= w <= 2400 and 500 <= h <= 1200
    with pytest.raises(ValueError, match="one label per run"):
        plot_curves([a, b], tmp_path / "x.png", labels=["only one"])


def _diag(std, ent, hyper=None, rank=30.0, cos=0.05):
    """The collapse diagnostics of an epoch record (cgh.model.diagnostics); hyper: (std, ent) of CGH's second
    context."""
    rec = {"std_global": std, "rank_global": rank, "cos_global": cos}
    if ent is not None:
        rec["ent_global"] = ent
    if hyper is not None:
        rec.update({"std_hyper": hyper[0], "rank_hyper": rank, "cos_hyper": cos, "ent_hyper": hyper[1]})
    return rec


def test_plot_curves_diagnostics_row(tmp_path):
    from cgh.evaluate import plot
    from cgh.model.diagnostics import CRITERIA, is_diagnostic

    assert all(is_diagnostic(k) for k in plot.DIAGNOSTICS)  # kept in step with cgh.model.diagnostics
    assert (plot.STD_COLLAPSED, plot.ENT_UNIFORM) == (CRITERIA.std_collapsed, CRITERIA.ent_uniform)
    epochs = range(1, 9)
    cgh = _write_run(tmp_path / "cgh", [_start(), {"kind": "epoch", "epoch": 0, "step": 0, "knn_top1": 12.0}, *[
        _epoch(e, 7 - 0.3 * e, knn=12 + 6 * e,
               **_diag(0.3 + 0.08 * e, 0.95 - 0.06 * e, hyper=(0.2 + 0.1 * e, 0.9 - 0.05 * e))) for e in epochs]])
    ressl = _write_run(tmp_path / "ressl", [_start("ressl"), *[  # drifting to the collapsed fixed point
        _epoch(e, 6.9, knn=20 - e, relation=6.9, **_diag(0.5 / e, min(1.0, 0.7 + 0.05 * e))) for e in epochs]])
    moco = _write_run(tmp_path / "moco", [_start("mocov2"), *[_epoch(e, 8 - e, nce=8 - e, **_diag(0.9, None))
                                                              for e in epochs]])
    old = _write_run(tmp_path / "old", [_start(), *[_epoch(e, 6 - 0.5 * e, knn=10 * e) for e in epochs]])

    r = read_run(cgh)
    assert r.diagnostics["std_global"][0] == (1.0, pytest.approx(0.38)) and len(r.diagnostics["ent_hyper"]) == 8
    assert read_run(old).diagnostics == {} and set(read_run(moco).diagnostics) == {"std_global", "rank_global",
                                                                                   "cos_global"}
    plain = png_size(plot_curves([old], tmp_path / "old.png"))
    assert plain == (1800, 720)  # 12 x 4.8 in at 150 dpi: no diagnostics, no second row
    w, h = png_size(plot_curves([cgh, ressl, moco, old], tmp_path / "diag.png", terms=True))
    assert w == plain[0] and 1.7 * plain[1] < h < 2.1 * plain[1]  # the same figure with a second row
    assert png_size(plot_curves([moco], tmp_path / "moco.png"))[1] == h  # std only: the entropy panel says why


def test_cli_plot(tmp_path, capsys):
    a = _write_run(tmp_path / "cgh-a", [_start(), *[_epoch(e, 6 - e, knn=10 * e) for e in range(1, 4)]])
    b = _write_run(tmp_path / "moco-b", [_start("mocov2"), _epoch(1, 7.0)])
    out = tmp_path / "c.png"
    assert main(["plot", str(a), str(b), "--out", str(out), "--labels", "CGH", "MoCo-v2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(out) and png_size(out)
    runs = {r["label"]: r for r in result["runs"]}
    assert runs["CGH"]["best_knn_top1"] == 30.0 and runs["CGH"]["best_knn_epoch"] == 3.0
    assert runs["MoCo-v2"]["knn_points"] == 0 and runs["MoCo-v2"]["last_loss"] == 7.0
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cgh (cgh-a): 3 epochs, kNN top-1 30.00%" in text and "no kNN records" in text
    assert main(["plot", str(a), "--labels", "x", "y"]) == 2
    assert "one per run" in capsys.readouterr().err


def test_the_legend_never_hides_a_note(tmp_path):
    """`cgh plot cgh moco` drew "no teacher relation target in: mocov2" at the bottom of the entropy panel, where the
    legend (loc="best") could lie over it. A panel's notes are now entries of its legend; a panel without a legend
    shows them in its middle. Checked on the drawn figure: every note is visible and no text overlaps a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from cgh.evaluate.plot import curves_figure

    epochs = range(1, 9)
    # the demo's three runs: with these curves the old layout put the legend over the note (checked on it)
    cgh = _write_run(tmp_path / "cgh", [_start(), *[
        _epoch(e, 7 - 0.3 * e, knn=12 + 6 * e, **_diag(0.5, 0.99, hyper=(0.5, 0.5))) for e in epochs]])
    ressl = _write_run(tmp_path / "ressl", [_start("ressl"), *[
        _epoch(e, 6.9, knn=20 - e, relation=6.9, **_diag(0.5 / e, min(1.0, 0.7 + 0.05 * e))) for e in epochs]])
    moco = _write_run(tmp_path / "moco", [_start("mocov2"), *[_epoch(e, 8 - e, nce=8 - e, **_diag(0.9, None))
                                                              for e in epochs]])
    old = _write_run(tmp_path / "old", [_start("ressl"), *[_epoch(e, 6 - 0.5 * e) for e in epochs]])  # no kNN
    for runs, labels, notes in (
            ([cgh, ressl, moco], ["CGH", "ReSSL", "MoCo-v2"], {"no teacher relation target in: MoCo-v2"}),
            ([cgh, moco, old], None, {"no teacher relation target in: mocov2 (moco)", "no diagnostics in: ressl (old)",
                                      "no kNN records in: mocov2 (moco), ressl (old)"}),
            ([moco], None, {"no teacher relation target in: mocov2 (moco)"})):
        fig = curves_figure(runs, labels=labels)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        shown = set()
        for ax in fig.axes:
            legend = ax.get_legend()
            texts = [t for t in ax.texts if t.get_text()]
            shown |= {t.get_text() for t in texts}
            if legend is not None:
                shown |= {t.get_text() for t in legend.get_texts()}
                box = legend.get_window_extent(renderer)
                assert not any(box.overlaps(t.get_window_extent(renderer)) for t in texts), ax.get_title()
        assert notes <= shown, notes - shown
