"""Learning: a short CPU pretraining of each method on the synthetic data lifts kNN accuracy well above the same
encoder at random initialisation.

Each run is the first STEPS steps (5 of 20 epochs) of the demo preset: an eighth-width ResNet-18 (CIFAR stem) on the
demo's 4096 synthetic training images, seed 0, about 40 s per method on 2 cores. ``pretrain`` logs the kNN monitor
at epoch 0 (the random initialisation, before any step) and at the stop, on the 1000 test images (k = 20, T = 0.07;
one image is 0.1 point). The test requires MARGIN points of gain.

Measured on the 2-core development machine (kNN top-1 at random init -> after STEPS steps, in %):
CGH 17.2 -> 23.2 (+6.0), ReSSL 17.2 -> 22.3 (+5.1), MoCo-v2 17.2 -> 31.0 (+13.8). The margin sits below the
smallest of these and far above what no learning gives: CGH with optim.lr=1e-9 (only BN statistics move) ends at
13.9 (-3.3). It is a property of this seed, not of every seed: with seed 1, in the same budget, ReSSL's kNN falls
below its random init (22.9 -> 18.8) while CGH's rises (22.9 -> 34.0); the README's "Quick start" discusses how
slowly and unevenly the weak-teacher methods learn on this data.
"""

from __future__ import annotations

import json
import math

import pytest

from cgh.config import load_config
from cgh.train import pretrain

STEPS = 320
MARGIN = 4.0  # percentage points of kNN top-1 above the random-init encoder


def knn_by_epoch(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["epoch"]: r["knn_top1"] for r in map(json.loads, lines) if r["kind"] == "epoch" and "knn_top1" in r}


@pytest.mark.parametrize("method", ["cgh", "ressl", "mocov2"])
def test_short_pretraining_lifts_knn_above_random_init(tmp_path, method):
    out = tmp_path / method
    teacher_view = "strong" if method == "mocov2" else "weak"
    cfg = load_config("demo", [f"method.name={method}", f"aug.teacher_view={teacher_view}", "seed=0",
                               f"train.max_steps={STEPS}", "train.knn_every=5", "train.progress=false",
                               f"out_dir={out}"])
    epochs = STEPS // (cfg.data.synthetic_size // cfg.optim.batch_size)
    result = pretrain(cfg)
    assert result.status == "max_steps" and result.step == STEPS and result.epoch == epochs
    knn = knn_by_epoch(out)
    assert set(knn) == {0, epochs} and all(math.isfinite(x) for x in knn.values())
    gain = knn[epochs] - knn[0]
    assert gain >= MARGIN, f"{method}: kNN {knn[0]:.1f}% at random init, {knn[epochs]:.1f}% after {STEPS} steps"
