"""The command line as a process: the installed entry point runs, and a user error is one line on stderr with
exit status 2 and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


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


def test_an_option_between_the_preset_and_the_overrides_in_the_process(tmp_path):
    """The issue's command, `cgh pretrain demo --overwrite out_dir=runs/x optim.epochs=2`, as a process (with
    --print-config, so that nothing trains)."""
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "pretrain", "demo", "--overwrite", "out_dir=runs/x",
                           "optim.epochs=2", "--print-config"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epochs: 2" in proc.stdout and "out_dir: runs/x" in proc.stdout
