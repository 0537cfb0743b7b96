"""t-SNE figures (``cgh tsne``) and training curves (``cgh plot``): functions, PNG output and the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgh.backbone import ResNet
from cgh.cli import main
from cgh.errors import DataError
from cgh.evaluate.plot import plot_curves, read_run
from cgh.evaluate.tsne import palette, select_indices, tsne_embed, tsne_figure


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes the whole file: a truncated PNG fails here
        assert im.format == "PNG"
        return im.size


# ---- t-SNE -----------------------------------------------------------------------------------------------------------


def test_palette_twenty_distinct_colours():
    styles = palette(25)
    assert len({c for c, _ in styles[:20]}) == 20  # the first 20 classes: 20 different colours
    assert styles[0][0] != styles[1][0] and styles[20][1] != styles[0][1]  # past 20: same colours, other marker
    # Neighbouring class ids never get tab20's light/dark pair of one hue (they are 10 apart instead).
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    assert styles[0][0] == tab20[0] and styles[1][0] == tab20[2] and styles[10][0] == tab20[1]


def test_select_indices():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    assert select_indices(labels, [0, 2]).tolist() == [0, 2, 3, 5, 6, 8, 9]
    idx = select_indices(labels, [0, 1], per_class=2, seed=3)
    assert len(idx) == 4 and sorted(labels[idx].tolist()) == [0, 0, 1, 1]
    assert np.array_equal(idx, select_indices(labels, [0, 1], per_class=2, seed=3))  # seeded
    with pytest.raises(ValueError, match="class 7 has no sample"):
        select_indices(labels, [7])


def test_tsne_embed_separates_and_is_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    feats = np.eye(3, 80)[y] * 4 + 0.2 * rng.standard_normal((60, 80))  # 80-d: the PCA step runs (80 > 50)
    xy = tsne_embed(feats, seed=0)
    assert xy.shape == (60, 2) and xy.dtype == np.float32
    assert np.allclose(xy, tsne_embed(feats, seed=0))
    # Each point's nearest neighbour in the embedding is of its own class.
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(60) * 1e9
    assert (y[d.argmin(1)] == y).mean() == 1.0
    with pytest.raises(ValueError, match="N >= 4"):
        tsne_embed(feats[:3])


def test_tsne_figure_png(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    panels = [(f"method {i}\nglobal features, epoch 5", rng.standard_normal((40, 2)), y) for i in range(3)]
    out = tsne_figure(panels, ["cat", "dog", "frog", "ship"], tmp_path / "sub" / "t.png", title="t-SNE test",
                      precomputed=True)
    w, h = _png_size(out)
    assert w > 2 * h and 1200 <= w <= 3000 and 400 <= h <= 1200  # three square panels side by side
    with pytest.raises(ValueError, match="index class_names"):
        tsne_figure([("x", rng.standard_normal((5, 2)), np.arange(5))], ["a"], tmp_path / "bad.png", precomputed=True)


# ---- curves ----------------------------------------------------------------------------------------------------------


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
    w, h = _png_size(out)
    assert 1200 <= w <= 2400 and 500 <= h <= 1200
    with pytest.raises(ValueError, match="one label per run"):
        plot_curves([a, b], tmp_path / "x.png", labels=["only one"])



def _diag(std, ent, hyper=None, rank=30.0, cos=0.05):
    """The collapse diagnostics of an epoch record (cgh.diagnostics); hyper: (std, ent) of CGH's second context."""
    rec = {"std_global": std, "rank_global": rank, "cos_global": cos}
    if ent is not None:
        rec["ent_global"] = ent
    if hyper is not None:
        rec.update({"std_hyper": hyper[0], "rank_hyper": rank, "cos_hyper": cos, "ent_hyper": hyper[1]})
    return rec


def test_plot_curves_diagnostics_row(tmp_path):
    from cgh.diagnostics import STD_COLLAPSED, is_diagnostic
    from cgh.evaluate import plot

    assert all(is_diagnostic(k) for k in plot.DIAGNOSTICS) and plot.STD_COLLAPSED == STD_COLLAPSED  # kept in step
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
    plain = _png_size(plot_curves([old], tmp_path / "old.png"))
    assert plain == (1800, 720)  # 12 x 4.8 in at 150 dpi: no diagnostics, no second row
    w, h = _png_size(plot_curves([cgh, ressl, moco, old], tmp_path / "diag.png", terms=True))
    assert w == plain[0] and 1.7 * plain[1] < h < 2.1 * plain[1]  # the same figure with a second row
    assert _png_size(plot_curves([moco], tmp_path / "moco.png"))[1] == h  # std only: the entropy panel says why


def test_cli_plot(tmp_path, capsys):
    a = _write_run(tmp_path / "cgh-a", [_start(), *[_epoch(e, 6 - e, knn=10 * e) for e in range(1, 4)]])
    b = _write_run(tmp_path / "moco-b", [_start("mocov2"), _epoch(1, 7.0)])
    out = tmp_path / "c.png"
    assert main(["plot", str(a), str(b), "--out", str(out), "--labels", "CGH", "MoCo-v2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(out) and _png_size(out)
    runs = {r["label"]: r for r in result["runs"]}
    assert runs["CGH"]["best_knn_top1"] == 30.0 and runs["CGH"]["best_knn_epoch"] == 3.0
    assert runs["MoCo-v2"]["knn_points"] == 0 and runs["MoCo-v2"]["last_loss"] == 7.0
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cgh (cgh-a): 3 epochs, kNN top-1 30.00%" in text and "no kNN records" in text
    assert main(["plot", str(a), "--labels", "x", "y"]) == 2
    assert "one per run" in capsys.readouterr().err


# ---- cgh tsne --------------------------------------------------------------------------------------------------------


def test_cli_tsne_two_checkpoints(tmp_path, capsys):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"m{seed}.pth")
        torch.save(ResNet("resnet18", stem="cifar", width=8).state_dict(), paths[-1])
    out = tmp_path / "tsne.png"
    synth = ["--dataset", "synthetic", "--data-option", "synthetic_size=120", "--data-option", "synthetic_classes=6",
             "--data-option", "synthetic_image_size=16"]
    assert main(["tsne", str(paths[0]), str(paths[1]), "--labels", "A", "B", *synth, "--classes", "0", "2", "5",
                 "--per-class", "8", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    p = result["protocol"]
    assert result["command"] == "tsne" and result["metrics"]["num_images"] == 24
    assert p["classes"] == [0, 2, 5] and len(p["class_names"]) == 3 and p["features"] == "global"
    assert [x["label"] for x in p["panels"]] == ["A", "B"] and p["panels"][0]["feature_dim"] == 64
    w, h = _png_size(out)
    assert w > 1.5 * h
    assert main(["tsne", str(paths[0]), *synth, "--classes", "99", "--out", str(out)]) == 2
    assert "--classes" in capsys.readouterr().err
    assert main(["tsne", str(paths[0]), str(paths[1]), "--labels", "A", "--dataset", "synthetic"]) == 2
    assert "one per checkpoint" in capsys.readouterr().err
