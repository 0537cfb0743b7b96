"""cgh.load_backbone on every accepted format, and its errors."""

import re

import pytest
import torch

from cgh import load_backbone
from cgh.errors import CheckpointError
from cgh.methods import build_method
from cgh.model.backbone import ResNet
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


# ---- published layouts -----------------------------------------------------------------------------------------------
# Each test writes a checkpoint in the key layout its project's own code saves (the sources are cited in
# cgh/checkpoints/formats.py) from a small cgh ResNet, loads it and compares weights and features with the original.


def small_net(stem="cifar", seed=0, arch="resnet18", width=8):
    """An 8-wide ResNet with non-trivial BN statistics, so that a mixed-up bn1 or layer would show."""
    torch.manual_seed(seed)
    net = ResNet(arch, stem=stem, width=width).train()
    with torch.no_grad():
        net(torch.randn(4, 3, 32, 32))
    return net.eval()


def prefixed(sd, prefix):
    return {f"{prefix}{k}": v for k, v in sd.items()}


def assert_same_backbone(model, net, size=32):
    state = model.backbone.state_dict()
    assert set(state) == set(net.state_dict())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model.global_features(x), net.features(x))


def moco_v2_checkpoint(path, net, ddp=True):
    """facebookresearch/moco main_moco.py: the DDP model's state dict, an MLP head in encoder_q.fc, the key encoder,
    the queue, next to epoch, arch and the optimiser state."""
    p = "module." if ddp else ""
    sd = prefixed(net.state_dict(), f"{p}encoder_q.")
    sd.update(prefixed(small_net(seed=1).state_dict(), f"{p}encoder_k."))  # must not be picked up
    for enc in ("encoder_q", "encoder_k"):
        sd.update({f"{p}{enc}.fc.0.weight": torch.randn(64, 64), f"{p}{enc}.fc.0.bias": torch.randn(64),
                   f"{p}{enc}.fc.2.weight": torch.randn(16, 64), f"{p}{enc}.fc.2.bias": torch.randn(16)})
    sd[f"{p}queue"] = torch.randn(16, 32)
    sd[f"{p}queue_ptr"] = torch.zeros(1, dtype=torch.long)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, "params": [0, 1]}]}
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": optimizer}, path)
    return path


def test_moco_v2_official_checkpoint(tmp_path):
    net = small_net()
    model = load_backbone(moco_v2_checkpoint(tmp_path / "moco_v2_200ep_pretrain.pth.tar", net))
    assert (model.info["format"], model.info["method"], model.info["epoch"]) == ("moco", "mocov2", 200)
    assert model.info["ddp"] and (model.arch, model.info["stem"], model.info["width"]) == ("resnet18", "cifar", 8)
    assert model.info["dropped"] == ["encoder_k", "encoder_q.fc", "queue", "queue_ptr"]
    assert_same_backbone(model, net)


