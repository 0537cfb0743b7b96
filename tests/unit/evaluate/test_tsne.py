"""t-SNE figures (cgh.evaluate.tsne, ``cgh tsne``): palette, sample selection, the embedding, PNG output and the
command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgh.cli import main
from cgh.evaluate.tsne import palette, select_indices, tsne_embed, tsne_figure
from cgh.model.backbone import ResNet
from tests.helpers import png_size


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
    w, h = png_size(out)
    assert w > 2 * h and 1200 <= w <= 3000 and 400 <= h <= 1200  # three square panels side by side
    with pytest.raises(ValueError, match="index class_names"):
        tsne_figure([("x", rng.standard_normal((5, 2)), np.arange(5))], ["a"], tmp_path / "bad.png", precomputed=True)


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
    w, h = png_size(out)
    assert w > 1.5 * h
    assert main(["tsne", str(paths[0]), *synth, "--classes", "99", "--out", str(out)]) == 2
    assert "--classes" in capsys.readouterr().err
    assert main(["tsne", str(paths[0]), str(paths[1]), "--labels", "A", "--dataset", "synthetic"]) == 2
    assert "one per checkpoint" in capsys.readouterr().err
