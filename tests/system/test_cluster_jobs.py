"""Cluster jobs that survive their time limit: one command line that can be requeued as it is.

``cgh pretrain ... --resume auto`` (``train.auto_resume=true``) resumes when the run directory holds a checkpoint and
starts otherwise; SIGUSR1 (what SLURM sends before the limit with ``--signal=USR1@90``) writes a checkpoint and exits
with status 75, "requeue me". Real processes (tests/system/workers/reliability_worker.py: ``cgh.cli.main`` with
fault hooks), one torch thread, compared bit for bit with an uninterrupted in-process run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cgh.checkpoints.files import load_checkpoint
from cgh.config import load_config
from cgh.train.loop import EXIT_REQUEUE, pretrain
from tests.helpers import TINY

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "workers" / "reliability_worker.py"
TIMEOUT = 600
EPOCHS = 2  # 256 synthetic images / batch 32: 8 steps an epoch


def command(out_dir: Path) -> list[str]:
    """The one command line a job script runs every time it is (re)started."""
    return ["pretrain", "cifar10", *TINY, "optim.batch_size=32", f"optim.epochs={EPOCHS}", "train.device=cpu",
            "train.ckpt_every_steps=2", f"out_dir={out_dir}", "--resume", "auto"]


def run_worker(tmp: Path, name: str, args: list[str], **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CGH_TEST_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env_extra)
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, env=env, cwd=tmp,
                          timeout=TIMEOUT)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config("cifar10", [*TINY, "optim.batch_size=32", f"optim.epochs={EPOCHS}", "train.device=cpu",
                                      "train.ckpt_every_steps=2", f"out_dir={out}"])
        pretrain(cfg)
    finally:
        torch.set_num_threads(threads)
    return load_checkpoint(out / "checkpoints" / "last.pt")


def test_the_same_command_line_killed_and_run_again_ends_where_an_uninterrupted_run_ends(tmp_path, uninterrupted):
    run = tmp_path / "run"
    first = run_worker(tmp_path, "first", command(run))  # no checkpoint yet: starts
    assert first.returncode == 0, first.stderr[-2000:]
    assert "resumed" not in first.stdout
    # again from scratch, killed in the middle of its 5th checkpoint write: the 4th survives
    again = tmp_path / "again"
    killed = run_worker(tmp_path, "killed", command(again), CGH_TEST_KILL_IN_SAVE="5:0.5")
    assert killed.returncode == -signal.SIGKILL
    survived = load_checkpoint(again / "checkpoints" / "last.pt")["step"]
    assert 0 < survived < 2 * 8
    requeued = run_worker(tmp_path, "requeued", command(again))  # the same command line, unchanged
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert "resumed    from" in requeued.stdout and f"step {survived}" in requeued.stdout
    for ckpt in (load_checkpoint(run / "checkpoints" / "last.pt"), load_checkpoint(again / "checkpoints" / "last.pt")):
        assert ckpt["step"] == uninterrupted["step"] == 2 * 8
        assert ckpt["model"].keys() == uninterrupted["model"].keys()
        assert all(torch.equal(ckpt["model"][k], v) for k, v in uninterrupted["model"].items())


def test_auto_resume_of_a_finished_run_does_nothing_more(tmp_path):
    run = tmp_path / "run"
    assert run_worker(tmp_path, "first", command(run)).returncode == 0
    before = load_checkpoint(run / "checkpoints" / "last.pt")
    second = run_worker(tmp_path, "second", command(run))
    assert second.returncode == 0, second.stderr[-2000:]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == before["step"]


def test_auto_resume_needs_a_run_directory(tmp_path):
    args = [a for a in command(tmp_path / "x") if not a.startswith("out_dir=")]
    p = run_worker(tmp_path, "no_dir", args)
    assert p.returncode == 2 and "--resume auto (train.auto_resume) needs a fixed run directory" in p.stderr


def test_sigusr1_writes_a_checkpoint_and_exits_requeue_me(tmp_path):
    run = tmp_path / "run"
    args = [*command(run)[:-3], "optim.epochs=50", "train.ckpt_every_steps=0", f"out_dir={run}"]
    env = dict(os.environ, CGH_TEST_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        p = subprocess.Popen([sys.executable, str(WORKER), *args], stdout=out, stderr=err, env=env, cwd=tmp_path)
        deadline = time.time() + TIMEOUT
        metrics = run / "metrics.jsonl"
        while time.time() < deadline and not (metrics.exists() and '"kind": "step"' in metrics.read_text()):
            time.sleep(0.2)
        p.send_signal(signal.SIGUSR1)
        code = p.wait(timeout=TIMEOUT)
    printed = (tmp_path / "out.txt").read_text()
    assert code == EXIT_REQUEUE == 75, (tmp_path / "err.txt").read_text()[-2000:]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 0 < ckpt["step"] < 50 * 8
    assert "stopped by SIGUSR1" in printed and "requeue" in printed
    # and the requeued job continues from it
    again = run_worker(tmp_path, "again", [*args, "train.max_steps=" + str(ckpt["step"] + 2), "--resume", "auto"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == ckpt["step"] + 2
