"""Counts in what cgh prints (cgh.wording): "done: 1 steps" read as a slip."""

from __future__ import annotations

import pytest

from cgh.wording import counted


@pytest.mark.parametrize("n, noun, text", [
    (1, "step", "1 step"), (0, "step", "0 steps"), (2, "step", "2 steps"), (1, "class", "1 class"),
    (5, "class", "5 classes"), (3, "query", "3 queries"), (2, "day", "2 days"), (1.0, "epoch", "1 epoch"),
    (1.5, "epoch", "1.5 epochs"), (2, "corrupt image", "2 corrupt images"), (1, "undecodable image",
                                                                               "1 undecodable image"),
])
def test_counted(n, noun, text):
    assert counted(n, noun) == text


@pytest.mark.usefixtures("one_torch_thread")
def test_a_one_step_run_says_one_step(tmp_path, capsys):
    """`cgh pretrain ... train.max_steps=1` printed "done: 1 steps"; the banner "1 epochs x 1 steps"."""
    from cgh.cli import main
    from tests.helpers import TINY

    assert main(["pretrain", "cifar10", *TINY, "data.synthetic_size=64", "optim.epochs=1", "model.bn_splits=1",
                 "method.queue_size=64", f"out_dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert "1 epoch x 1 step\n" in out and "\ndone: 1 step in " in out, out
    assert "1 steps" not in out and "1 epochs" not in out
