"""One writer per run directory: ``RUN/lock``.

A run (its rank 0, the one process that writes the directory) holds ``RUN/lock`` from the moment it makes or takes
its run directory until it ends: cleanly, on an error or on Ctrl-C the file is removed. It is JSON a person can read:

    {"host": "node12", "pid": 4242, "since": "2026-11-26 10:15:00 +0100", "heartbeat": "2026-11-26 11:02:30 +0100",
     "heartbeat_unix": 1795682550.1, "world_size": 8, "command": "torchrun ... pretrain imagenet ..."}

What "held" means: the process has the file open with an ``flock(2)`` on it, which the kernel drops when the process
dies however it dies (SIGKILL, the OOM killer, a launcher's parent-death signal), and a daemon thread rewrites the
heartbeat every ``HEARTBEAT_S`` seconds. Another start on the directory (a second job, ``--resume``, ``--resume auto``,
``--overwrite``) looks at the lock first:

- the flock is taken: the holder is alive. Refused (RunLockedError), naming the holder and the file.
- the flock is free and the file names another host whose heartbeat is younger than ``STALE_AFTER_S``: refused too,
  since not every network filesystem shares flocks between hosts (NFS does through its lock manager; a mount with
  ``nolock`` or ``local_lock`` does not, nor do some FUSE and parallel filesystems). Hosts' clocks are assumed to
  agree within a minute.
- otherwise the lock is stale (a process killed on this host, a power loss, another host's job that ended more than
  ``STALE_AFTER_S`` ago): it is taken over, with a one-line note.

Where ``flock`` is not supported at all (ENOLCK, EOPNOTSUPP) the contents decide alone: a holder on this host is alive
while its pid is; two starts at the same instant could then both take the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cgh.errors import RunLockedError

LOCK_NAME = "lock"
HEARTBEAT_S = 30.0  # how often the holder rewrites its heartbeat
STALE_AFTER_S = 300.0  # a lock of another host whose heartbeat is older than this (10 missed beats) is stale


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is alive (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): os.kill's answer
        return True


def _flock(fd: int) -> bool | None:
    """Try to take an exclusive flock on ``fd``: True taken, False held by another open file, None unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
            return None
        raise


def _read(path: Path, tries: int = 10) -> dict[str, Any] | None:
    """The holder's record, or None for a missing, empty or unreadable file (retried briefly: a holder that has just
    created the file, or is rewriting its heartbeat, may leave it empty for an instant)."""
    for i in range(tries):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(record, dict):
                return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if i + 1 < tries:
            time.sleep(0.05)
    return None


def _stale(holder: dict[str, Any] | None, flocked: bool | None) -> bool:
    """Whether a lock whose flock is free (``flocked`` True) or cannot be told (None) and whose file says ``holder``
    is stale."""
    if holder is None:  # empty or cut short: its writer was killed while writing it, before it held anything
        return True
    beat = holder.get("heartbeat_unix")
    if holder.get("host") != socket.gethostname():
        return not isinstance(beat, (int, float)) or time.time() - beat > STALE_AFTER_S
    if flocked:  # this host's kernel dropped its flock: the process is gone
        return True
    return not (isinstance(holder.get("pid"), int) and pid_alive(holder["pid"]))


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "a process that has not written its details yet"
    beat = holder.get("heartbeat_unix")
    ago = f"{max(0.0, time.time() - beat):.0f} s ago" if isinstance(beat, (int, float)) else "unknown"
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, running since {holder.get('since')}, last "
            f"heartbeat {ago}" + (f" (`{holder['command']}`)" if holder.get("command") else ""))


def _refusal(path: Path, holder: dict[str, Any] | None) -> RunLockedError:
    run_dir = path.parent
    what = (f"run directory {run_dir} is in use by another run: {path} is held by {_describe(holder)}. Wait for that "
            f"run to end, or stop it")
    if holder and holder.get("host") and holder.get("pid"):
        what += f" (`kill {holder['pid']}` on {holder['host']} writes a checkpoint and stops it)"
    what += f"; then continue it with `cgh pretrain --resume {run_dir}`"
    if holder and holder.get("host") != socket.gethostname():
        what += (f". A lock of another host is taken over once its heartbeat is older than {STALE_AFTER_S:.0f} s; "
                 f"if you know that job has ended, delete {path}")
    return RunLockedError(what)


def refuse_if_held(run_dir: Path) -> None:
    """Raise RunLockedError when a live run holds ``run_dir``'s lock; touches nothing (a look before any work)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        flocked = _flock(fd)
        if flocked is False or not _stale(_read(path), flocked):
            raise _refusal(path, _read(path))
    finally:
        os.close(fd)  # and with it a flock taken just to look


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))


class RunLock:
    """The lock of a run directory, held by this process until ``release``. ``RunLock.acquire(run_dir)``."""

    def __init__(self, path: Path, fd: int, record: dict[str, Any]):
        self.path, self.fd, self.record = path, fd, record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cgh-run-lock-heartbeat", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, run_dir: Path, world_size: int = 1) -> RunLock:
        """Take ``run_dir``'s lock (the directory must exist), taking over a stale one with a note on stderr; raise
        RunLockedError naming the holder when it is alive."""
        path = Path(run_dir) / LOCK_NAME
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                flocked = _flock(fd)
                holder = _read(path)
                if flocked is False or not _stale(holder, flocked):
                    raise _refusal(path, holder)
                try:  # the file may have been removed (its holder ended) or replaced between open and flock
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                now = time.time()
                record = {"host": socket.gethostname(), "pid": os.getpid(), "since": _stamp(now),
                          "heartbeat": _stamp(now), "heartbeat_unix": now, "world_size": world_size,
                          "command": shlex.join(sys.argv)}
                _write(fd, record)
            except BaseException:
                os.close(fd)
                raise
            if holder is not None:
                print(f"note: {path}: taking over the stale lock of {_describe(holder)}: that run is gone",
                      file=sys.stderr, flush=True)
            return cls(path, fd, record)
        raise RunLockedError(f"could not take the lock {path}: it was replaced 100 times in a row")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            now = time.time()
            self.record.update(heartbeat=_stamp(now), heartbeat_unix=now)
            try:
                _write(self.fd, self.record)
            except OSError:  # a full disk or a vanished directory: the flock still holds; try again at the next beat
                pass

    def release(self) -> None:
        """Stop the heartbeat, remove the file (when it is still this lock's) and drop the flock. Idempotent."""
        if self.fd < 0:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


def _write(fd: int, record: dict[str, Any]) -> None:
    data = (json.dumps(record, indent=1) + "\n").encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
