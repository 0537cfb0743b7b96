"""The collapse diagnostics on real runs: a collapse provoked on real data is flagged once, and stops the run when
asked (``train.stop_on_collapse``: a checkpoint, exit status 3). That they stay quiet on healthy runs is checked by
tests/system/test_learning.py, whose runs must log no collapse.

The collapse is the one the relational study starts from (benchmarks/relational_study.md): CGH on scikit-learn's
digits with the demo recipe as it was before the study (an InfoNCE warm-up of one epoch, 20 steps, and the authors'
hypercolumn temperatures). Its relation loss reaches ln K within about 120 steps; measured: the warning fires at
step 130 with log_every 5 (first collapsed logged step 120).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from cgh.config import load_config
from cgh.train import EXIT_COLLAPSED, pretrain
from tests.helpers import REPO

# the demo recipe before the study, on the digits
OLD_DEMO_ON_DIGITS = ["data.name=digits", "method.queue_size=512", "optim.epochs=40", "method.loss_warmup_min_steps=0",
                      "method.ressl_warmup=false", "method.temp_teacher_hyper=0.08", "train.knn_every=0",
                      "train.log_every=5", "train.max_steps=150", "train.progress=false", "seed=0"]


def step_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "step"]


def test_provoked_collapse_is_reported_once_and_the_run_goes_on(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "run"
    result = pretrain(load_config("demo", [*OLD_DEMO_ON_DIGITS, f"out_dir={out}"]))
    assert result.status == "max_steps" and result.step == 150
    err = capsys.readouterr().err
    assert err.count("warning: the features look collapsed") == 1, err
    assert "relation loss" in err and f"ln K = {math.log(512):.4f}" in err and "loss_warmup_min_steps" in err
    assert "Set train.stop_on_collapse=true to stop such a run" in err
    flagged = [r["step"] for r in step_records(out) if r.get("collapse")]
    assert len(flagged) == 1 and flagged[0] <= 140
    before = [r for r in step_records(out) if r["step"] < flagged[0] - 10]
    assert before[0]["std_global"] > 0.3  # spread at first: the warning is about what happened, not the start


def test_stop_on_collapse_writes_a_checkpoint_and_exits_3(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "pretrain", "demo", *OLD_DEMO_ON_DIGITS,
                           "train.stop_on_collapse=true", f"out_dir={out}"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == EXIT_COLLAPSED == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "warning: the features look collapsed" in proc.stderr and "Stopping (train.stop_on_collapse)" in proc.stderr
    assert "because the features collapsed" in proc.stdout and (out / "checkpoints" / "last.pt").is_file()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    end = records[-1]
    assert end["kind"] == "end" and end["status"] == "collapsed" and end["step"] < 150
