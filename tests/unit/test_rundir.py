"""The run directory (cgh.train.rundir) after a start that failed before its first checkpoint: the same command runs
again (a note says it starts afresh), --resume auto starts, --resume says what to do; a directory holding anything of
the user's, or a start still running, is never replaced."""

from __future__ import annotations

import json
import os
import socket

import pytest

from cgh.cli import main
from cgh.train.rundir import unfinished_start
from tests.helpers import TINY, break_jpeg, files_of, one_error_line, photo_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def failed_start(tmp_path, capsys):
    """`cgh pretrain` on photographs with a corrupt JPEG in val/ and data.corrupt=error: the epoch-0 kNN monitor
    stops the start after its run directory was made, before any checkpoint. Returns (argv without the corrupt
    setting, run directory)."""
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(4, 2))
    break_jpeg(photos / "val" / "hopper" / "01.jpg")
    out = tmp_path / "run"
    argv = ["pretrain", "cifar10", *TINY, "data.name=folder", f"data.path={photos}", "optim.batch_size=16",
            "optim.epochs=1", "train.knn_every=1", "train.device=cpu", f"out_dir={out}"]
    assert main([*argv, "data.corrupt=error"]) == 2
    assert "cannot decode image" in one_error_line(capsys.readouterr().err)
    assert not (out / "checkpoints" / "last.pt").exists() and (out / "config.yaml").exists()
    return argv, out


def test_the_same_command_runs_again_after_a_start_that_failed(failed_start, capsys):
    argv, out = failed_start
    assert unfinished_start(out)
    # --resume: nothing to resume, and the message says how to start (not "already exists ... pass --resume")
    assert main(["pretrain", "--resume", str(out)]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "ended before its first checkpoint); start it afresh with the same command without --resume" in err
    assert main([*argv, "data.corrupt=error"]) == 2  # the same command fails the same way: nothing blocks it
    capsys.readouterr()
    assert main(argv) == 0  # data.corrupt=skip (the default): the monitor leaves the file out
    captured = capsys.readouterr()
    assert (f"note: {out} holds a start that ended before its first checkpoint (nothing to resume): starting "
            f"afresh in its place") in captured.err
    assert "done: 1 step in " in captured.out  # not "1 steps"
    starts = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "start"]
    assert len(starts) == 1 and starts[0]["pid"] == os.getpid()  # the failed start's records went with it
    assert not unfinished_start(out)  # it has a checkpoint now: a rerun is refused again
    assert main(argv) == 2 and "already exists and is not empty" in capsys.readouterr().err


def test_resume_auto_starts_over_a_start_that_failed(failed_start, capsys):
    argv, out = failed_start
    assert main([*argv, "--resume", "auto"]) == 0
    assert "starting afresh in its place" in capsys.readouterr().err
    assert (out / "checkpoints" / "last.pt").exists()


def test_nothing_of_the_users_and_no_running_start_is_replaced(failed_start, capsys):
    argv, out = failed_start
    (out / "notes.txt").write_text("mine")  # a file cgh does not write: the directory is not a failed start's
    before = files_of(out)
    assert main(argv) == 2 and "already exists and is not empty" in one_error_line(capsys.readouterr().err)
    assert files_of(out) == before
    (out / "notes.txt").unlink()
    # a start still running on this machine (its "start" record names a live process): refused, untouched
    live = {"kind": "start", "pid": os.getppid(), "host": socket.gethostname()}
    (out / "metrics.jsonl").write_text(json.dumps(live) + "\n")
    before = files_of(out)
    assert not unfinished_start(out)
    assert main(argv) == 2 and "already exists and is not empty" in one_error_line(capsys.readouterr().err)
    assert files_of(out) == before
    (out / "metrics.jsonl").write_text(json.dumps({**live, "host": "elsewhere"}) + "\n")
    assert unfinished_start(out)  # another machine's start cannot be asked: its records are a failed start's