def test_moco_v1_checkpoint_without_ddp_prefix(tmp_path):
    net = small_net("imagenet")
    sd = prefixed(net.state_dict(), "encoder_q.")
    sd.update({"encoder_q.fc.weight": torch.randn(16, 64), "encoder_q.fc.bias": torch.randn(16)})  # v1: linear head
    sd.update(prefixed(small_net("imagenet", seed=1).state_dict(), "encoder_k."))
    sd.update({"queue": torch.randn(16, 32), "queue_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd}, tmp_path / "moco_v1.pth.tar")
    model = load_backbone(tmp_path / "moco_v1.pth.tar")
    assert (model.info["format"], model.info["method"], model.info["ddp"]) == ("moco", "mocov1", False)
    assert model.info["stem"] == "imagenet"
    assert_same_backbone(model, net, size=64)


def test_ressl_official_checkpoint(tmp_path):
    """mingkai-zheng/ReSSL ressl.py: {"model": DDP ReSSL state dict, "optimizer", "epoch"}; each encoder is a BackBone
    with ``net`` (the ResNet without fc) and ``head`` (linear1, linear2)."""
    net, other = small_net(), small_net(seed=1)
    sd = {}
    for enc, backbone in (("encoder_q", net), ("encoder_k", other)):
        sd.update(prefixed(backbone.state_dict(), f"module.{enc}.net."))
        sd.update({f"module.{enc}.head.linear1.weight": torch.randn(32, 64), f"module.{enc}.head.linear1.bias":
                   torch.randn(32), f"module.{enc}.head.linear2.weight": torch.randn(16, 32),
                   f"module.{enc}.head.linear2.bias": torch.randn(16)})
    sd.update({"module.queue": torch.randn(16, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 200},
               tmp_path / "ressl-resnet18-200.pth")
    model = load_backbone(tmp_path / "ressl-resnet18-200.pth")
    assert (model.info["format"], model.info["method"], model.info["epoch"]) == ("ressl", "ressl", 200)
    assert model.info["dropped"] == ["encoder_k", "encoder_q.head", "queue", "queue_ptr"]
    assert_same_backbone(model, net)


def test_ressl_query_encoder_saved_alone(tmp_path):
    """Assumed, not seen published: ReSSL's encoder_q (a BackBone: net + head) saved on its own."""
    net = small_net()
    torch.save({**prefixed(net.state_dict(), "net."), "head.linear1.weight": torch.randn(32, 64)}, tmp_path / "q.pth")
    model = load_backbone(tmp_path / "q.pth")
    assert model.info["format"] == "ressl" and model.info["dropped"] == ["head"]
    assert_same_backbone(model, net)


def solo_learn_checkpoint(path, net, **extra):
    """vturrisi/solo-learn: a Lightning checkpoint (trainer.save_checkpoint) of a momentum method (MoCo-v2+)."""
    sd = prefixed(net.state_dict(), "backbone.")
    sd.update(prefixed(small_net(net.stem, seed=1).state_dict(), "momentum_backbone."))
    for p in ("projector", "momentum_projector"):
        sd.update({f"{p}.0.weight": torch.randn(32, 64), f"{p}.0.bias": torch.randn(32),
                   f"{p}.2.weight": torch.randn(16, 32), f"{p}.2.bias": torch.randn(16)})
    sd.update({"classifier.weight": torch.randn(10, 64), "classifier.bias": torch.randn(10),
               "queue": torch.randn(2, 16, 32), "queue_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"epoch": 99, "global_step": 39100, "pytorch-lightning_version": "2.0.9", "state_dict": sd,
                "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 100}}}},
                "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None, "dirpath": "ckpts"}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.3, "params": [0]}]}],
                "lr_schedulers": [{"base_lrs": [0.3], "last_epoch": 39100, "warmup_epochs": 10}],
                "hparams_name": "cfg", "hyper_parameters": {"method": "mocov2plus", "backbone": {"name": "resnet18"}},
                **extra}, path)
    return path


def test_solo_learn_checkpoint(tmp_path):
    net = small_net("imagenet")
    model = load_backbone(solo_learn_checkpoint(tmp_path / "mocov2plus-imagenet-ep=99.ckpt", net))
    info = model.info
    assert (info["format"], info["method"], info["epoch"], info["step"]) == ("solo-learn", "mocov2plus", 99, 39100)
    assert info["dropped"] == ["classifier", "momentum_backbone", "momentum_projector", "projector", "queue",
                               "queue_ptr"]
    assert "conv1_padding" not in info and not info["ddp"]
    assert_same_backbone(model, net, size=64)


def test_solo_learn_cifar_checkpoint_keeps_its_conv1_padding(tmp_path):
    """solo-learn's CIFAR ResNet: conv1 3x3, stride 1, padding 2 (ours: padding 1), no max-pool."""
    net = small_net("cifar")
    model = load_backbone(solo_learn_checkpoint(tmp_path / "mocov2plus-cifar10-ep=99.ckpt", net))
    assert model.info["stem"] == "cifar" and model.info["conv1_padding"] == 2
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in net.state_dict().items())
    net.conv1.padding = (2, 2)  # what solo-learn computes with these weights
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.global_features(x), net.features(x))
        assert model.backbone(x).layer4.shape[-2:] == (5, 5)  # 32 px -> 34 after conv1 -> 17 -> 9 -> 5


def test_solo_learn_old_encoder_names(tmp_path):
    """solo-learn before its rename: encoder.* next to the online classifier."""
    net = small_net("imagenet")
    sd = {**prefixed(net.state_dict(), "encoder."), "classifier.weight": torch.randn(10, 64),
          "classifier.bias": torch.randn(10), "projector.0.weight": torch.randn(8, 64)}
    torch.save({"epoch": 9, "global_step": 90, "state_dict": sd}, tmp_path / "old.ckpt")
    model = load_backbone(tmp_path / "old.ckpt")
    assert model.info["format"] == "solo-learn" and model.info["dropped"] == ["classifier", "projector"]
    assert_same_backbone(model, net, size=64)


def sequential_backbone(net):
    """lightly's examples: ``nn.Sequential(*list(resnet.children())[:-1])`` of a torchvision ResNet, whose children
    are conv1, bn1, relu, maxpool, layer1-4, avgpool (fc dropped). Forwarding it is lightly's backbone."""
    return torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                               net.layer4, net.avgpool).eval()


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_lightly_sequential_backbone(tmp_path, stem):
    net = small_net(stem)
    seq = sequential_backbone(net)
    assert "backbone.4.0.conv1.weight" in prefixed(seq.state_dict(), "backbone.")  # the layout described above
    sd = {**prefixed(seq.state_dict(), "backbone."),
          **prefixed(sequential_backbone(small_net(stem, seed=1)).state_dict(), "backbone_momentum."),
          "projection_head.layers.0.weight": torch.randn(32, 64),
          "projection_head.layers.2.weight": torch.randn(16, 32)}
    torch.save(sd, tmp_path / "lightly.pth")
    model = load_backbone(tmp_path / "lightly.pth")
    assert model.info["format"] == "lightly" and model.info["dropped"] == ["backbone_momentum", "projection_head"]
    assert_same_backbone(model, net, size=64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.global_features(x), seq(x).flatten(start_dim=1))  # lightly's own forward
    torch.save(seq.state_dict(), tmp_path / "bare.pth")  # torch.save(model.backbone.state_dict(), ...)
    bare = load_backbone(tmp_path / "bare.pth")
    assert bare.info["format"] == "lightly"
    assert_same_backbone(bare, net)


