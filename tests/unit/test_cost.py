"""cgh.train.cost: the supervised reference of `cgh cost` and of benchmarks/gpu_check.py."""

from __future__ import annotations

from torch import nn

from cgh.config import load_config
from cgh.model.splitbn import SplitBatchNorm
from cgh.train.cost import Supervised, measure, method_configs


def test_supervised_reference_uses_plain_bn_whatever_the_bn_mode():
    """Issue 19: with the one-process default (bn_mode auto -> split, 8 splits) the supervised baseline ran split BN,
    so "CGH / supervised" was measured against a slowed baseline. A supervised run uses plain BN."""
    for mode in ("auto", "split"):
        cfg = load_config("demo", [f"model.bn_mode={mode}", "model.bn_splits=8", "model.width=4"])
        model = Supervised(cfg, num_classes=10)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and not any(isinstance(m, SplitBatchNorm) for m in bns)


def test_each_method_is_timed_on_its_own_recipe():
    """Issue 19, item 4: the method's recipe from the preset applies as in `cgh pretrain PRESET method.name=NAME`;
    setting cfg.method.name after loading gave MoCo-v2 CGH's heads and queue (512/4096, K 131072 on imagenet)."""
    configs = method_configs("imagenet", ["model.width=4"], ("supervised", "mocov2", "ressl", "cgh"))
    sizes = {n: (c.method.feat_dim, c.method.hid_dim, c.method.queue_size) for n, c in configs.items()}
    assert sizes["mocov2"] == (128, 2048, 65536)
    assert sizes["cgh"] == sizes["ressl"] == (512, 4096, 131072)
    assert configs["mocov2"].method.name == "mocov2" and configs["supervised"].method.name == "cgh"


def test_measure_builds_each_method_from_its_config(monkeypatch):
    import cgh.train.cost as cost

    built = {}

    def fake_step_fn(name, cfg, device, views, labels, step):
        built[name] = cfg.method.queue_size
        return (lambda: None), None

    monkeypatch.setattr(cost, "_step_fn", fake_step_fn)
    per_method = method_configs("demo", ["model.width=4"], ("mocov2", "cgh"))
    per_method["mocov2"].method.queue_size = 64
    result = measure(per_method["cgh"], ("mocov2", "cgh"), batch_size=8, warmup=0, repeats=1, device="cpu",
                     include_cgh_warmup=False, per_method=per_method)
    assert built["mocov2"] == 64 and built["cgh"] == per_method["cgh"].method.queue_size // 8 * 8
    assert result["protocol"]["recipes"]["mocov2"]["queue_size"] == 64
