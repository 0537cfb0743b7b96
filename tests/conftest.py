"""Fixtures and settings shared by the whole suite: a small thread count, deterministic seeds, one-step runs.

Only fixtures and pytest settings live here. Helpers are in tests/helpers.py, reference implementations in
tests/reference.py; test modules import those, never this file.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import break_jpeg, photo_folder, tiny_config

# Two intra-op threads fill the CI machine's two cores; under pytest-xdist (`make test` runs two worker processes)
# each worker takes one, so the workers do not spin against each other.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on the shared 2-core machines, OpenMP threads spinning against other jobs make small
    tensor ops 10-50x slower than one thread does (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def one_step_runs(tmp_path_factory):
    """Real one-step run directories of CGH and MoCo-v2 (the TINY config), ``{"cgh": dir, "mocov2": dir}``, shared by
    the checkpoint and resume tests; they read them (or copy them) and must not change them."""
    from cgh.train import pretrain

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("cgh", "mocov2"):
        pretrain(tiny_config(root / method, f"method.name={method}", "train.max_steps=1", "optim.epochs=1",
                             "aug.teacher_view=" + ("strong" if method == "mocov2" else "weak")))
        out[method] = root / method
    return out


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory):
    """A folder of real photographs as people keep them (tests/helpers.py photo_folder: train/ with 6 and val/ with 3
    JPEGs of each of 5 classes) plus one truncated JPEG in train/hopper and one in val/hopper, and a one-step run
    pretrained on it with `cgh pretrain cifar10 data.name=folder data.path=PHOTOS` (TINY, batch 16).
    ``{"photos": PHOTOS, "run": RUN, "checkpoint": RUN/checkpoints/last.pt, "broken": {split: path}}``; tests read
    them and must not change them."""
    from cgh.train import pretrain

    root = tmp_path_factory.mktemp("photo_run")
    photos = root / "photos"
    photo_folder(photos, per_split=(6, 3))
    broken = {}
    for split in ("train", "val"):
        path = photos / split / "hopper" / "broken.jpg"
        path.write_bytes((photos / split / "hopper" / "00.jpg").read_bytes())
        broken[split] = break_jpeg(path)
    pretrain(tiny_config(root / "run", "data.name=folder", f"data.path={photos}", "optim.batch_size=16",
                         "optim.epochs=1", "train.max_steps=1"))
    return {"photos": photos, "run": root / "run", "checkpoint": root / "run" / "checkpoints" / "last.pt",
            "broken": broken}


# The files whose tests wait minutes on pretraining runs (test_learning's six runs are most of the suite's CPU time),
# collected first: under pytest-xdist (`make test`) one worker starts them while the other works through the rest of
# the suite, instead of the runs starting last with every other worker idle. Longest first.
LONG_FILES = ("tests/system/test_learning.py", "tests/system/test_demo.py", "tests/system/test_collapse.py")


def pytest_collection_modifyitems(config, items):
    """The long files first (``LONG_FILES``), the rest in their order. Tests marked ``gpu`` need a CUDA device:
    skipped where there is none (benchmarks/gpu_check.sh runs them)."""
    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu); run by benchmarks/gpu_check.sh")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
