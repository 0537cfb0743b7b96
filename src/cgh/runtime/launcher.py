"""A worker dies with its launcher.

torchrun starts every worker in a session of its own, so a SIGKILL of the launcher's process group (an OOM killer,
``kill -9`` of a shell job, a scheduler that kills the launcher only) never reaches the workers: they would go on
training and writing the run directory with nobody to stop them, and a ``--resume`` would then share the directory
with them. Under a launcher, ``die_with_launcher`` ends this process with SIGKILL as soon as the process that started
it is gone: no checkpoint (a launcher's death is not a clean stop) and no further write to the run directory (its
lock is left behind, stale, and the next start takes it over: cgh.train.runlock).

Which mechanism applies where:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; the kernel kills this process when its parent exits. No thread, no
  cost. (Strictly, when the parent *thread* that started it exits: torchrun starts its workers from its main thread.)
- other POSIX systems (macOS, the BSDs): a daemon thread polls ``os.getppid()`` every ``WATCH_INTERVAL_S`` seconds and
  SIGKILLs this process when the parent has changed (an orphan is re-parented to init or a sub-reaper).
- Windows: neither (no parent-death notice, and ``os.getppid`` keeps naming a dead parent): not covered.

The parent is recorded when ``cgh`` is imported (cgh/__init__.py imports this module first, before torch), and checked
again once the mechanism is armed: a launcher that died in between (while torch was being imported, say) is noticed
too. A launcher that dies before Python has imported ``cgh`` (its start-up, a few tens of milliseconds) is not.

"Under a launcher" means LOCAL_RANK or TORCHELASTIC_RUN_ID in the environment (torchrun sets both, also for one
process). A plain ``cgh pretrain`` started from a shell keeps the usual semantics: the shell's death sends it SIGHUP
when it runs in the foreground, and ``nohup``, ``tmux`` or ``setsid`` keep it running on purpose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_INTERVAL_S = 1.0  # how often the watchdog thread (not Linux) looks at its parent

_RECORDED = (os.getpid(), os.getppid())  # (this process, its parent) when cgh was imported
_armed: str | None = None


def under_launcher(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process was started by torchrun (or another launcher that sets LOCAL_RANK)."""
    return "LOCAL_RANK" in environ or "TORCHELASTIC_RUN_ID" in environ


def recorded_parent() -> int:
    """The parent this process had when cgh was imported (a forked child's own parent: it imported nothing)."""
    pid, parent = _RECORDED
    return parent if pid == os.getpid() else os.getppid()


def _die(parent: int) -> None:
    try:
        print(f"cgh: the launcher of this process (pid {parent}) is gone: rank {os.environ.get('RANK', '?')} stops "
              f"at once, without a checkpoint", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # its terminal or pipe may have gone with it
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _set_pdeathsig() -> bool:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) through libc; False where there is no prctl (not Linux) or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != parent:
            _die(parent)


def die_with_launcher(mechanism: str | None = None, environ: Mapping[str, str] = os.environ) -> str | None:
    """Under a launcher, make this process end (SIGKILL) when its parent is gone. Returns the mechanism armed,
    "pdeathsig" (Linux) or "watchdog" (other POSIX systems), or None (not under a launcher, or Windows). Calling it
    again does nothing more. ``mechanism`` forces one (tests: the watchdog on Linux)."""
    global _armed
    if _armed or not under_launcher(environ) or os.name != "posix":
        return _armed
    parent = recorded_parent()
    if mechanism in (None, "pdeathsig") and _set_pdeathsig():
        _armed = "pdeathsig"
    else:
        threading.Thread(target=_watch, args=(parent,), name="cgh-launcher-watchdog", daemon=True).start()
        _armed = "watchdog"
    if os.getppid() != parent:  # the launcher died before the signal was armed: its SIGKILL will never come
        _die(parent)
    return _armed
