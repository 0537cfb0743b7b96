"""Checks that need a CUDA device (marker ``gpu``; skipped elsewhere by tests/conftest.py). benchmarks/gpu_check.sh
runs them on a GPU machine: bf16 autocast against float32, channels-last against contiguous, ``train.compile=true``
against eager, and the kNN monitor and ``cgh knn`` on CUDA."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch

from cgh.methods import build_method
from cgh.runtime.device import autocast
from tests.helpers import REPO, small_cfg, tiny_config

pytestmark = pytest.mark.gpu

METHODS = ("mocov2", "ressl", "cgh")


def _gpu_check():
    """benchmarks/gpu_check.py (benchmarks/ is no package): the throughput step it times, built from cgh's pieces."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The device under test: CUDA. CGH_GPU_TEST_DEVICE=cpu lets the test code itself be checked on a CPU by calling the
# functions directly (the conftest hook still skips them there under pytest).
DEVICE = os.environ.get("CGH_GPU_TEST_DEVICE", "cuda")


@pytest.fixture
def cuda():
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # float32 references in float32, not tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device(DEVICE)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _views(device, memory_format=torch.contiguous_format, batch=16, size=32):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, size, size, generator=g).to(device).contiguous(memory_format=memory_format)
            for _ in range(2)]


def _loss(method, views, amp=None, step=10):
    with torch.no_grad(), autocast(views[0].device, amp):
        loss, terms = method(views, 0.99, step)
    return float(loss.float()), {k: float(v.float()) for k, v in terms.items()}


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("step", [0, 10 ** 6])  # CGH and ReSSL in their InfoNCE warm-up, then past it
def test_bf16_autocast_close_to_float32(cuda, name, step):
    torch.manual_seed(0)
    ref = build_method(small_cfg(name, queue_size=32), 1, steps_per_epoch=1).to(cuda)
    low = copy.deepcopy(ref)  # the same weights and queue: forward pushes the queue and moves the teacher
    views = _views(cuda)
    fp32, _ = _loss(ref, views, None, step)
    bf16, terms = _loss(low, views, torch.bfloat16, step)
    assert math.isfinite(fp32) and math.isfinite(bf16)
    assert all(math.isfinite(v) for v in terms.values()), terms
    assert abs(bf16 - fp32) <= 0.03 * abs(fp32) + 0.03, (fp32, bf16)


def test_bf16_training_step_finite(cuda):
    build_step = _gpu_check().build_step
    spec = {"preset": "cifar10", "overrides": ["model.width=8", "method.queue_size=64"], "image_size": 32,
            "source_size": 32, "batch": 32}
    for name in ("supervised", *METHODS):
        step, _, model = build_step(name, spec, cuda, torch.bfloat16)
        for i in range(3):
            loss = step(i)
        assert torch.isfinite(loss).item(), name
        assert all(torch.isfinite(p).all() for p in model.parameters()), name


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("bn", ["plain", "split"])  # split: the one-GPU default, channels-last kept (issue 19)
def test_channels_last_same_loss(cuda, name, bn):
    torch.manual_seed(0)
    cfg = small_cfg(name)
    cfg.model.bn_mode, cfg.model.bn_splits = bn, 4  # batch 16: 4 splits of 4
    ref = build_method(cfg, 1, steps_per_epoch=1).to(cuda)
    cl = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    torch.manual_seed(1)  # split mode shuffles the teacher's batch: the same permutation for both
    a, _ = _loss(ref, _views(cuda))
    torch.manual_seed(1)
    b, _ = _loss(cl, _views(cuda, torch.channels_last))
    assert b == pytest.approx(a, rel=1e-4, abs=1e-4)


def _step_losses(run_dir):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r.get("kind") == "step"]


def test_compile_matches_eager(cuda, tmp_path):
    from cgh.train import pretrain

    common = [f"train.device={DEVICE}", "train.amp=none", "train.max_steps=3", "optim.epochs=1"]
    pretrain(tiny_config(tmp_path / "eager", *common))
    pretrain(tiny_config(tmp_path / "compiled", *common, "train.compile=true"))
    eager, compiled = _step_losses(tmp_path / "eager"), _step_losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 3
    assert all(math.isfinite(v) for v in compiled)
    assert compiled == pytest.approx(eager, rel=2e-3, abs=2e-3)


def test_knn_monitor_on_cuda(cuda, tmp_path):
    from cgh.train.monitor import KnnMonitor

    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, "train.knn_every=1")
    method = build_method(cfg, 1, steps_per_epoch=1)
    on_cpu = KnnMonitor(cfg, torch.device("cpu"), None)(copy.deepcopy(method.student))
    on_gpu = KnnMonitor(cfg, cuda, None)(method.student.to(cuda))
    on_bf16 = KnnMonitor(cfg, cuda, torch.bfloat16)(method.student)
    assert 0.0 <= on_gpu <= 100.0
    assert on_gpu == pytest.approx(on_cpu, abs=2.5)  # 128 test images: a sample or two may flip
    assert on_bf16 == pytest.approx(on_cpu, abs=5.0)


def test_pretrain_with_monitor_and_cgh_knn_on_cuda(cuda, tmp_path, capsys):
    from cgh.cli import main
    from cgh.train import pretrain

    result = pretrain(tiny_config(tmp_path / "run", f"train.device={DEVICE}", "train.knn_every=1", "optim.epochs=1"))
    assert 0.0 <= result.metrics["knn_top1"] <= 100.0
    capsys.readouterr()
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert main(["knn", str(ckpt), "--device", DEVICE, "--json", "--k", "5", "20"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert DEVICE in json.dumps(out["protocol"])
    assert all(0.0 <= v["top1"] <= 100.0 for v in out["metrics"].values())
