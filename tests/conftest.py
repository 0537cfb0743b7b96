"""Shared test settings: small thread count and deterministic seeds; the reference files of ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
# The torchvision reference shapes live beside the checkout (../shared); tests that need them skip without it.
SHARED = Path(os.environ.get("CGH_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
