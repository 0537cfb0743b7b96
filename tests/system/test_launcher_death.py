"""A torchrun job whose launcher is SIGKILLed leaves no worker behind, and its run resumes exactly (issue 22).

A real 2-process ``torchrun`` job (gloo, CPU, tests/system/workers/reliability_worker.py: ``cgh.cli.main`` plus fault
hooks), started as a process group of its own as a shell job is, is SIGKILLed by that group at three moments, one
after another on ONE run directory: during start-up (rank 0 kills its launcher when it opens the data), mid-epoch
(from outside, once this start has logged steps) and in the middle of a checkpoint write (rank 0 kills its launcher
halfway through its second save and would go on writing). torchrun's workers live in sessions of their own, so the
signal never reaches them: each time, both workers must be gone within 15 s and nothing in the run directory may change
after the launcher has died (the contents as the launcher is reaped = once the workers are gone). The same command
with ``--resume auto``, then ``--resume``, continues over the stale lock each kill leaves, and the run ends bit for bit
where an uninterrupted 2-process run ends.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgh.checkpoints.files import load_checkpoint
from cgh.train.runlock import LOCK_NAME, pid_alive
from tests.helpers import REPO, TINY, assert_same_training, read_records

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "workers" / "reliability_worker.py"
TIMEOUT = 600
STEPS_PER_EPOCH, EPOCHS = 8, 1  # 256 synthetic images / batch 32; one epoch keeps the five torchrun jobs short


def command(run: Path) -> list[str]:
    return ["pretrain", "cifar10", *TINY, "optim.batch_size=32", f"optim.epochs={EPOCHS}", "train.device=cpu",
            "train.ckpt_every_steps=1", f"out_dir={run}"]


class Job:
    """``torchrun --nproc_per_node=2 reliability_worker.py ARGS`` in a process group (and session) of its own."""

    def __init__(self, tmp: Path, name: str, args: list[str], **faults: str):
        self.pid_dir = tmp / f"{name}.pids"
        self.pid_dir.mkdir()
        env = dict(os.environ, CGH_TEST_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(REPO / "src"), CGH_TEST_PID_DIR=str(self.pid_dir))
        env.update({f"CGH_TEST_{k.upper()}": v for k, v in faults.items()})
        self.log = tmp / f"{name}.log"
        with open(self.log, "w") as log:
            self.p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                       "--nproc_per_node=2", str(WORKER), *args], stdout=log, stderr=subprocess.STDOUT,
                                      env=env, cwd=tmp, start_new_session=True)

    def workers(self) -> list[int]:
        return [int(p.read_text()) for p in self.pid_dir.glob("*.pid") if p.read_text()]

    def wait(self) -> int:
        try:
            return self.p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __repr__(self) -> str:
        return f"exit {self.p.returncode}\n{self.log.read_text()[-4000:]}"


def snapshot(run: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of the run directory: (mtime in ns, size, sha256)."""
    out = {}
    for p in sorted(run.rglob("*")) if run.exists() else []:
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(run))] = (st.st_mtime_ns, st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def assert_orphans_die_and_write_nothing(job: Job, run: Path) -> float:
    """Once the launcher is dead (reaped): both workers gone within 15 s, and the run directory as it was. Returns
    the seconds from the launcher's reaping until the last worker was gone."""
    assert job.wait() == -signal.SIGKILL, repr(job)
    reaped, before = time.time(), snapshot(run)
    workers = job.workers()
    assert len(workers) == 2, repr(job)
    while any(pid_alive(w) for w in workers):
        if time.time() - reaped > 15:
            for w in workers:  # not to leave them training for the rest of the suite
                os.kill(w, signal.SIGKILL) if pid_alive(w) else None
            raise AssertionError(f"workers {workers} outlived their launcher by 15 s: {job!r}")
        time.sleep(0.05)
    gone = time.time() - reaped
    assert snapshot(run) == before, "the run directory changed after the launcher died"
    return gone


def steps_of_last_start(run: Path) -> list[dict]:
    records = read_records(run)
    starts = [i for i, r in enumerate(records) if r["kind"] == "start"]
    return [r for r in records[starts[-1] + 1:] if r["kind"] == "step"] if starts else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same 2-process run, never interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    job = Job(tmp, "reference", command(tmp / "run"))
    assert job.wait() == 0, repr(job)
    return tmp / "run"


def test_a_killed_launcher_leaves_no_worker_and_the_run_resumes_exactly(tmp_path, reference):
    run = tmp_path / "run"
    gone = {}

    # ---- 1. during start-up: rank 0 kills its launcher's group as it opens the data --------------------------------
    job = Job(tmp_path, "1-startup", command(run), kill_launcher_at="startup")
    gone["start-up"] = assert_orphans_die_and_write_nothing(job, run)
    assert not (run / "checkpoints" / "last.pt").exists()

    # ---- 2. the same command (--resume auto: nothing to resume, it starts); killed from outside mid-epoch ----------
    job = Job(tmp_path, "2-mid-epoch", [*command(run), "--resume", "auto"])
    deadline = time.time() + TIMEOUT
    while len(steps_of_last_start(run)) < 2:
        assert job.p.poll() is None and time.time() < deadline, repr(job)
        time.sleep(0.05)
    job.kill()
    gone["mid-epoch"] = assert_orphans_die_and_write_nothing(job, run)
    assert (run / LOCK_NAME).exists()  # stale: its holder was SIGKILLed
    first = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 0 < first < STEPS_PER_EPOCH - 2

    # ---- 3. --resume auto over the stale lock; rank 0 kills its launcher halfway through its second save ----------
    job = Job(tmp_path, "3-in-save", [*command(run), "--resume", "auto"], kill_launcher_in_save="2:0.5")
    gone["checkpoint write"] = assert_orphans_die_and_write_nothing(job, run)
    assert "taking over the stale lock of pid" in job.log.read_text(), repr(job)
    second = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert second == first + 1  # the first save of this start is intact, the second died half-written
    assert list((run / "checkpoints").glob(".*.tmp-*")), "the half-written temporary is there"

    # ---- 4. --resume to the end -------------------------------------------------------------------------------------
    job = Job(tmp_path, "4-finish", ["pretrain", "--resume", str(run)])
    assert job.wait() == 0, repr(job)
    assert not (run / LOCK_NAME).exists() and not list((run / "checkpoints").glob(".*.tmp-*"))
    print(f"workers gone after their launcher was reaped, in s: {gone}")

    # ---- the uninterrupted run's model, optimizer and per-step losses, bit for bit ---------------------------------
    a, b = load_checkpoint(run / "checkpoints" / "last.pt"), load_checkpoint(reference / "checkpoints" / "last.pt")
    assert b["step"] == EPOCHS * STEPS_PER_EPOCH
    assert_same_training(a, b, "last.pt")
    drop = ("data_time",)
    steps = [{k: v for k, v in r.items() if k not in drop} for r in read_records(run) if r["kind"] == "step"]
    ref = [{k: v for k, v in r.items() if k not in drop} for r in read_records(reference) if r["kind"] == "step"]
    assert steps == ref
