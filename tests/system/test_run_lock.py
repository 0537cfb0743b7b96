"""Two jobs on one run directory (issue 22): while a real `cgh pretrain` process runs in it, a second start, the same
command with ``--resume auto``, ``--resume`` and ``--overwrite`` are all refused with an error that names the holder,
and none of them writes there; once the first is SIGKILLed (its lock left behind, stale), ``--resume auto`` takes the
lock over and continues the run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgh.checkpoints.files import load_checkpoint
from cgh.cli import main
from cgh.train.runlock import LOCK_NAME
from tests.helpers import TINY, one_error_line

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

WORKER = Path(__file__).parent / "workers" / "reliability_worker.py"


def test_a_second_job_is_refused_while_the_first_runs_and_continues_once_it_is_dead(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["pretrain", "cifar10", *TINY, "optim.batch_size=32", "optim.epochs=50", "train.device=cpu",
            "train.ckpt_every_steps=1", f"out_dir={run}"]
    env = dict(os.environ, CGH_TEST_THREADS="1", OMP_NUM_THREADS="1")
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, str(WORKER), *argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd=tmp_path)
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / "last.pt").exists():
            assert first.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        holder = f"held by pid {first.pid} on host {socket.gethostname()}, running since "
        for second in (argv, [*argv, "--resume", "auto"], ["pretrain", "--resume", str(run)], [*argv, "--overwrite"]):
            assert main(second) == 2
            err = one_error_line(capsys.readouterr().err)
            assert err.startswith(f"error: run directory {run} is in use by another run: {run / LOCK_NAME} is {holder}")
            assert f"then continue it with `cgh pretrain --resume {run}`" in err
        assert first.poll() is None  # the first goes on, alone
        first.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    records = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by the kill
            pass
    assert [r["pid"] for r in records if r["kind"] == "start"] == [first.pid]  # nothing of the refused ones
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == first.pid  # stale now

    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert main([*argv, "--resume", "auto", f"train.max_steps={step + 1}"]) == 0
    captured = capsys.readouterr()
    assert f"note: {run / LOCK_NAME}: taking over the stale lock of pid {first.pid}" in captured.err
    assert "resumed" in captured.out
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == step + 1
    assert not (run / LOCK_NAME).exists()  # released at the end