def test_lightly_lightning_checkpoint_with_torchvision_names(tmp_path):
    """lightly's benchmarks: a LightningModule whose ``backbone`` is a torchvision ResNet with fc an Identity."""
    net = small_net("imagenet")
    sd = {**prefixed(net.state_dict(), "backbone."),
          **prefixed(small_net("imagenet", 1).state_dict(), "query_backbone."),
          "projection_head.layers.0.weight": torch.randn(32, 64),
          "online_classifier.classification_head.weight": torch.randn(10, 64)}
    torch.save({"epoch": 99, "global_step": 500, "state_dict": sd,
                "hyper_parameters": {"batch_size_per_device": 256, "num_classes": 10}}, tmp_path / "epoch=99.ckpt")
    model = load_backbone(tmp_path / "epoch=99.ckpt")
    assert (model.info["format"], model.info["epoch"], model.info["step"]) == ("lightly", 99, 500)
    assert model.info["dropped"] == ["online_classifier", "projection_head", "query_backbone"]
    assert_same_backbone(model, net, size=64)


def test_lightly_resnet_generator_is_refused(tmp_path):
    """lightly's own CIFAR ResNet (ResNetGenerator) has its layers in slots 2-5: not a torchvision ResNet."""
    sd = {"backbone.0.weight": torch.randn(8, 3, 3, 3), "backbone.1.weight": torch.ones(8),
          "backbone.2.0.conv1.weight": torch.randn(8, 8, 3, 3),
          "backbone.2.0.shortcut.0.weight": torch.randn(8, 8, 1, 1)}
    torch.save(sd, tmp_path / "generator.pth")
    with pytest.raises(CheckpointError, match=r"generator\.pth.*slot 2.*ResNetGenerator"):
        load_backbone(tmp_path / "generator.pth")


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model.state_dict", "state_dict.model", "ddp"])
def test_plain_wrappers_around_a_torchvision_state_dict(tmp_path, wrap):
    net = small_net()
    sd = {**net.state_dict(), "fc.weight": torch.randn(10, 64), "fc.bias": torch.randn(10)}
    if wrap == "ddp":
        obj = {"state_dict": prefixed(sd, "module."), "epoch": 5}
    else:
        obj = sd
        for key in reversed(wrap.split(".")):
            obj = {key: obj, "epoch": 5}
    torch.save(obj, tmp_path / "wrapped.pth")
    model = load_backbone(tmp_path / "wrapped.pth")
    assert (model.info["format"], model.info["epoch"], model.info["ddp"]) == ("torchvision", 5, wrap == "ddp")
    assert model.info["dropped"] == ["fc"]
    assert_same_backbone(model, net)


