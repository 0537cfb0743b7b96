"""``cgh export``: key sets against torchvision's and detectron2's naming, round trips, the CLI, and detection/."""

from __future__ import annotations

import json
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import cgh
from cgh.backbone import ARCHS, ResNet
from cgh.checkpoint import FORMAT
from cgh.cli import main
from cgh.errors import CGHError, CheckpointError
from cgh.export import (
    compatibility_warnings,
    export_backbone,
    from_detectron2,
    load_detectron2,
    to_detectron2,
    torchvision_state_dict,
)
from tests.conftest import REPO, TORCHVISION_SHAPES

TV_DIR = TORCHVISION_SHAPES
BN = ("weight", "bias", "running_mean", "running_var")


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights AND random BN statistics, so a round trip that mixed up any two tensors would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return model.eval()


def _tiny(stem: str = "cifar", arch: str = "resnet18", seed: int = 0) -> ResNet:
    return _randomize(ResNet(arch, stem=stem, width=8), seed)


def expected_detectron2_keys(arch: str) -> set[str]:
    """detectron2's ResNet parameter names (detectron2/modeling/backbone/resnet.py: BasicStem has ``conv1`` with a
    ``norm``; stages ``res2..res5`` of blocks with ``conv1..conv3`` (bottleneck) or ``conv1..conv2`` (basic), each a
    Conv2d with a ``norm``, and ``shortcut`` (+ ``norm``) on a block whose input and output shapes differ). FrozenBN
    and SyncBN checkpoints carry weight, bias, running_mean and running_var, no num_batches_tracked."""
    kind, depths = ARCHS[arch]
    convs = 3 if kind == "bottleneck" else 2

    def conv(prefix: str) -> list[str]:
        return [f"{prefix}.weight"] + [f"{prefix}.norm.{p}" for p in BN]

    keys = conv("stem.conv1")
    for stage, depth in enumerate(depths, start=2):
        for block in range(depth):
            for c in range(1, convs + 1):
                keys += conv(f"res{stage}.{block}.conv{c}")
            # Block 0 of a stage changes the shape, except res2 of the basic-block nets (64 -> 64, stride 1).
            if block == 0 and (kind == "bottleneck" or stage > 2):
                keys += conv(f"res{stage}.{block}.shortcut")
    return set(keys)


# ---- torchvision -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_keys_and_shapes_match_reference_minus_fc(arch):
    ref = json.loads((TV_DIR / f"{arch}_state_dict_shapes.json").read_text())
    ref = {k: v for k, v in ref.items() if not k.startswith("fc.")}
    sd = torchvision_state_dict(ResNet(arch))
    assert list(sd) == list(ref)  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == ref
    # torchvision's load_state_dict(strict=False) on this dict would report exactly fc.weight and fc.bias missing.
    full = json.loads((TV_DIR / f"{arch}_state_dict_shapes.json").read_text())
    assert set(full) - set(sd) == {"fc.weight", "fc.bias"}


def test_torchvision_round_trip_through_load_backbone(tmp_path):
    model = _tiny()
    path = tmp_path / "tv.pth"
    summary = export_backbone(model, "torchvision", path)
    assert summary["num_tensors"] == len(model.state_dict())
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith("fc.") for k in raw)
    loaded = cgh.load_backbone(path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.features(x, "global"), model.features(x))
    assert loaded.info["arch"] == "resnet18" and loaded.info["stem"] == "cifar" and loaded.info["width"] == 8


def test_warnings_for_cifar_stem_and_width():
    assert compatibility_warnings(ResNet("resnet18"), "torchvision") == []
    warns = compatibility_warnings(_tiny("cifar"), "torchvision")
    assert len(warns) == 2
    assert "3x3" in warns[0] and "width 8" in warns[1]
    assert any("RESNETS.DEPTH 18" in w for w in compatibility_warnings(ResNet("resnet18"), "detectron2"))


# ---- detectron2 ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet101"])
def test_detectron2_key_set(arch):
    model = ResNet(arch, width=4)
    d2 = to_detectron2(torchvision_state_dict(model))
    assert set(d2) == expected_detectron2_keys(arch)
    assert all(isinstance(v, np.ndarray) for v in d2.values())


