"""Run ``cgh.cli.main(argv)`` in a subprocess with faults injected from environment variables.

Used by tests/system/test_interrupt.py to interrupt a real pretraining process at chosen points (a SIGKILL from
outside cannot be aimed at the middle of a checkpoint write reliably; these hooks can). Usage:

    python tests/system/workers/reliability_worker.py pretrain cifar10 key=value ... [--resume RUN]

Environment:
    CGH_TEST_THREADS=N           torch intra-op threads (default 1): every run of a comparison must use the same count
                                 for bit-identical results
    CGH_TEST_KILL_IN_SAVE=N:F    at the N-th ``torch.save`` of this process (counted from 1), write the first fraction F
                                 of the serialised bytes into the file being written, flush them, then
                                 SIGKILL this process: a kill in the middle of writing a checkpoint
    CGH_TEST_KILL_IN_COPY=N:F    the same for the N-th file copy (``shutil.copyfile`` or ``copyfileobj``: the
                                 copies between last.pt and the numbered epoch checkpoints)
    CGH_TEST_FSIZE_AFTER_SAVE=N  once the N-th ``torch.save`` has returned, cap the size of any file this process writes
                                 (RLIMIT_FSIZE, with SIGXFSZ ignored so that writes fail with EFBIG instead of killing
                                 the process) at half the bytes that save wrote: the next checkpoint write fails
                                 partway, as on a full disk

Under torchrun (tests/system/test_launcher_death.py), where the launcher is the worker's parent and leads its own
process group:
    CGH_TEST_PID_DIR=DIR                 write this process's pid to DIR/RANK.pid at start
    CGH_TEST_KILL_LAUNCHER_AT=startup    rank 0 SIGKILLs its launcher's process group when it opens the data (after
                                         the process group is up, before the run directory is made) and goes on
    CGH_TEST_KILL_LAUNCHER_IN_SAVE=N:F   rank 0, at its N-th ``torch.save`` into a file: write the first fraction F
                                         of the bytes, flush, SIGKILL its launcher's process group, then write the
                                         rest over about 2 s and go on (a worker that outlived its launcher would
                                         finish the checkpoint and train on)
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import sys
import time

import cgh  # noqa: F401 - before torch, as `python -m cgh.cli` does: it records this process's parent (cgh.runtime.launcher)


def _spec(name: str) -> tuple[int, float] | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    n, frac = raw.split(":")
    return int(n), float(frac)


def _die_after_partial_write(f, data: bytes, frac: float) -> None:
    f.write(data[: max(1, int(len(data) * frac))])
    f.flush()  # into the kernel's page cache, which a SIGKILL does not lose (f may wrap the file: no fileno)
    os.kill(os.getpid(), signal.SIGKILL)


class _Counting:
    """Counts the bytes torch.save writes into a file object."""

    def __init__(self, f):
        self.f, self.written = f, 0

    def write(self, data):
        n = self.f.write(data)
        self.written += len(memoryview(data).cast("B"))
        return n

    def flush(self):
        self.f.flush()


def _kill_launcher() -> None:
    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)


def install_hooks() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("CGH_TEST_THREADS", "1")))
    kill_save = _spec("CGH_TEST_KILL_IN_SAVE")
    kill_copy = _spec("CGH_TEST_KILL_IN_COPY")
    fsize_after = int(os.environ.get("CGH_TEST_FSIZE_AFTER_SAVE", "0"))
    rank0 = os.environ.get("RANK", "0") == "0"
    kill_launcher_save = _spec("CGH_TEST_KILL_LAUNCHER_IN_SAVE") if rank0 else None
    if os.environ.get("CGH_TEST_PID_DIR"):
        with open(os.path.join(os.environ["CGH_TEST_PID_DIR"], f"{os.environ.get('RANK', '0')}.pid"), "w") as f:
            f.write(str(os.getpid()))
    if rank0 and os.environ.get("CGH_TEST_KILL_LAUNCHER_AT") == "startup":
        import cgh.train.prepare

        real_open = cgh.train.prepare.open_split

        def open_split(*args, **kwargs):
            _kill_launcher()
            return real_open(*args, **kwargs)

        cgh.train.prepare.open_split = open_split
    counts = {"save": 0, "copy": 0, "file_save": 0}

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        counts["save"] += 1
        if kill_save and counts["save"] == kill_save[0]:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            _die_after_partial_write(f, buf.getvalue(), kill_save[1])
        # torch.distributed pickles objects through torch.save into a BytesIO (all_gather_object of the RNG states,
        # broadcast_object): only saves into files count here
        counts["file_save"] += not isinstance(f, io.BytesIO)
        if kill_launcher_save and counts["file_save"] == kill_launcher_save[0] and not isinstance(f, io.BytesIO):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            cut = max(1, int(len(data) * kill_launcher_save[1]))
            f.write(data[:cut])
            f.flush()
            _kill_launcher()
            # the rest over about 2 s: the launcher takes a moment to die once signalled, and the worker is meant to
            # die with it in the middle of this write
            step = max(1, (len(data) - cut) // 64)
            for i in range(cut, len(data), step):
                f.write(data[i:i + step])
                f.flush()
                time.sleep(0.03)
            return None
        counted = _Counting(f)
        result = real_save(obj, counted, *args, **kwargs)
        if fsize_after and counts["save"] == fsize_after:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (counted.written // 2, hard))
        return result

    torch.save = save

    # Checkpoint copies go through shutil.copyfileobj (cgh.checkpoints.files.copy_atomic) or shutil.copyfile; a copy
    # made by one inside the other counts once.
    real_copyfile, real_copyfileobj = shutil.copyfile, shutil.copyfileobj
    inside = [False]

    def counted(real, partial_write):
        def hook(src, dst, *args, **kwargs):
            if inside[0]:
                return real(src, dst, *args, **kwargs)
            counts["copy"] += 1
            if kill_copy and counts["copy"] == kill_copy[0]:
                partial_write(src, dst, kill_copy[1])
            inside[0] = True
            try:
                return real(src, dst, *args, **kwargs)
            finally:
                inside[0] = False
        return hook

    def partial_file(src, dst, frac):
        with open(src, "rb") as s, open(dst, "wb") as d:
            _die_after_partial_write(d, s.read(), frac)

    def partial_fileobj(src, dst, frac):
        _die_after_partial_write(dst, src.read(), frac)

    shutil.copyfile = counted(real_copyfile, partial_file)
    shutil.copyfileobj = counted(real_copyfileobj, partial_fileobj)

if __name__ == "__main__":
    install_hooks()
    from cgh.cli import main

    sys.exit(main(sys.argv[1:]))
