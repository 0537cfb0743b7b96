"""Linear probe (docs/evaluation.md#linear-probe): frozen backbone bit-identical, the probe learns, hypercolumn probes
for R18 and R50."""

from __future__ import annotations

import json

import pytest
import torch

from cgh.checkpoints.pretrained import load_backbone
from cgh.data.base import ArraySource
from cgh.evaluate.features import extract_features
from cgh.evaluate.linear import (
    LinearProbe,
    check_unchanged,
    evaluate_probe,
    snapshot_state,
    train_linear,
    train_linear_augmented,
)
from cgh.model.backbone import ResNet

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def save_backbone(path, arch="resnet18", stem="cifar", width=8):
    """A torchvision-format state dict of a tiny ResNet, with non-trivial BN statistics."""
    net = ResNet(arch, stem=stem, width=width)
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, 32 if stem == "cifar" else 64, 32 if stem == "cifar" else 64))
    torch.save(net.state_dict(), path)
    return path


def toy_source(n=24, size=32, num_classes=3, seed=0, name="toy:train"):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n) % num_classes
    return ArraySource(images, labels, [f"c{i}" for i in range(num_classes)], name)


def clusters(n_per_class=40, num_classes=4, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=gen) * 5
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), dim, generator=gen)
    return x, y


def test_probe_init_and_feature_norm():
    probe = LinearProbe(512, 10, "bn")
    assert probe.fc.weight.std().item() == pytest.approx(0.01, rel=0.1)  # docs/evaluation.md#linear-probe: N(0, 0.01)
    assert torch.all(probe.fc.bias == 0)
    assert [n for n, _ in probe.named_parameters()] == ["fc.weight", "fc.bias"]  # the BN has no affine parameters
    assert isinstance(LinearProbe(8, 2, "none").norm, torch.nn.Identity)
    with pytest.raises(ValueError, match="feature_norm"):
        LinearProbe(8, 2, "layer")


@pytest.mark.parametrize("feature_norm", ["bn", "none"])
def test_probe_learns_linearly_separable_features(feature_norm):
    x, y = clusters()
    xt, yt = clusters(n_per_class=10, seed=0)
    res = train_linear(x, y, xt, yt, 4, epochs=15, lr=0.3, batch_size=32, feature_norm=feature_norm)
    assert res.best_top1 == 100.0 and res.final_top1 == 100.0 and res.final_top5 == 100.0  # top-5 = top-4 here
    assert res.final_loss < 0.1
    assert len(res.history) == 15


