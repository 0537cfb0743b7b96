"""pytest plugin of benchmarks/gpu_check.sh: a time limit per test, and each result kept on disk as soon as it is known.

Loaded with ``-p gpu_check_pytest`` (benchmarks/ on PYTHONPATH). Environment:
  GPU_CHECK_RESULTS  a JSON-lines file: one line per collected test ({"collected": id}) and one per result
                     ({"test": id, "result": passed|failed|skipped|errors, "seconds": s, "message": ...})
  GPU_CHECK_JUNIT    a JUnit XML file, rewritten (atomically) after every test: a step killed by its time limit still
                     leaves the results of the tests that finished (pytest's own --junitxml is written at the end only);
                     the results already in it (an earlier phase) are kept
  GPU_CHECK_TEST_TIMEOUT  seconds one test may take (default 60): past it the test fails with a TimeoutError; if it
                     cannot be interrupted (stuck in a CUDA call), the process is stopped 15 s later, with the stacks
                     printed, and the results so far are already on disk.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET

import pytest

_results: list[dict] = []


def _earlier_results() -> list[dict]:
    """What an earlier phase of the check wrote to the same JUnit file (the compile test runs after the rest)."""
    path = os.environ.get("GPU_CHECK_JUNIT")
    try:
        root = ET.parse(path).getroot() if path and os.path.exists(path) else None
    except ET.ParseError:
        return []
    out = []
    for case in root.iter("testcase") if root is not None else ():
        kinds = {"failure": "failed", "error": "errors", "skipped": "skipped"}
        result = next((kinds[c.tag] for c in case if c.tag in kinds), "passed")
        message = next((c.get("message", "") for c in case if c.tag in kinds), "")
        out.append({"test": case.get("name"), "result": result, "seconds": float(case.get("time", 0)),
                    "message": message})
    return out


_results.extend(_earlier_results())


def _append(record: dict) -> None:
    path = os.environ.get("GPU_CHECK_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _write_junit() -> None:
    path = os.environ.get("GPU_CHECK_JUNIT")
    if not path:
        return
    suite = ET.Element("testsuite", name="gpu_check", tests=str(len(_results)))
    for r in _results:
        case = ET.SubElement(suite, "testcase", name=r["test"], time=f"{r['seconds']:.3f}")
        if r["result"] in ("failed", "errors", "skipped"):
            tag = {"failed": "failure", "errors": "error", "skipped": "skipped"}[r["result"]]
            ET.SubElement(case, tag, message=r.get("message", "")[:2000])
    tmp = path + ".tmp"
    ET.ElementTree(suite).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


def pytest_collection_finish(session):
    for item in session.items:
        _append({"collected": item.nodeid})


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout(f"test exceeded GPU_CHECK_TEST_TIMEOUT={os.environ.get('GPU_CHECK_TEST_TIMEOUT', '60')} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    limit = float(os.environ.get("GPU_CHECK_TEST_TIMEOUT", "60"))
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    faulthandler.dump_traceback_later(limit + 15, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        faulthandler.cancel_dump_traceback_later()


def pytest_runtest_logreport(report):
    # one result per test: the call phase, or a setup that failed or skipped, or a teardown that failed
    if report.when == "call" or (report.when == "setup" and not report.passed) or (
            report.when == "teardown" and report.failed):
        if report.skipped:
            result = "skipped"
        elif report.passed:
            result = "passed"
        else:
            result = "failed" if report.when == "call" else "errors"
        message = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        elif report.failed:
            message = str(report.longrepr)[-2000:]
        record = {"test": report.nodeid, "result": result, "seconds": report.duration, "message": message}
        _results.append(record)
        _append(record)
        _write_junit()
