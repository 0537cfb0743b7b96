"""cgh.runtime.launcher: a worker started by a launcher dies with it (prctl's parent-death signal on Linux, a watchdog
thread elsewhere; both tried here), also when the launcher died before the mechanism was armed; a plain run outlives its
parent. Real processes: a "launcher" that starts a worker and is then SIGKILLed, as torchrun is in the issue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cgh.runtime import launcher
from cgh.train.runlock import pid_alive
from tests.helpers import REPO

# The worker: imports cgh (which records its parent), waits for GO (a file) when given one, arms the mechanism, says
# so, and sleeps; "survived" only if it outlived a launcher that was gone before arming.
WORKER = textwrap.dedent("""
    import os, sys, time
    from cgh.runtime import launcher
    print("imported", flush=True)
    mechanism, go = sys.argv[1] or None, sys.argv[2]
    while go and not os.path.exists(go):
        time.sleep(0.01)
    print("armed", launcher.die_with_launcher(mechanism), flush=True)
    if go:
        print("survived", flush=True)
    time.sleep(60)
""")
# The launcher: starts the worker in a session of its own (as torchrun does), prints its pid, and waits for it (or,
# with "exit", returns once the worker has imported cgh: a launcher that dies before its worker armed anything).
LAUNCHER = textwrap.dedent("""
    import subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:4]], start_new_session=True,
                              stdout=open(sys.argv[4], "w"), stderr=subprocess.STDOUT)
    print(worker.pid, flush=True)
    if sys.argv[5] != "exit":
        worker.wait()
    while "imported" not in open(sys.argv[4]).read():
        time.sleep(0.01)
""")


def start(tmp_path: Path, mechanism: str, env: dict, go: str = "", then: str = "wait") -> tuple[subprocess.Popen, int,
                                                                                                   Path]:
    out = tmp_path / "worker.out"
    env = {**{k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")},
           "PYTHONPATH": str(REPO / "src"), **env}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, WORKER, mechanism, go, str(out), then], env=env,
                            stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline()), out


def wait_for(predicate, timeout: float) -> float:
    """Seconds until ``predicate()`` holds; fails after ``timeout``."""
    t0 = time.time()
    while not predicate():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)
    return time.time() - t0


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_under_launcher_reads_torchruns_environment():
    assert launcher.under_launcher({"LOCAL_RANK": "0"}) and launcher.under_launcher({"TORCHELASTIC_RUN_ID": "x"})
    assert not launcher.under_launcher({"RANK": "0", "WORLD_SIZE": "2"})  # no launcher named: a plain process
    assert launcher.die_with_launcher(environ={}) is None  # nothing armed for a plain run


@pytest.mark.parametrize("mechanism", ["pdeathsig", "watchdog"])
def test_a_worker_dies_within_seconds_of_its_launchers_sigkill(tmp_path, mechanism):
    proc, worker, out = start(tmp_path, mechanism, {"LOCAL_RANK": "0"})
    try:
        wait_for(lambda: "armed" in out.read_text(), 60)
        assert out.read_text().split()[1:3] == ["armed", mechanism]
        proc.kill()  # SIGKILL: the launcher cannot pass anything on
        proc.wait()
        # pdeathsig: at once; the watchdog: within its poll interval
        assert wait_for(lambda: not pid_alive(worker), 2 + 2 * launcher.WATCH_INTERVAL_S) < 5
    finally:
        kill(worker)


def test_a_launcher_dead_before_the_worker_armed_is_noticed(tmp_path):
    go = tmp_path / "go"
    proc, worker, out = start(tmp_path, "", {"LOCAL_RANK": "0"}, go=str(go), then="exit")
    try:
        proc.wait()  # the launcher is gone while the worker still waits (after importing cgh, before arming)
        go.write_text("")
        wait_for(lambda: not pid_alive(worker), 30)
        assert "survived" not in out.read_text()
        assert "is gone: rank ? stops at once, without a checkpoint" in out.read_text()
    finally:
        kill(worker)


def test_a_plain_run_outlives_its_parent(tmp_path):
    """No launcher in the environment: the usual semantics (nohup, tmux, setsid keep a run on purpose)."""
    proc, worker, out = start(tmp_path, "", {})
    try:
        wait_for(lambda: "armed" in out.read_text(), 60)
        assert out.read_text().split()[1:3] == ["armed", "None"]
        proc.kill()
        proc.wait()
        time.sleep(2 * launcher.WATCH_INTERVAL_S)
        assert pid_alive(worker)
    finally:
        kill(worker)
