"""The online linear probe (cgh.train.online_probe): it learns, it never changes training, and it resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgh.checkpoints.files import load_checkpoint
from cgh.train import pretrain
from cgh.train.online_probe import OnlineProbe
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def epoch_records(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]


def test_it_learns_a_linearly_separable_toy():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 4
    labels = torch.randint(0, 4, (2000,), generator=g)
    feats = centres[labels] + torch.randn(2000, 16, generator=g)
    labels[::7] = -1  # unlabelled rows are skipped
    probe = OnlineProbe(16, 4, seed=0)
    for i in range(0, 1600, 64):
        probe.train_step(feats[i:i + 64], labels[i:i + 64])
    test, test_y = feats[1600:], labels[1600:]
    keep = test_y >= 0
    assert probe.accuracy(test[keep], test_y[keep]) > 95.0


def test_it_draws_nothing_from_the_global_rng():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    OnlineProbe(512, 10, seed=0).train_step(torch.randn(8, 512, generator=torch.Generator()), torch.arange(8))
    assert torch.equal(torch.get_rng_state(), before)


def test_training_is_bit_identical_with_the_probe_on_and_off(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    pretrain(tiny_config(on, "optim.epochs=2", "train.online_probe=true"))
    pretrain(tiny_config(off, "optim.epochs=2", "train.online_probe=false"))
    a, b = load_checkpoint(on / "checkpoints" / "last.pt"), load_checkpoint(off / "checkpoints" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "online_probe" in a and "online_probe" not in b
    records = epoch_records(on)
    assert [r["epoch"] for r in records if "probe_top1" in r] == [1, 2]
    assert all(0.0 <= r["probe_top1"] <= 100.0 for r in records if "probe_top1" in r)
    assert not any("probe_top1" in r for r in epoch_records(off))


def test_the_probe_resumes_exactly(tmp_path):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    over = ["optim.epochs=2", "train.online_probe=true", "train.ckpt_every_steps=3"]
    pretrain(tiny_config(straight, *over))
    pretrain(tiny_config(cut, *over, "train.max_steps=3"))  # mid-epoch
    pretrain(tiny_config(cut, *over), resume=True)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["online_probe"]
    b = load_checkpoint(cut / "checkpoints" / "last.pt")["online_probe"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert epoch_records(straight)[-1]["probe_top1"] == epoch_records(cut)[-1]["probe_top1"]


def test_it_turns_itself_off_with_a_note_when_the_split_has_no_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, images=rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8))  # no labels
    run = tmp_path / "run"
    pretrain(tiny_config(run, "data.name=npz", f"data.path={path}", "optim.epochs=1", "train.online_probe=true"))
    assert "online probe is off" in capsys.readouterr().err
    assert not any("probe_top1" in r for r in epoch_records(run))