def test_detectron2_sample_names():
    d2 = to_detectron2(torchvision_state_dict(ResNet("resnet50", width=4)))
    for key in ("stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight",
                "res2.0.shortcut.norm.bias", "res3.3.conv3.norm.weight", "res5.2.conv2.weight"):
        assert key in d2
    assert not any("num_batches_tracked" in k or "fc" in k or "layer" in k or "bn" in k for k in d2)


def test_detectron2_file_and_round_trip(tmp_path):
    model = _tiny("imagenet", "resnet50")
    path = tmp_path / "d2.pkl"
    export_backbone(model, "detectron2", path)
    with open(path, "rb") as f:  # what detectron2 does with a .pkl (plain pickle, latin1 for Python-2 files)
        obj = pickle.load(f, encoding="latin1")
    assert obj["__author__"] == "cgh" and obj["matching_heuristics"] is True
    # Portable across numpy versions: the file names no numpy._core / numpy.core global (numpy < 1.26.1 lacks _core).
    globals_used = {arg for op, arg, _ in pickletools.genops(path.read_bytes()) if op.name == "SHORT_BINUNICODE"}
    assert "numpy" in globals_used and not any("core" in str(g) for g in globals_used)
    assert set(obj["model"]) == expected_detectron2_keys("resnet50")
    sd = from_detectron2(load_detectron2(path)["model"])
    back = ResNet("resnet50", stem="imagenet", width=8)
    back.load_state_dict(sd, strict=True)
    back.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.features(x), model.features(x))


def test_detectron2_requires_pkl(tmp_path):
    with pytest.raises(CGHError, match=r"\.pkl"):
        export_backbone(_tiny(), "detectron2", tmp_path / "d2.pth")


def test_load_detectron2_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": Evil()}}))
    with pytest.raises(CheckpointError, match="refusing"):
        load_detectron2(path)


def test_atomic_write_leaves_no_temporary(tmp_path):
    export_backbone(_tiny(), "torchvision", tmp_path / "a.pth")
    export_backbone(_tiny(), "detectron2", tmp_path / "a.pkl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pkl", "a.pth"]


# ---- command line ----------------------------------------------------------------------------------------------------


def _cgh_checkpoint(path: Path) -> tuple[ResNet, ResNet]:
    """A minimal cgh-format checkpoint (the fields load_backbone reads) with different student and teacher."""
    student, teacher = _tiny(seed=1), _tiny(seed=2)
    model = {f"student.backbone.{k}": v for k, v in student.state_dict().items()}
    model.update({f"teacher.backbone.{k}": v for k, v in teacher.state_dict().items()})
    model["student.head.0.weight"] = torch.zeros(4, 64)  # a projection head: must not be exported
    torch.save({"format": FORMAT, "version": 1, "config": {}, "method": "mocov2", "arch": "resnet18", "epoch": 3,
                "step": 30, "model": model}, path)
    return student, teacher