def test_authors_checkpoint_reports_what_it_dropped(tmp_path):
    net = small_net()
    torch.save({"net": {**prefixed(net.state_dict(), "module.encoder_q."), "module.queue": torch.zeros(4, 2)},
                "epoch": 7}, tmp_path / "a.pth.tar")
    model = load_backbone(tmp_path / "a.pth.tar")
    assert (model.info["format"], model.info["method"], model.info["ddp"]) == ("authors", "cgh", True)
    assert model.info["dropped"] == ["queue"]
    assert_same_backbone(model, net)


def test_unknown_layout_lists_what_was_looked_for(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": {"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "cls_token": torch.zeros(1, 1, 8)},
                "epoch": 3}, path)
    with pytest.raises(CheckpointError) as err:
        load_backbone(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    for name in ("cgh-checkpoint", "authors", "moco", "ressl", "solo-learn", "lightly", "torchvision"):
        assert f"{name} (" in message, name
    assert "encoder_q.conv1.weight" in message and "backbone.0.weight" in message
    assert "['state_dict', 'epoch']" in message and "['patch_embed.proj.weight', 'cls_token']" in message
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="a list, not a dict"):
        load_backbone(tmp_path / "list.pth")


def test_every_layout_is_read_with_weights_only(tmp_path, monkeypatch):
    net = small_net()
    files = [moco_v2_checkpoint(tmp_path / "moco.pth.tar", net), solo_learn_checkpoint(tmp_path / "solo.ckpt", net)]
    torch.save(prefixed(sequential_backbone(net).state_dict(), "backbone."), tmp_path / "lightly.pth")
    torch.save({"model": prefixed(net.state_dict(), "module.encoder_q.net.")}, tmp_path / "ressl.pth")
    files += [tmp_path / "lightly.pth", tmp_path / "ressl.pth"]
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    for f in files:
        load_backbone(f)
    assert calls == [True] * len(files)


# ---- Lightning metadata: inert stand-ins under weights_only=True -----------------------------------------------------


def fake_modules(monkeypatch, **classes):
    """Register classes under module paths (e.g. omegaconf.dictconfig.DictConfig) that are not installed here, so
    that a checkpoint can be pickled with the globals a real Lightning/omegaconf checkpoint has."""
    import sys
    import types

    made = {}
    for dotted, cls in classes.items():
        module, _, name = dotted.replace("__", ".").rpartition(".")
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod not in sys.modules or mod in made:
                made.setdefault(mod, types.ModuleType(mod))
                monkeypatch.setitem(sys.modules, mod, made[mod])
        cls.__module__, cls.__qualname__, cls.__name__ = module, name, name
        setattr(sys.modules[module], name, cls)
    return classes


