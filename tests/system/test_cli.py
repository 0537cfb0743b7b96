"""The command line as a process: the installed entry point runs, a user error is one line on stderr with exit
status 2 and no traceback, and a user's folder of photographs goes from pretraining to kNN and the linear probe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import TINY, break_jpeg, one_error_line, photo_folder


def test_the_installed_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "pretrain" in proc.stdout


@pytest.mark.usefixtures("one_torch_thread")
def test_unknown_key_through_the_cli_process(tmp_path):
    """The real process: exit status 2, one error line on stderr suggesting the nearest key, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "pretrain", "cifar10", "optim.lrr=0.1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: command line: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_folder_of_photographs_as_people_keep_them(tmp_path):
    """The commands of the README's "Your own images", as processes, on real photographs in train/<class>/ and
    val/<class>/ with a truncated JPEG in each: a start stopped by a corrupt file (data.corrupt=error) leaves nothing
    that blocks the same command; pretraining reads train/, the monitor tests on val/; kNN and the linear probe
    report val/ with its five classes, the corrupt files left out and named."""
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(6, 3))
    broken = []
    for split in ("train", "val"):
        path = photos / split / "hopper" / "broken.jpg"
        path.write_bytes((photos / split / "hopper" / "00.jpg").read_bytes())
        broken.append(break_jpeg(path))
    out = tmp_path / "run"

    def cgh(*argv):
        return subprocess.run([sys.executable, "-m", "cgh.cli", *argv], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    pretrain = ["pretrain", "cifar10", *TINY, "data.name=folder", f"data.path={photos}", "optim.batch_size=16",
                "optim.epochs=1", "train.knn_every=1", "train.device=cpu", f"out_dir={out}"]
    failed = cgh(*pretrain, "data.corrupt=error")
    assert failed.returncode == 2
    assert one_error_line(failed.stderr).startswith(f"error: cannot decode image {broken[0]}"), failed.stderr
    started = cgh(*pretrain)
    assert started.returncode == 0, started.stderr
    assert f"note: {out} holds a start that ended before its first checkpoint" in started.stderr
    assert f"  data       folder:train (31 images, 5 classes, {photos / 'train'})" in started.stdout
    assert "  kNN        bank folder:train (31 images, 5 classes), test folder:val (16 images, 5 classes)" in \
        started.stdout
    assert "epoch 1/1" in started.stdout and "kNN top-1" in started.stdout
    ckpt = str(out / "checkpoints" / "last.pt")
    for command in (["knn", "--k", "5"], ["linear", "--epochs", "2"]):
        proc = cgh(command[0], ckpt, *command[1:], "--device", "cpu", "--json")
        assert proc.returncode == 0, proc.stderr
        protocol = json.loads(proc.stdout)["protocol"]
        assert (protocol["train_split"], protocol["test_split"], protocol["num_classes"]) == ("train", "val", 5)
        assert protocol["skipped_files"] == {"folder:train": [broken[0]], "folder:val": [broken[1]]}
        assert f"1 undecodable image of folder:val (data.corrupt=skip; error stops instead): {broken[1]}" in \
            proc.stderr
def test_an_option_between_the_preset_and_the_overrides_in_the_process(tmp_path):
    """The issue's command, `cgh pretrain demo --overwrite out_dir=runs/x optim.epochs=2`, as a process (with
    --print-config, so that nothing trains)."""
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "pretrain", "demo", "--overwrite", "out_dir=runs/x",
                           "optim.epochs=2", "--print-config"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epochs: 2" in proc.stdout and "out_dir: runs/x" in proc.stdout
