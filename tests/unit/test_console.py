"""What a pretraining run prints (cgh.train.console): the warning of a run that ends inside its InfoNCE warm-up, the
epoch line's times. The banner and lines of real runs: tests/unit/test_train.py."""

import pytest

from cgh.config import load_config
from cgh.train.console import duration, elapsed_and_eta, epoch_line, warmup_warning


def test_a_run_ending_inside_the_warm_up_says_how_much_is_still_infonce():
    """The issue's case: the demo recipe (600-step warm-up floor) stopped at 120 steps ended at w_nce 0.80."""
    cfg = load_config("demo", ["train.max_steps=120"])
    start = warmup_warning(cfg, 600, 120, 64)
    assert start == ("warning: this run ends at step 120 (train.max_steps = 120), before its InfoNCE warm-up of 600 "
                     "steps does: its last loss will be 80% InfoNCE and 20% cgh's relation loss (w_nce 0.80); for "
                     "cgh's own loss train at least 600 steps (train.max_steps=600) or shorten the warm-up "
                     "(method.loss_warmup_min_steps, method.loss_warmup_epochs)")
    end = warmup_warning(cfg, 600, 120, 64, ended=True)
    assert end.startswith("warning: the run ended at step 120, inside its InfoNCE warm-up of 600 steps: its last loss "
                          "was 80% InfoNCE") and "\n" not in end


def test_the_epochs_to_set_when_the_epochs_are_too_few():
    cfg = load_config("demo", ["optim.epochs=2", "method.name=ressl"])
    warning = warmup_warning(cfg, 600, 128, 64)
    assert "(optim.epochs = 2 x 64 steps)" in warning and "(optim.epochs=10)" in warning
    assert "79% InfoNCE and 21% ressl's relation loss (w_nce 0.79)" in warning


@pytest.mark.parametrize("warmup, end", [(600, 600), (600, 1280), (0, 10)])
def test_no_warning_when_the_warm_up_ends_in_time_or_there_is_none(warmup, end):
    assert warmup_warning(load_config("demo"), warmup, end, 64) is None


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (42.4, "42s"), (187, "3m07s"), (3599.6, "1h00m"),
                                            (7500, "2h05m")])
def test_durations_read_as_a_person_writes_them(seconds, shown):
    assert duration(seconds) == shown


def test_the_epoch_line_ends_with_elapsed_time_and_eta():
    elapsed, eta = elapsed_and_eta((100.0, 20), 160.0, 80, 200)  # 60 steps in 60 s, 120 to go
    assert (elapsed, eta) == (60.0, 120.0)
    assert elapsed_and_eta((100.0, 20), 100.0, 20, 200) == (0.0, None)  # no step yet: no pace to go by
    record = {"epoch": 2, "loss": 1.5, "img_per_s": 700.0}
    assert epoch_line(record, 10, (), (elapsed, eta)).endswith("700 img/s  elapsed 1m00s, ETA 2m00s")
