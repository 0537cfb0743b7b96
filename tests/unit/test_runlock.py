"""cgh.train.runlock: one writer per run directory. A live holder (an flock held by another process) is refused with an
error naming it; a lock left by a SIGKILLed process, a dead pid, an empty file or another host's old heartbeat is
taken over with a note; another host's fresh heartbeat is refused; the heartbeat advances; release removes the file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from cgh.errors import RunLockedError
from cgh.train import runlock
from cgh.train.runlock import LOCK_NAME, RunLock, refuse_if_held

# A holder in another process: flock, its record, "ready", then sleep until killed.
HOLDER = textwrap.dedent("""
    import fcntl, json, os, socket, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "then",
                             "heartbeat_unix": time.time(), "command": "cgh pretrain demo"}).encode())
    print("ready", flush=True)
    time.sleep(120)
""")


def record(path, **kw):
    base = {"host": socket.gethostname(), "pid": 1, "since": "then", "heartbeat_unix": time.time()}
    path.write_text(json.dumps({**base, **kw}))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_lock_names_its_holder_and_is_removed_at_release(tmp_path):
    lock = RunLock.acquire(tmp_path, world_size=2)
    try:
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid() and held["world_size"] == 2
        assert {"since", "heartbeat", "heartbeat_unix", "command"} <= set(held)
        # a second taker (another open file, as another process would have) is refused, and the file is untouched
        before = (tmp_path / LOCK_NAME).read_bytes()
        with pytest.raises(RunLockedError) as e:
            RunLock.acquire(tmp_path)
        msg = str(e.value)
        assert f"run directory {tmp_path} is in use by another run: {tmp_path / LOCK_NAME} is held by pid " \
               f"{os.getpid()} on host {socket.gethostname()}, running since {held['since']}, last heartbeat" in msg
        assert f"then continue it with `cgh pretrain --resume {tmp_path}`" in msg
        with pytest.raises(RunLockedError):
            refuse_if_held(tmp_path)
        assert (tmp_path / LOCK_NAME).read_bytes() == before
    finally:
        lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    lock.release()  # idempotent
    refuse_if_held(tmp_path)  # free now
    RunLock.acquire(tmp_path).release()


def test_a_live_holder_in_another_process_is_refused_and_taken_over_once_sigkilled(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / LOCK_NAME)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(RunLockedError, match=f"held by pid {holder.pid} on host"):
            RunLock.acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock.acquire(tmp_path)  # its flock went with it
    try:
        err = capsys.readouterr().err
        assert f"note: {tmp_path / LOCK_NAME}: taking over the stale lock of pid {holder.pid} on host" in err
        assert "that run is gone" in err
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


@pytest.mark.parametrize("left", ["dead pid", "empty", "garbage", "old heartbeat elsewhere"])
def test_a_stale_lock_is_taken_over(tmp_path, left, capsys):
    path = tmp_path / LOCK_NAME
    if left == "dead pid":
        record(path, pid=dead_pid())
    elif left == "empty":
        path.write_text("")
    elif left == "garbage":
        path.write_text('{"host": "no')
    else:
        record(path, host="elsewhere", heartbeat_unix=time.time() - runlock.STALE_AFTER_S - 1)
    refuse_if_held(tmp_path)
    RunLock.acquire(tmp_path).release()
    assert ("taking over the stale lock" in capsys.readouterr().err) == (left in ("dead pid", "old heartbeat "
                                                                                  "elsewhere"))


def test_another_hosts_fresh_heartbeat_is_refused(tmp_path):
    record(tmp_path / LOCK_NAME, host="node12", pid=4242, heartbeat_unix=time.time() - 60)
    with pytest.raises(RunLockedError) as e:
        RunLock.acquire(tmp_path)
    msg = str(e.value)
    assert "held by pid 4242 on host node12" in msg and "last heartbeat 60 s ago" in msg
    assert f"heartbeat is older than 300 s; if you know that job has ended, delete {tmp_path / LOCK_NAME}" in msg
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == 4242  # untouched


def test_the_heartbeat_advances(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    lock = RunLock.acquire(tmp_path)
    try:
        first = json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat_unix"]
        deadline = time.time() + 10
        while (runlock._read(tmp_path / LOCK_NAME) or {}).get("heartbeat_unix", first) == first:
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        lock.release()


def test_resume_of_a_live_start_before_its_first_checkpoint_names_the_holder(tmp_path, capsys):
    """`cgh pretrain --resume RUN` while RUN's first start is alive but has not written a checkpoint yet: refused
    with the lock's holder, not "nothing to resume ... the start ended before its first checkpoint" (it has not)."""
    from cgh.cli import main

    (tmp_path / "config.yaml").write_text("method:\n  name: cgh\n")
    (tmp_path / "metrics.jsonl").write_text("")
    lock = RunLock.acquire(tmp_path)
    try:
        assert main(["pretrain", "--resume", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another run: {tmp_path / LOCK_NAME} is held by pid {os.getpid()}" in err
        assert "nothing to resume" not in err
    finally:
        lock.release()
    assert main(["pretrain", "--resume", str(tmp_path)]) == 2  # no holder now: the start did end before a checkpoint
    assert "nothing to resume" in capsys.readouterr().err