def test_cli_export_teacher_json_and_warnings(tmp_path, capsys):
    ckpt = tmp_path / "last.pt"
    _, teacher = _cgh_checkpoint(ckpt)
    assert main(["export", str(ckpt), "--format", "torchvision", "--which", "teacher", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    out = tmp_path / "last_torchvision.pth"
    assert result["out"] == str(out) and result["epoch"] == 3 and result["which"] == "teacher"
    assert result["method"] == "mocov2" and result["format"] == "torchvision" and len(result["warnings"]) == 2
    assert "warning:" in captured.err and "3x3" in captured.err
    sd = torch.load(out, weights_only=True)
    assert set(sd) == set(teacher.state_dict())
    assert all(torch.equal(sd[k], v) for k, v in teacher.state_dict().items())


def test_cli_export_authors_checkpoint_to_detectron2(tmp_path, capsys):
    model = _tiny("imagenet", "resnet50")
    net = {f"module.encoder_q.{k}": v for k, v in model.state_dict().items()}
    net["module.encoder_q.fc.0.weight"] = torch.zeros(8, 32)  # the authors' MLP head, leaked by their converter
    src = tmp_path / "checkpoint.pth.tar"
    torch.save({"net": net, "epoch": 200}, src)
    out = tmp_path / "out" / "cgh_r50.pkl"
    assert main(["export", str(src), "--format", "detectron2", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "detectron2" in line and str(out) in line and "epoch 200" in line
    d2 = load_detectron2(out)["model"]
    assert set(d2) == expected_detectron2_keys("resnet50")  # no stem.fc.*


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.pt"), "--format", "torchvision"]) == 2
    assert "not found" in capsys.readouterr().err
    path = tmp_path / "tv.pth"
    export_backbone(_tiny(), "torchvision", path)
    assert main(["export", str(path), "--format", "torchvision", "--out", str(path)]) == 2
    assert "overwrite" in capsys.readouterr().err


# ---- detection/ configs ----------------------------------------------------------------------------------------------

DETECTION = REPO / "detection"


def _resolved(name: str) -> dict:
    """A config merged with its _BASE_ chain (base first), as detectron2's get_cfg().merge_from_file does."""
    path = DETECTION / name
    cfg = yaml.safe_load(path.read_text())
    base = cfg.pop("_BASE_", None)
    merged: dict = {}
    if base is not None:
        assert (path.parent / base).is_file(), f"{name}: _BASE_ {base} does not exist"
        merged = _resolved(str((path.parent / base).relative_to(DETECTION)))

    def deep(a: dict, b: dict) -> dict:
        for k, v in b.items():
            a[k] = deep(a.get(k, {}), v) if isinstance(v, dict) else v
        return a

    return deep(merged, cfg)


def test_detection_configs():
    voc = _resolved("pascal_voc_R_50_C4_24k_cgh.yaml")
    coco = _resolved("coco_R_50_C4_1x_cgh.yaml")
    for cfg in (voc, coco):  # the shared base (SPEC 5.6)
        m = cfg["MODEL"]
        assert m["RESNETS"]["NORM"] == "SyncBN" and m["BACKBONE"]["FREEZE_AT"] == 0
        assert m["RESNETS"]["STRIDE_IN_1X1"] is False and m["RESNETS"]["DEPTH"] == 50
        assert m["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
        assert m["PIXEL_MEAN"] == [123.675, 116.28, 103.53] and m["PIXEL_STD"] == [58.395, 57.12, 57.375]
        assert cfg["INPUT"]["FORMAT"] == "RGB" and cfg["INPUT"]["MIN_SIZE_TEST"] == 800
        assert cfg["SOLVER"]["IMS_PER_BATCH"] == 16 and cfg["SOLVER"]["BASE_LR"] == 0.02
        assert cfg["SOLVER"]["REFERENCE_WORLD_SIZE"] == 8  # the numbers above are for 8 GPUs (README: fewer GPUs)
        assert cfg["SOLVER"]["AMP"]["ENABLED"] is True and cfg["TEST"]["PRECISE_BN"]["ENABLED"] is True
        assert m["RPN"]["PRE_NMS_TOPK_TEST"] == 6000 and m["RPN"]["POST_NMS_TOPK_TEST"] == 1000
    assert voc["DATASETS"]["TRAIN"] == ["voc_2007_trainval", "voc_2012_trainval"]
    assert voc["DATASETS"]["TEST"] == ["voc_2007_test"]
    assert voc["INPUT"]["MIN_SIZE_TRAIN"] == list(range(480, 801, 32))
    assert voc["SOLVER"]["STEPS"] == [18000, 22000] and voc["SOLVER"]["MAX_ITER"] == 24000
    assert voc["SOLVER"]["WARMUP_ITERS"] == 100 and voc["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 20
    assert not voc["MODEL"].get("MASK_ON", False)
    assert coco["DATASETS"]["TRAIN"] == ["coco_2017_train"] and coco["DATASETS"]["TEST"] == ["coco_2017_val"]
    assert coco["INPUT"]["MIN_SIZE_TRAIN"] == list(range(640, 801, 32))
    assert coco["SOLVER"]["STEPS"] == [60000, 80000] and coco["SOLVER"]["MAX_ITER"] == 90000
    assert coco["MODEL"]["MASK_ON"] is True


def test_detection_train_net_is_valid_python():
    source = (DETECTION / "train_net.py").read_text()
    compile(source, "train_net.py", "exec")  # detectron2 is not importable here; at least the syntax must hold
    assert "Res5ROIHeadsExtraNorm" in source and "ROI_HEADS_REGISTRY" in source