def test_probe_is_deterministic_and_leaves_the_global_rng_alone():
    x, y = clusters(seed=1)
    state = torch.get_rng_state()
    a = train_linear(x, y, x, y, 4, epochs=3, batch_size=16, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_linear(x, y, x, y, 4, epochs=3, batch_size=16, seed=3)
    assert torch.equal(a.probe.fc.weight, b.probe.fc.weight)
    assert a.history == b.history


def test_evaluate_probe_top5_counts():
    probe = LinearProbe(7, 7, "none")
    with torch.no_grad():
        probe.fc.weight.copy_(torch.eye(7))
    feats = torch.tensor([[7.0, 6, 5, 4, 3, 2, 1]] * 3)  # ranks classes 0, 1, ..., 6
    top1, top5 = evaluate_probe(probe, feats, torch.tensor([0, 4, 6]))
    assert top1 == pytest.approx(100 / 3) and top5 == pytest.approx(200 / 3)


def test_check_unchanged_catches_a_bn_statistics_update(tmp_path):
    model = load_backbone(save_backbone(tmp_path / "r18.pt"))
    before = snapshot_state(model)
    check_unchanged(model, before)
    model.train()
    model(torch.randn(4, 3, 32, 32))  # train-mode BN updates running_mean / running_var / num_batches_tracked
    with pytest.raises(RuntimeError, match="running_mean"):
        check_unchanged(model, before)


def test_fast_path_keeps_the_backbone_bit_identical(tmp_path):
    model = load_backbone(save_backbone(tmp_path / "r18.pt"))
    model.eval().requires_grad_(False)
    before = snapshot_state(model)
    train, test = toy_source(24), toy_source(12, seed=1, name="toy:test")
    kw = dict(image_size=32, mean=MEAN, std=STD, batch_size=8)
    f, y = extract_features(model, train, "global", **kw)
    ft, yt = extract_features(model, test, "global", **kw)
    res = train_linear(f, y, ft, yt, 3, epochs=3, batch_size=8)
    check_unchanged(model, before)
    assert 0 <= res.final_top1 <= 100


def test_augmented_path_keeps_the_backbone_bit_identical(tmp_path):
    model = load_backbone(save_backbone(tmp_path / "r18.pt"))
    model.eval().requires_grad_(False)
    model.train()  # the probe itself must put the backbone in eval mode
    before = snapshot_state(model)
    train, test = toy_source(24), toy_source(12, seed=1, name="toy:test")
    ft, yt = extract_features(model, test, "global", image_size=32, mean=MEAN, std=STD)
    res = train_linear_augmented(model, "global", train, ft, yt, 3, image_size=32, mean=MEAN, std=STD, epochs=2,
                                 batch_size=8, feature_norm="bn")
    check_unchanged(model, before)
    assert res.history and res.history[-1]["epoch"] == 2
    assert res.probe.fc.weight.grad is not None


@pytest.mark.parametrize("arch, stem, size, dim", [("resnet18", "cifar", 32, 8 * 4 + 8 * 8),
                                                   ("resnet50", "imagenet", 224, 8 * 4 * 4 + 8 * 8 * 4)])
def test_hypercolumn_probe_runs(tmp_path, arch, stem, size, dim):
    model = load_backbone(save_backbone(tmp_path / "b.pt", arch, stem))
    model.eval().requires_grad_(False)
    before = snapshot_state(model)
    assert model.feature_dim("hypercolumn") == dim  # [layer3, layer4] channels: 768 / 3072 at width 64
    # Images larger than the crop: the test transform resizes (256 -> 224 for the R50) and centre-crops.
    train = toy_source(4, size=size + size // 7, num_classes=2)
    test = toy_source(4, size=size + size // 7, num_classes=2, seed=1, name="toy:test")
    ft, yt = extract_features(model, test, "hypercolumn", image_size=size, mean=MEAN, std=STD)
    assert ft.shape == (4, dim)
    res = train_linear_augmented(model, "hypercolumn", train, ft, yt, 2, image_size=size, mean=MEAN, std=STD,
                                 epochs=1, batch_size=4, feature_norm="bn")
    check_unchanged(model, before)
    assert res.probe.fc.in_features == dim


def test_cli_linear_json(tmp_path, capsys):
    from cgh.cli import main

    ckpt = save_backbone(tmp_path / "r18.pt")
    code = main(["linear", str(ckpt), "--dataset", "synthetic", "--data-option", "synthetic_size=40",
                 "--data-option", "synthetic_test_size=20", "--features", "hypercolumn", "--epochs", "3",
                 "--batch-size", "16", "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    m, p = out["metrics"], out["protocol"]
    assert out["command"] == "linear"
    assert set(m) >= {"best_top1", "best_top5", "final_top1", "final_top5", "best_epoch"}
    assert p["features"] == "hypercolumn" and p["feature_dim"] == 96 and p["protocol"] == "small"
    assert p["augment"] == "none" and p["feature_norm"] == "bn" and p["epochs"] == 3 and p["lr"] == 0.3
    assert p["dataset"] == "synthetic" and p["train_split"] == "train" and p["test_split"] == "test"
    assert p["image_size"] == 32 and p["checkpoint"] == str(ckpt) and p["arch"] == "resnet18"


def test_cli_linear_rejects_head_features_without_a_head(tmp_path, capsys):
    from cgh.cli import main

    ckpt = save_backbone(tmp_path / "r18.pt")
    code = main(["linear", str(ckpt), "--dataset", "synthetic", "--data-option", "synthetic_size=20",
                 "--data-option", "synthetic_test_size=10", "--features", "hypercolumn_head", "--device", "cpu"])
    assert code == 2
    assert "hypercolumn head" in capsys.readouterr().err


def test_protocols_and_flag_overrides():
    import argparse

    from cgh.commands.linear import resolve_protocol

    blank = dict(protocol="auto", lr=None, momentum=None, weight_decay=None, epochs=None, batch_size=None,
                 augment=None, feature_norm=None)
    name, p = resolve_protocol(argparse.Namespace(**blank), "imagenet")
    # docs/evaluation.md#linear-probe, the authors' ImageNet protocol: lr 0.3 not batch-scaled, momentum 0.9, wd 0, 100
    # epochs, batch 256.
    assert name == "imagenet" and p == {"lr": 0.3, "momentum": 0.9, "weight_decay": 0.0, "epochs": 100,
                                        "batch_size": 256, "augment": "rrc", "feature_norm": "none"}
    name, p = resolve_protocol(argparse.Namespace(**dict(blank, lr=0.1, augment="rrc")), "cifar10")
    assert name == "small" and p["lr"] == 0.1 and p["augment"] == "rrc" and p["feature_norm"] == "bn"
