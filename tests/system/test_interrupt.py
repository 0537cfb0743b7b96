"""Interrupted pretraining processes lose nothing (exact resume).

A real ``cgh pretrain`` process (tests/system/workers/reliability_worker.py: ``cgh.cli.main`` plus fault hooks)
that writes a checkpoint every step is interrupted again and again on ONE run directory: SIGKILLed from inside a
checkpoint write (at a seeded random save and byte offset), SIGKILLed from inside the epoch-end copy, SIGKILLed from
outside at a seeded random moment, stopped by SIGTERM and by SIGINT. After every interruption every visible checkpoint
file loads with ``cgh.checkpoints.files.load_checkpoint``, and ``--resume`` continues; at the end the run holds
bit-for-bit the model, optimizer and per-step losses of an uninterrupted run. The same worker also fills the disk in the
middle of a checkpoint write (the last test): the previous checkpoint survives and the run continues from it.

What tests/unit/test_train.py already covers in-process (not repeated here): exact resume at a step or epoch boundary
(test_resume_is_exact), refusing config changes on resume, the existing-run-directory guard and the non-finite loss.

Seeds: CGH_RELIABILITY_SEEDS="0 1 2 3 4" runs the chain once per seed (default: "0"; CI runs one seed, the other seeds
were run when the test was written).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cgh.checkpoints.files import load_checkpoint
from cgh.train import pretrain
from tests.helpers import TINY, assert_same_training, one_error_line, read_records, tiny_config

WORKER = Path(__file__).parent / "workers" / "reliability_worker.py"
SEEDS = [int(s) for s in os.environ.get("CGH_RELIABILITY_SEEDS", "0").split()]
STEPS_PER_EPOCH, EPOCHS = 8, 3  # 256 synthetic images / batch 32
# Generous: a 2-core CI box shared with other jobs can be 10x slower than a quiet one.
TIMEOUT = 600


def run_args(out_dir: Path) -> list[str]:
    return ["pretrain", "cifar10", *TINY, "optim.batch_size=32", f"optim.epochs={EPOCHS}", "train.device=cpu",
            "train.ckpt_every_steps=1", "train.keep_every=1", f"out_dir={out_dir}"]


def resume_args(out_dir: Path) -> list[str]:
    return ["pretrain", "--resume", str(out_dir)]


class Proc:
    """A worker process with its output in files (a full pipe would block it)."""

    def __init__(self, tmp: Path, name: str, args: list[str], **faults: str):
        env = dict(os.environ, CGH_TEST_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env.update({f"CGH_TEST_{k.upper()}": v for k, v in faults.items()})
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.p = subprocess.Popen([sys.executable, str(WORKER), *args], stdout=out, stderr=err, env=env,
                                      cwd=tmp)

    def wait(self) -> int:
        try:
            return self.p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise

    def output(self) -> tuple[str, str]:
        return self.out_path.read_text(), self.err_path.read_text()

    def __repr__(self) -> str:
        out, err = self.output()
        return f"exit {self.p.returncode}\nstdout:\n{out}\nstderr:\n{err[-3000:]}"


def steps_since_start(run: Path, start_number: int) -> list[dict]:
    """Step records logged after the ``start_number``-th start record (1-based): what the current process did."""
    records, starts = read_records(run), 0
    for i, r in enumerate(records):
        starts += r["kind"] == "start"
        if starts == start_number:
            return [s for s in records[i + 1:] if s["kind"] == "step"]
    return []


def wait_for_steps(proc: Proc, run: Path, start_number: int, n: int) -> list[dict]:
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        steps = steps_since_start(run, start_number)
        if len(steps) >= n:
            return steps
        assert proc.p.poll() is None, f"the run ended before logging {n} new steps: {proc!r}"
        time.sleep(0.05)
    raise AssertionError(f"no {n} new step records in {TIMEOUT}s: {proc!r}")


def assert_checkpoints_load(run: Path) -> dict:
    """Every visible checkpoint loads (a kill never leaves a partial last.pt or epoch_NNNN.pt); returns last.pt."""
    ckpt_dir = run / "checkpoints"
    for p in sorted(ckpt_dir.glob("*.pt")):
        load_checkpoint(p)  # raises CheckpointError on a truncated file
    return load_checkpoint(ckpt_dir / "last.pt")


def stale_temporaries(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob(".*.tmp-*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = Proc(tmp, "reference", run_args(tmp / "run"))
    assert proc.wait() == 0, repr(proc)
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_interrupted_run_loses_nothing_and_resumes_exactly(tmp_path, reference, seed):
    rng = random.Random(seed)
    run = tmp_path / "run"
    starts = 0

    # ---- 1. SIGKILL in the middle of writing a checkpoint (save k of the run, a random fraction of its bytes) ------
    k, frac = rng.randint(2, STEPS_PER_EPOCH - 2), rng.uniform(0.02, 0.98)
    proc = Proc(tmp_path, "1-kill-in-save", run_args(run), kill_in_save=f"{k}:{frac}")
    assert proc.wait() == -signal.SIGKILL, repr(proc)
    starts += 1
    ckpt = assert_checkpoints_load(run)
    assert ckpt["step"] == k - 1  # one save per step: save k (step k) died, save k - 1 is intact
    partial = stale_temporaries(run)
    assert len(partial) == 1, partial  # the half-written temporary, never renamed over last.pt

    # ---- 2. resume; SIGKILL in the middle of the epoch-end copy -----------------------------------------------------
    proc = Proc(tmp_path, "2-kill-in-copy", resume_args(run), kill_in_copy=f"1:{rng.uniform(0.02, 0.98)}")
    assert proc.wait() == -signal.SIGKILL, repr(proc)
    starts += 1
    assert not set(partial) & set(stale_temporaries(run)), "the resumed run removes the killed run's temporary"
    ckpt = assert_checkpoints_load(run)
    assert ckpt["step"] in (STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH)

    # ---- 3. resume; SIGKILL from outside at a random moment ---------------------------------------------------------
    proc = Proc(tmp_path, "3-kill-outside", resume_args(run))
    starts += 1
    n = rng.randint(1, 2)
    wait_for_steps(proc, run, starts, n)
    t = time.time()
    wait_for_steps(proc, run, starts, n + 1)
    # a random moment within about one step, whatever the machine's speed (a fixed 0.4 s could outlast the run's
    # remaining steps on a fast CPU, and the kill would find it finished)
    time.sleep(rng.uniform(0.0, 1.0) * (time.time() - t))
    proc.p.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, repr(proc)
    assert_checkpoints_load(run)

    # ---- 4, 5. resume; SIGTERM, then SIGINT: a clean stop with a checkpoint of the last completed step --------------
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        name = signal.Signals(signum).name
        proc = Proc(tmp_path, f"stop-{name}", resume_args(run))
        starts += 1
        wait_for_steps(proc, run, starts, 1)
        proc.p.send_signal(signum)
        assert proc.wait() == code, repr(proc)
        ckpt = assert_checkpoints_load(run)
        last_step = steps_since_start(run, starts)[-1]["step"]
        assert ckpt["step"] == last_step, f"{name}: the checkpoint is not the last completed step"
        out, _ = proc.output()
        where = run / "checkpoints" / "last.pt"
        assert re.search(rf"stopped by {name} at step {last_step}; checkpoint {re.escape(str(where))}; "
                         rf"continue with: cgh pretrain --resume {re.escape(str(run))}", out), repr(proc)
        assert not stale_temporaries(run)

    # ---- 6. resume to the end ---------------------------------------------------------------------------------------
    proc = Proc(tmp_path, "6-finish", resume_args(run))
    assert proc.wait() == 0, repr(proc)
    assert not stale_temporaries(run)

    # ---- the same final state as the uninterrupted run, bit for bit ------------------------------------------------
    ckpt_dir, ref_dir = run / "checkpoints", reference / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == sorted(p.name for p in ref_dir.glob("*.pt"))
    for name in sorted(p.name for p in ref_dir.glob("*.pt")):  # last.pt and every numbered epoch copy
        assert_same_training(load_checkpoint(ckpt_dir / name), load_checkpoint(ref_dir / name), name)

    # Per-step records: a resumed run re-does the steps logged after its checkpoint. The loop drops those records
    # when it resumes, so every step is logged exactly once, with the uninterrupted run's values.
    ref_records, records = read_records(reference), read_records(run)
    ref_steps = [r for r in ref_records if r["kind"] == "step"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    drop = ("data_time",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in steps] == [
        {k: v for k, v in r.items() if k not in drop} for r in ref_steps]
    # Epoch records of completed epochs: the mean losses over the whole epoch, as if never interrupted.
    def completed(rs):
        return {r["epoch"]: {k: r[k] for k in ("loss", "hyper", "csist", "nce") if k in r}
                for r in rs if r["kind"] == "epoch" and r["step"] == r["epoch"] * STEPS_PER_EPOCH}
    assert completed(records) == completed(ref_records)
    assert sum(r["kind"] == "start" for r in records) == starts + 1


# ---------------------------------------------------------------------------------------------------------------------
# A full disk while writing a checkpoint
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.slow
def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    """For real: after the first checkpoint the process may write no file larger than half a checkpoint
    (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG as they fail with ENOSPC on a full disk), so the second
    checkpoint write fails partway."""
    out = tmp_path / "run"
    env = dict(os.environ, CGH_TEST_FSIZE_AFTER_SAVE="1", CGH_TEST_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(WORKER), "pretrain", "cifar10", *TINY, "optim.epochs=1",
                           "train.ckpt_every_steps=1", "train.device=cpu", f"out_dir={out}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    last = out / "checkpoints" / "last.pt"
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc.stderr).strip() == (f"error: could not write checkpoint {last}: [Errno 27] File too "
                                                   f"large; the previous checkpoint, if any, is intact")
    assert load_checkpoint(last)["step"] == 1  # the first checkpoint, intact
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]  # no temporary left behind
    # Once there is room again, the run continues from it.
    result = pretrain(tiny_config(out, "optim.epochs=1", "train.ckpt_every_steps=1", "train.device=cpu",
                                  "train.max_steps=2"), resume=True)
    assert (result.status, result.step) == ("max_steps", 2)
