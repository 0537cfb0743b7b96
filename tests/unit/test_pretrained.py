"""cgh.load_backbone on every accepted format, and its errors."""

import pytest
import torch

from cgh import load_backbone
from cgh.backbone import ResNet
from cgh.errors import CheckpointError
from cgh.methods import build_method
from cgh.train import pretrain
from tests.helpers import tiny_config


def same_features(a, b, size=32):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return torch.equal(a.global_features(x), b.global_features(x))


def test_torchvision_state_dict(tmp_path):
    net = ResNet("resnet50", num_classes=1000).eval()
    torch.save(net.state_dict(), tmp_path / "r50.pth")
    model = load_backbone(tmp_path / "r50.pth")
    assert model.info["format"] == "torchvision" and (model.arch, model.info["stem"]) == ("resnet50", "imagenet")
    assert model.feature_dim("global") == 2048 and model.feature_dim("hypercolumn") == 3072
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), net.features(x))
        assert model.hypercolumn_features(x).shape == (1, 3072)
    with pytest.raises(ValueError, match="hypercolumn head"):
        model.hypercolumn_head_features(x)


def test_cgh_checkpoint_student_teacher_and_head(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "optim.epochs=1"))
    student = load_backbone(out / "checkpoints" / "last.pt")
    teacher = load_backbone(out / "checkpoints" / "last.pt", which="teacher")
    assert student.info["method"] == "cgh" and student.info["epoch"] == 1 and student.info["width"] == 8
    assert student.hyper_head is not None and not same_features(student, teacher)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert student.hypercolumn_head_features(x).shape == (2, 64)  # reduce to the pooled width (8 * 8)
        assert student.hypercolumn_features(x).shape == (2, 32 + 64)  # layer3 + layer4 of an 8-wide ResNet-18
    assert not student.training


def test_authors_checkpoint_keeps_only_the_student(tmp_path):
    cfg = tiny_config(tmp_path)
    method = build_method(cfg)
    net = {}
    for k, v in method.student.backbone.state_dict().items():
        net[f"module.encoder_q.{k}"] = v
        net[f"module.encoder_k.{k}"] = v + 1  # the teacher must not be picked up
    net["module.encoder_q.fc.0.weight"] = torch.zeros(3, 3)  # their projection MLP lives in fc
    net["module.queue"] = torch.zeros(16, 128)
    net["module.hypercols_proj_q.reg_conv.0.weight"] = torch.zeros(2, 2)
    torch.save({"net": net, "epoch": 200}, tmp_path / "authors.pth.tar")
    model = load_backbone(tmp_path / "authors.pth.tar")
    assert model.info["format"] == "authors" and model.info["epoch"] == 200
    for k, v in method.student.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*missing.pt"):
        load_backbone(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_backbone(tmp_path / "junk.pt")
    torch.save({"conv1.weight": torch.zeros(64, 3, 5, 5)}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="5x5"):
        load_backbone(tmp_path / "odd.pt")
    sd = ResNet("resnet18").state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(sd, tmp_path / "bad_shape.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_backbone(tmp_path / "bad_shape.pt")
