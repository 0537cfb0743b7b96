"""TensorBoard and W&B receive exactly what metrics.jsonl holds (cgh.train.loggers), and a resumed run continues the
same curves without logging a step twice."""

from __future__ import annotations

import json
import sys
import types

import pytest

from cgh.train import pretrain
from cgh.train.loggers import scalars
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def records(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def expected_curves(run) -> dict[str, dict[int, float]]:
    curves: dict[str, dict[int, float]] = {}
    for kind in ("step", "epoch"):
        for r in records(run, kind):
            for tag, value in scalars(r).items():
                curves.setdefault(tag, {})[r["step"]] = value
    return curves


def tensorboard_curves(run) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_are_the_numeric_values_of_a_record():
    step = {"kind": "step", "epoch": 0, "step": 3, "lr": 0.1, "loss": 2.5, "collapse": True, "nan": float("nan")}
    assert scalars(step) == {"step/lr": 0.1, "step/loss": 2.5}
    assert scalars({"kind": "epoch", "epoch": 2, "step": 8, "knn_top1": 40.0}) == {"epoch/knn_top1": 40.0,
                                                                                   "epoch/epoch": 2.0}


def test_tensorboard_scalars_equal_the_metrics_log(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'cgh[tensorboard]')")
    run = tmp_path / "run"
    pretrain(tiny_config(run, "optim.epochs=2", "train.knn_every=1", "train.tensorboard=true"))
    tb, want = tensorboard_curves(run), expected_curves(run)
    assert {"step/loss", "step/lr", "step/csist", "step/std_global", "epoch/loss", "epoch/knn_top1"} <= set(want)
    assert set(tb) == set(want)
    for tag, values in want.items():
        got = dict(tb[tag])
        assert len(got) == len(tb[tag]), f"{tag}: a step logged twice"
        assert got.keys() == values.keys(), tag
        assert all(got[s] == pytest.approx(v, rel=1e-6, abs=1e-7) for s, v in values.items()), tag  # float32 there


def test_a_resumed_run_continues_the_same_tensorboard_curves(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    run = tmp_path / "run"
    over = ["optim.epochs=2", "train.tensorboard=true"]
    pretrain(tiny_config(run, *over, "train.max_steps=4"))  # a checkpoint at step 4
    saved = (run / "checkpoints" / "last.pt").read_bytes()
    pretrain(tiny_config(run, *over, "train.max_steps=6"), resume=True)  # steps 5 and 6 logged ...
    (run / "checkpoints" / "last.pt").write_bytes(saved)  # ... and lost, as by a kill before the next checkpoint
    pretrain(tiny_config(run, *over), resume=True)  # steps 5 and 6 run and are logged again
    tb, want = tensorboard_curves(run), expected_curves(run)
    assert [s for s, _ in tb["step/loss"]] == list(range(1, 9))  # every step once, in order
    assert dict(tb["step/loss"]) == pytest.approx(want["step/loss"], rel=1e-6)
    assert [s for s, _ in tb["epoch/loss"]] == [4, 8]


def test_without_tensorboard_a_note_says_how_to_enable_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    run = tmp_path / "run"
    pretrain(tiny_config(run, "optim.epochs=1", "train.tensorboard=true"))
    assert "pip install 'cgh[tensorboard]'" in capsys.readouterr().err
    assert not (run / "tb").exists() and records(run, "epoch")


class FakeWandb(types.ModuleType):
    """The part of wandb's API cgh uses, recording the calls."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        fake = self

        class Run:
            def log(self, values, step):
                fake.logged.append((step, values))

            def finish(self):
                fake.finished += 1

        return Run()


def test_wandb_gets_the_config_and_every_record_and_a_resumed_run_keeps_its_id(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "run"
    over = ["optim.epochs=2", "train.wandb=cgh-test", "train.tensorboard=false", "train.ckpt_every_steps=2"]
    pretrain(tiny_config(run, *over, "train.max_steps=4"))
    pretrain(tiny_config(run, *over), resume=True)
    ids = [kw["id"] for kw in fake.inits]
    assert ids[0] == ids[1] == (run / "wandb_id").read_text().strip() and fake.finished == 2
    assert all(kw["project"] == "cgh-test" and kw["resume"] == "allow" for kw in fake.inits)
    assert fake.inits[0]["config"]["method"]["name"] == "cgh" and fake.inits[0]["dir"] == str(run)
    want = expected_curves(run)
    got: dict[str, dict[int, float]] = {}
    for step, values in fake.logged:
        for tag, v in values.items():
            got.setdefault(tag, {})[step] = v
    assert got == want


def test_wandb_offline_writes_its_run_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb package is not installed (pip install 'cgh[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    pretrain(tiny_config(run, "optim.epochs=1", "train.wandb=cgh-test", "train.tensorboard=false"))
    assert (run / "wandb_id").exists()
    assert list((run / "wandb").glob("offline-run-*"))


def test_without_wandb_a_note_says_how_to_enable_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    run = tmp_path / "run"
    pretrain(tiny_config(run, "optim.epochs=1", "train.tensorboard=false", "train.wandb=cgh-test"))
    assert "pip install 'cgh[wandb]'" in capsys.readouterr().err
    assert not (run / "wandb_id").exists() and records(run, "epoch")