def test_lightning_metadata_loads_with_stand_ins(tmp_path, monkeypatch):
    import argparse
    import pathlib
    import typing

    from cgh.checkpoints.files import load_file

    class DictConfig:  # what omegaconf's DictConfig pickles: its class, a metadata object, its content
        def __init__(self, content):
            self._metadata = Metadata()
            self._content = content

    class Metadata:
        def __init__(self):
            self.ref_type, self.object_type, self.key_type = typing.Any, dict, typing.Any

    class AttributeDict(dict):  # Lightning's hparams container
        pass

    fake_modules(monkeypatch, omegaconf__dictconfig__DictConfig=DictConfig, omegaconf__base__Metadata=Metadata,
                 lightning__fabric__utilities__data__AttributeDict=AttributeDict)
    cfg = DictConfig({"method": "mocov2plus", "data": DictConfig({"dataset": "cifar10"})})
    hparams = AttributeDict(cfg=cfg, args=argparse.Namespace(lr=0.3), logdir=pathlib.PurePosixPath("runs"),
                            method="byol")
    net = small_net()
    path = solo_learn_checkpoint(tmp_path / "byol.ckpt", net, hyper_parameters=hparams, hparams_type=DictConfig)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_file(path)  # plain weights_only=True refuses these globals
    model = load_backbone(path)
    assert model.info["format"] == "solo-learn" and model.info["method"] == "byol"  # the AttributeDict's items
    assert model.info["stood_in"] == sorted(["omegaconf.dictconfig.DictConfig", "omegaconf.base.Metadata",
                                             "lightning.fabric.utilities.data.AttributeDict", "argparse.Namespace",
                                             "pathlib.PurePosixPath", "typing.Any", "builtins.dict"])
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in net.state_dict().items())


def test_stand_ins_never_cover_code(tmp_path, monkeypatch):
    """A Lightning-looking checkpoint that hides code next to its metadata is still refused, and runs nothing."""
    from tests.helpers import RunsPython

    class Namespace:
        pass

    fake_modules(monkeypatch, omegaconf__dictconfig__DictConfig=Namespace)
    marker = tmp_path / "pwned"
    path = solo_learn_checkpoint(tmp_path / "evil.ckpt", small_net(),
                                 hyper_parameters={"cfg": Namespace(), "note": RunsPython(marker)})
    refused = r"refused to load .*evil\.ckpt.*not training metadata: \['builtins\.exec'\]"
    with pytest.raises(CheckpointError, match=refused):
        load_backbone(path)
    assert not marker.exists()


