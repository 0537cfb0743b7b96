"""Shared test settings: small thread count and deterministic seeds; the reference files of ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
# torchvision's state-dict keys and shapes (a copy of ../shared/data/torchvision; see its README).
TORCHVISION_SHAPES = REPO / "tests" / "data" / "torchvision"


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


# A configuration small enough for a CPU test: an eighth-width ResNet-18 on 256 synthetic 32-px images.
TINY = ["data.name=synthetic", "data.path=", "data.synthetic_size=256", "data.synthetic_test_size=128",
        "data.image_size=32", "data.synthetic_image_size=32", "model.arch=resnet18", "model.stem=cifar",
        "model.width=8", "method.queue_size=128", "method.hid_dim=32", "method.feat_dim=16", "method.hyper_dim=16",
        "optim.batch_size=64", "optim.warmup_epochs=0", "method.loss_warmup_epochs=1", "method.loss_warmup_min_steps=0",
        "train.knn_every=0",
        "train.progress=false", "train.log_every=1", "data.num_workers=0"]


def tiny_config(out_dir, *overrides: str):
    """The cifar10 preset shrunk to TINY, writing into ``out_dir``, with extra ``key=value`` overrides."""
    from cgh.config import load_config

    return load_config("cifar10", [*TINY, f"out_dir={out_dir}", *overrides])
