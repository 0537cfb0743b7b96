"""The quick demo end to end, as a user runs it: ``cgh demo --quick`` in a fresh directory, then its files."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys

import pytest
from PIL import Image

from cgh.demo import QUICK
from tests.helpers import REPO

METRICS = ("knn_top1", "linear_global", "linear_hypercolumn", "nmi", "cluster_acc")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "demo", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_demo_prints_its_steps_and_table(quick_demo):
    out, printed = quick_demo
    for step in ("[1/5] pretraining CGH", "[2/5] evaluating", "[3/5] figures", "[4/5] training cost",
                 "[5/5] writing the report"):
        assert step in printed
    lines = printed.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("encoder"))):]
    assert [x.split()[0] for x in table[1:6]] == ["random", "CGH", "ReSSL", "MoCo-v2", "raw"]
    assert f"report: {out / 'report.md'}" in printed


def test_quick_demo_results_are_complete_and_finite(quick_demo):
    out, _ = quick_demo
    summary = json.loads((out / "results.json").read_text())
    assert summary["quick"] is True and summary["methods"] == ["cgh", "ressl", "mocov2"]
    assert set(summary["results"]) == {"random", "cgh", "ressl", "mocov2"}
    for name, result in summary["results"].items():
        for metric in METRICS:
            value = result[metric]
            assert math.isfinite(value) and 0 <= value <= 100, (name, metric, value)
    assert 0 <= summary["raw_pixel_knn"] <= 100
    cost = summary["cost"]
    assert cost["rows"] and all(math.isfinite(r["relative"]) and r["relative"] > 0 for r in cost["rows"])
    assert math.isfinite(cost["cgh_over_ressl"]) and cost["cgh_over_ressl"] > 0
    assert all(math.isfinite(t) and t >= 0 for t in summary["timings"].values())
    # the quick overrides are what ran
    assert summary["config"]["data"]["synthetic_size"] == int(QUICK[0].split("=")[1])


def test_quick_demo_runs_are_complete(quick_demo):
    out, _ = quick_demo
    for method in ("cgh", "ressl", "mocov2"):
        run = out / "runs" / method
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        knn = [r["knn_top1"] for r in epochs if r["kind"] == "epoch"]
        assert len(knn) == 4 and all(math.isfinite(x) for x in knn)  # epoch 0 (random init) and 3 epochs


def test_quick_demo_report_and_figures(quick_demo):
    out, _ = quick_demo
    summary = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "quick variant" in md and "![kNN top-1 and loss against epoch](curves.png)" in md
    assert '<img src="curves.png"' in page and '<img src="tsne.png"' in page and "<table>" in page
    # the ranking says whether CGH beats the best baseline, as the numbers come out
    r = summary["results"]
    best = max(r["ressl"]["knn_top1"], r["mocov2"]["knn_top1"])
    assert ("CGH leads the best baseline" if r["cgh"]["knn_top1"] > best else "CGH does **not** beat") in md
    assert f"{r['cgh']['knn_top1']:.1f}" in md and f"{r['random']['knn_top1']:.1f}" in md
    # what the long-budget study found at this scale, and at what scale the paper's claim was made
    assert "At this scale CGH does not beat ReSSL" in md and "benchmarks/long_budget.md" in md and "ImageNet" in md
    for name, min_size in (("curves.png", (800, 300)), ("tsne.png", (1200, 300))):
        with Image.open(out / name) as img:
            img.load()
            assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1], (name, img.size)
            assert sum(n > 0 for n in img.convert("L").histogram()) > 20  # drawn, not blank


def test_quick_demo_neighbour_grids(quick_demo):
    """One nearest-neighbour grid per method, on the same 6 test queries, in the report and results.json."""
    import numpy as np

    from cgh.demo import NEIGHBOUR_K, NEIGHBOUR_QUERIES
    from cgh.evaluate.neighbors import CORRECT_COLOUR, WRONG_COLOUR, grid_pixels

    out, _ = quick_demo
    grids = json.loads((out / "results.json").read_text())["neighbours"]
    assert (grids["k"], grids["num_queries"], grids["features"]) == (NEIGHBOUR_K, NEIGHBOUR_QUERIES, "global") == (
        8, 6, "global")
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Nearest neighbours" in md and "**Precision@8**" in md
    assert list(grids["methods"]) == ["cgh", "ressl", "mocov2"]
    for method, label in (("cgh", "CGH"), ("ressl", "ReSSL"), ("mocov2", "MoCo-v2")):
        g = grids["methods"][method]
        assert g["file"] == f"neighbors_{method}.png"
        assert f"![{label}: nearest neighbours](neighbors_{method}.png)" in md
        assert f'<img src="neighbors_{method}.png"' in page
        assert [q["index"] for q in g["queries"]] == grids["query_index"]  # the same queries for every method
        hits = [n == q["label"] for q in g["queries"] for n in q["neighbour_labels"]]
        assert len(hits) == 6 * 8 and g["precision_at_k"] == pytest.approx(100 * sum(hits) / len(hits))
        assert f"{label} {g['precision_at_k']:.1f}%" in md
        with Image.open(out / g["file"]) as img:
            assert img.size == grid_pixels(6, 8)
            rgb = np.asarray(img.convert("RGB")).astype(int)
        framed = [int((np.abs(rgb - np.array([round(c * 255) for c in colour])).max(-1) <= 3).sum())
                  for colour in (CORRECT_COLOUR, WRONG_COLOUR)]
        # a frame is a ring of about 1200 pixels of its colour: one per neighbour, green where it is right
        assert framed[0] >= 800 * sum(hits) and framed[1] >= 800 * (len(hits) - sum(hits)), framed


def test_demo_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "demo", "--quick", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "already exists and is not empty" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_demo_with_two_seeds_on_digits(tmp_path):
    """``--seeds 2 --dataset digits`` with one method for one epoch (about 35 s on 2 cores): mean ± std printed,
    each seed's numbers kept next to their means, one run per seed, the digits' own sizes in the report."""
    out = tmp_path / "report"
    # one OpenMP thread: on the shared 2-core machines a run like this took 17 s with it and 57-105 s with two
    # (measured on the synthetic set)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "demo", "--quick", "--seeds", "2", "--methods", "cgh",
                           "--no-cost", "--dataset", "digits", "--out", str(out), "optim.epochs=1"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mean ± std over 2 seeds (0, 1)" in proc.stdout and "[1/4] pretraining CGH, seed 1 (2/2)" in proc.stdout
    lines = proc.stdout.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("encoder"))):]
    assert [x.split()[0] for x in table[1:4]] == ["random", "CGH", "raw"] and "±" in table[2]

    summary = json.loads((out / "results.json").read_text())
    by_seed = summary["results_by_seed"]
    assert summary["seeds"] == [0, 1] and set(by_seed) == {"0", "1"}
    assert summary["data"] == {"name": "digits", "train": 1300, "test": 497, "classes": 10, "image_size": 32}
    for name in ("random", "cgh"):
        for metric in METRICS:
            values = [by_seed[s][name][metric] for s in ("0", "1")]
            assert all(math.isfinite(v) and 0 <= v <= 100 for v in values), (name, metric, values)
            assert summary["results"][name][metric] == pytest.approx(statistics.fmean(values))
            assert summary["std"][name][metric] == pytest.approx(statistics.stdev(values))
        gain = summary["gain_over_random"]["cgh"]["knn_top1"]
        assert gain["min"] == pytest.approx(min(by_seed[s]["cgh"]["knn_top1"] - by_seed[s]["random"]["knn_top1"]
                                                for s in ("0", "1")))
    assert by_seed["0"]["random"] != by_seed["1"]["random"]  # each seed its own initial weights

    for s in (0, 1):
        assert (out / "runs" / f"cgh-s{s}" / "checkpoints" / "last.pt").is_file()
    assert not (out / "runs" / "cgh").exists()
    md = (out / "report.md").read_text()
    r, sd = summary["results"]["cgh"], summary["std"]["cgh"]
    assert "mean ± sample std over 2 seeds" in md and f"{r['knn_top1']:.1f} ± {sd['knn_top1']:.1f}" in md
    assert "### Per seed" in md and "| encoder | seed 0 | seed 1 |" in md
    # the setup is the digits' (1300 // 64 = 20 steps per epoch), not the synthetic set's
    assert "(20 steps of 64 images) on scikit-learn's handwritten digits" in md
    assert "1300 training images and 497 test images" in md and "synthetic" not in md.split("## Configuration")[0]