# ---- the evaluation commands ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["moco", "solo-learn"])
def test_cli_knn_reads_published_checkpoints(tmp_path, capsys, layout):
    import json

    from cgh.cli import main

    net = small_net()
    path = (moco_v2_checkpoint(tmp_path / "moco.pth.tar", net) if layout == "moco"
            else solo_learn_checkpoint(tmp_path / "solo.ckpt", net))
    code = main(["knn", str(path), "--dataset", "synthetic", "--data-option", "synthetic_size=30",
                 "--data-option", "synthetic_test_size=10", "--k", "3", "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    p = out["protocol"]
    assert p["checkpoint_format"] == layout and p["arch"] == "resnet18" and p["width"] == 8
    assert p["epoch"] == (200 if layout == "moco" else 99)
    assert 0 <= out["metrics"]["3"]["top1"] <= 100


# ---- what the feature methods take and give (issue 18 item 8) --------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_features_take_uint8_images_and_carry_no_gradient(one_step_runs):
    """A uint8 batch gave "expected scalar type Byte but found Float", and the features carried gradients."""
    model = load_backbone(one_step_runs["cgh"] / "checkpoints" / "last.pt")
    assert model.image_size == 32 and model.info["image_size"] == 32
    assert (model.mean, model.std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # the synthetic set's, from its config
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    normalised = (pixels.float() / 255 - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(
        1, 3, 1, 1)
    for kind in ("global", "hypercolumn", "hypercolumn_head"):
        from_uint8 = model.features(pixels, kind)
        with torch.enable_grad():
            from_float = model.features(normalised.double(), kind)  # cast to the weights' dtype
        assert torch.allclose(from_uint8, from_float, atol=1e-5), kind
        assert from_float.dtype == torch.float32 and not from_float.requires_grad and from_float.grad_fn is None
    assert not model.global_features(normalised.requires_grad_()).requires_grad
    assert not model.hypercolumn_map(pixels).requires_grad


def test_features_of_a_file_without_config_use_imagenet_statistics(tmp_path):
    torch.save(ResNet("resnet18", num_classes=0).state_dict(), tmp_path / "r18.pth")
    model = load_backbone(tmp_path / "r18.pth")
    assert model.image_size is None and model.mean == (0.485, 0.456, 0.406) and model.std == (0.229, 0.224, 0.225)
    assert model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 512)


@pytest.mark.parametrize("images, message", [
    (torch.zeros(2, 32, 32, 3, dtype=torch.uint8),
     r"^expected images of shape \(N, 3, H, W\), got \(2, 32, 32, 3\) "
     r"\(channels last: pass x\.permute\(0, 3, 1, 2\)\)$"),
    (torch.zeros(3, 32, 32),
     r"^expected images of shape \(N, 3, H, W\), got \(3, 32, 32\) \(one image: pass x\[None\]\)$"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.int64),
     r"^expected uint8 images in 0\.\.255 or float images normalised with mean \(0\.485, 0\.456, 0\.406\) and std "
     r"\(0\.229, 0\.224, 0\.225\), got dtype torch\.int64$"),
])
def test_wrong_images_are_a_value_error_saying_what_to_pass(tmp_path, images, message):
    torch.save(ResNet("resnet18", num_classes=0).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=message):
        load_backbone(tmp_path / "r18.pth").global_features(images)


# ---- the random-init baseline (issue 23 item 3) ----------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_random_init_backbone_is_the_runs_initial_encoder(tmp_path):
    """prepare_run seeds torch with cfg.seed and builds the method; random_init_backbone draws the same student
    backbone and hypercolumn head, bit for bit, and leaves the global RNG where it was."""
    from cgh.checkpoints.pretrained import random_init_backbone
    from cgh.train import prepare_run

    cfg = tiny_config(tmp_path / "run", "seed=7")
    run = prepare_run(cfg)
    run.log.close()
    state = torch.random.get_rng_state()
    model = random_init_backbone(tiny_config(tmp_path / "other", "seed=7"))
    assert torch.equal(torch.random.get_rng_state(), state)
    for ours, theirs in ((model.backbone, run.method.student.backbone), (model.hyper_head, run.method.student.hyper)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert model.info["format"] == "random-init" and model.info["seed"] == 7 and not model.training
    other = random_init_backbone(cfg, seed=8).backbone.state_dict()
    assert not torch.equal(other["conv1.weight"], model.backbone.state_dict()["conv1.weight"])


@pytest.mark.usefixtures("one_torch_thread")
def test_knn_random_init_is_the_demos_and_the_monitors_epoch_0(tmp_path, capsys):
    """`cgh knn CKPT --random-init --json` gives the number the demo reports for its seed's random init and the run's
    epoch-0 kNN monitor value; the BN statistics of the random encoder are not moved by the evaluation."""
    import json

    from cgh.checkpoints.pretrained import random_init_backbone
    from cgh.cli import main
    from cgh.demo import Encoder, demo_config, evaluate_encoder, method_config
    from cgh.evaluate.features import extract_features

    cfg = demo_config(True, 1, ["data.synthetic_size=256", "data.synthetic_test_size=128", "train.max_steps=1",
                                "train.progress=false", "method.queue_size=128"])
    run_dir = tmp_path / "cgh"
    pretrain(method_config(cfg, "cgh", run_dir))
    epoch0 = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][1]
    assert epoch0["epoch"] == 0 and "knn_top1" in epoch0
    capsys.readouterr()
    k = cfg.train.knn_k
    assert main(["knn", str(run_dir), "--random-init", "--json", "--k", str(k), "--temperature",
                 str(cfg.train.knn_t)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"]["random_init"] is True and out["protocol"]["init_seed"] == 1
    assert out["protocol"]["epoch"] == 0 and out["protocol"]["checkpoint_format"] == "random-init"
    random = Encoder("random", random_init_backbone(cfg))
    demo = evaluate_encoder(random, *(cfg_split(cfg, s) for s in ("train", "test")), cfg, 10, log=lambda *a: None)
    assert out["metrics"][str(k)]["top1"] == demo["knn_top1"] == epoch0["knn_top1"]
    # the trained weights give another number, and --init-seed another initialisation
    assert main(["knn", str(run_dir), "--json", "--k", str(k)]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"]["random_init"] is False
    assert main(["knn", str(run_dir), "--random-init", "--init-seed", "2", "--k", str(k)]) == 0
    assert "random init (seed 2) of cgh resnet18" in capsys.readouterr().out
    # evaluation in eval mode reads the BN statistics of initialisation and leaves them
    model = random_init_backbone(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extract_features(model, cfg_split(cfg, "test"), "global", image_size=32, mean=model.mean, std=model.std)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def cfg_split(cfg, split):
    from cgh.data import open_split

    return open_split(cfg, split)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("command, extra", [("linear", ["--epochs", "2"]), ("cluster", []),
                                            ("knn", ["--k", "5"])])
def test_evaluation_commands_take_random_init_from_a_checkpoint_or_a_preset(one_step_runs, capsys, command, extra):
    import json

    from cgh.cli import main

    small = ["--data-option", "synthetic_size=64", "--data-option", "synthetic_test_size=32"]
    assert main([command, str(one_step_runs["cgh"]), "--random-init", "--json", *extra]) == 0
    p = json.loads(capsys.readouterr().out)["protocol"]
    assert (p["random_init"], p["init_seed"], p["arch"], p["width"], p["epoch"]) == (True, 0, "resnet18", 8, 0)
    assert main([command, "--random-init", "--preset", "demo", "--init-seed", "3", *small, *extra]) == 0
    assert "random init (seed 3) of cgh resnet18" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["knn"], r"give a checkpoint \(runs/x/checkpoints/last\.pt or its run directory runs/x\), or --random-init "
              r"--preset NAME"),
    (["knn", "--random-init"], r"give a checkpoint"),
    (["knn", "RUN", "--preset", "demo"], r"--preset chooses the random initialisation that --random-init "
                                         r"evaluates; add --random-init"),
    (["knn", "RUN", "--init-seed", "3"], r"--init-seed chooses"),
    (["knn", "RUN", "--random-init", "--preset", "demo"], r"give a checkpoint or --preset, not both"),
    (["knn", "--random-init", "--preset", "dem"], r"unknown preset 'dem'; presets: .* \(did you mean 'demo'\?\)"),
    (["linear", "RUN", "--random-init", "--which", "student", "--features", "hypercolumn_head", "--epochs", "1"],
     r"the random-init mocov2 encoder has no hypercolumn head"),
])
def test_random_init_errors_say_what_to_give(one_step_runs, capsys, argv, message):
    from cgh.cli import main
    from tests.helpers import one_error_line

    argv = [str(one_step_runs["mocov2"]) if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    assert re.search(message, one_error_line(capsys.readouterr().err))


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("method", ["byol", "simsiam", "simclr"])
def test_symmetric_methods_checkpoints_load_export_and_evaluate(tmp_path, method, capsys):
    """A one-step run of BYOL, SimSiam or SimCLR: its checkpoint loads (student; the teacher is BYOL's target, and
    the student itself for the methods without a momentum encoder), exports to torchvision and serves cgh knn."""
    import json

    from cgh.cli import main

    run = tmp_path / "run"
    pretrain(tiny_config(run, f"method.name={method}", "train.max_steps=1", "optim.epochs=1",
                         "aug.teacher_view=strong"))
    student = load_backbone(run)
    teacher = load_backbone(run, which="teacher")
    assert student.info["method"] == method and student.hyper_head is None
    assert teacher.info["which"] == ("teacher" if method == "byol" else "student")
    assert same_features(student, teacher) == (method != "byol")  # BYOL's target has not moved with the student
    out = tmp_path / "tv.pth"
    assert main(["export", str(run), "--format", "torchvision", "--out", str(out)]) == 0
    assert set(torch.load(out, weights_only=True)) >= {"conv1.weight", "layer4.1.bn2.running_var"}
    capsys.readouterr()
    assert main(["knn", str(run), "--k", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["metrics"]["5"]["top1"] <= 100 and result["protocol"]["method"] == method
