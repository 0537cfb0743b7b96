"""A checkpoint written by the pre-redesign cgh resumes with today's code and ends where the old code ended.

tests/data/checkpoints/cgh-0.1.0-mid-epoch.pt was written by cgh 0.1.0 (the commit named in the .json beside it) for
the tests' tiny CGH run of two epochs of four steps, stopped by ``train.max_steps=5`` inside its second epoch, so it
carries the epoch's partial loss sums as well as the model, queues, optimiser and RNG states.
cgh-0.1.0-mid-epoch.json holds that run's overrides, the end metrics and last epoch record of the same run left
uninterrupted, and the last epoch record the old code itself wrote when it resumed the file (all made by
make_fixture.py there, with one torch thread). Resuming the file must finish the run with the same losses as the
uninterrupted run and the same record, diagnostics included, as the old code's resume: a redesign that changed the
checkpoint's meaning (a renamed state, a dropped partial sum, an RNG consumed differently) would show here.
(The diagnostics of the two old records differ: a run stopped by ``train.max_steps`` logs, and so diagnoses, the
step it stops at, step 5, and those diagnostics are part of the epoch's partial sums; the uninterrupted run with
``train.log_every=2`` did not diagnose step 5.)
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import cgh
from cgh.checkpoints.files import load_checkpoint
from cgh.config import load_config
from cgh.train import pretrain
from tests.helpers import CHECKPOINT_FIXTURES, TINY

CHECKPOINT = CHECKPOINT_FIXTURES / "cgh-0.1.0-mid-epoch.pt"
EXPECTED = json.loads((CHECKPOINT_FIXTURES / "cgh-0.1.0-mid-epoch.json").read_text())
# The loss terms and collapse diagnostics of the last epoch record that must come out the same.
TERMS = ("loss", "hyper", "csist", "w_nce")
DIAGNOSTICS = ("std_", "rank_", "cos_", "ent_")


def test_the_fixture_is_the_tiny_cgh_run_stopped_mid_epoch():
    """What the comparison below relies on: the tests' TINY config (unchanged since the fixture was made), CGH, two
    epochs of four steps, a checkpoint at step 5, i.e. one step into the second epoch."""
    assert EXPECTED["overrides"][:len(TINY)] == TINY
    ckpt = load_checkpoint(CHECKPOINT)
    assert (ckpt["method"], ckpt["step"], ckpt["epoch"], ckpt["epoch_step"]) == ("cgh", 5, 1, 1)
    assert EXPECTED["stopped_at_step"] == 5 and EXPECTED["end_step"] == 8
    assert EXPECTED["last_epoch_record"]["epoch"] == 2 and EXPECTED["last_epoch_record"]["step"] == 8


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The fixture copied into a fresh run directory as its last.pt and resumed to the end, under one torch thread
    (the fixture was written with one: the sums depend on it). Returns (result, last epoch record, run dir)."""
    run = tmp_path_factory.mktemp("compat") / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(CHECKPOINT, run / "checkpoints" / "last.pt")
    cfg = load_config("cifar10", [*EXPECTED["overrides"], f"out_dir={run}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = pretrain(cfg, resume=True)
    finally:
        torch.set_num_threads(threads)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return result, [r for r in records if r["kind"] == "epoch"][-1], run


# The fixture's numbers were recorded on another machine (an AMD EPYC). Measured on an Intel Xeon: identical with one
# thread, within 8e-8 with two (another order of summation, as another CPU's kernels would give); rel 1e-5 keeps a
# margin of 100x over that after the three resumed steps.
def test_old_mid_epoch_checkpoint_resumes_to_the_recorded_end(resumed):
    result, last, run = resumed
    assert (result.status, result.step, result.epoch) == ("finished", EXPECTED["end_step"], 2)
    assert result.metrics["loss"] == pytest.approx(EXPECTED["end_metrics"]["loss"], rel=1e-5)
    expected = EXPECTED["last_epoch_record"]
    assert (last["epoch"], last["step"]) == (expected["epoch"], expected["step"])
    assert last["lr"] == pytest.approx(expected["lr"], rel=1e-5)
    for key in TERMS:  # summed on every step; step 5's part comes from the old checkpoint's partial sums
        assert last[key] == pytest.approx(expected[key], rel=1e-5), key
    assert set(last) >= set(expected)  # every term and diagnostic the old run logged is logged today
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == EXPECTED["end_step"]


def test_old_mid_epoch_checkpoint_resumes_with_the_recorded_diagnostics(resumed):
    _, last, _ = resumed
    expected = EXPECTED["resumed_last_epoch_record"]  # what the old code's own resume of the file wrote
    diagnostics = [k for k in expected if k.startswith(DIAGNOSTICS)]
    assert len(diagnostics) == 8  # std, rank, cos, ent of the global and the hypercolumn context
    for key in diagnostics:
        assert last[key] == pytest.approx(expected[key], rel=1e-5), key
    for key in (*TERMS, "lr", "epoch", "step"):
        assert last[key] == pytest.approx(expected[key], rel=1e-5), key


def test_old_checkpoint_loads_as_a_backbone():
    model = cgh.load_backbone(CHECKPOINT)
    assert model.info["format"] == "cgh-checkpoint" and model.info["method"] == "cgh" and model.info["step"] == 5
    assert (model.arch, model.info["stem"], model.info["width"]) == ("resnet18", "cifar", 8)
    assert model.hyper_head is not None and not model.training
    # The student's weights, as the old file holds them.
    student = {k.removeprefix("student.backbone."): v for k, v in load_checkpoint(CHECKPOINT)["model"].items()
               if k.startswith("student.backbone.")}
    state = model.backbone.state_dict()
    assert student and set(student) == set(state)
    assert all(torch.equal(state[k], v) for k, v in student.items())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.features(x, "global").shape == (2, 64)  # an 8-wide ResNet-18: 8 * 8 channels
        assert model.hypercolumn_head_features(x).shape == (2, 64)
