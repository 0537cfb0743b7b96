"""``cgh export``: key sets against torchvision's and detectron2's naming, round trips, the CLI, and detection/."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import pickle
import pickletools
import runpy
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import cgh
from cgh.checkpoints.export import (
    compatibility_warnings,
    export_backbone,
    from_detectron2,
    load_detectron2,
    to_detectron2,
    torchvision_state_dict,
)
from cgh.checkpoints.files import FORMAT
from cgh.cli import main
from cgh.errors import CGHError, CheckpointError
from cgh.model.backbone import ResNet
from tests.helpers import REPO, TORCHVISION_SHAPES
from tests.reference import expected_detectron2_keys

TV_DIR = TORCHVISION_SHAPES


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
    for cfg in (voc, coco):  # the shared base (docs/evaluation.md#detection)
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


# ---- detection/train_net.py, run over stub detectron2 modules --------------------------------------------------------

# detectron2's builtin dataset registration sets these evaluator types (detectron2/data/datasets/builtin.py).
EVALUATOR_TYPES = {"voc_2007_test": "pascal_voc", "coco_2017_val": "coco", "lvis_v1_val": "lvis"}


def _detectron2_stubs(monkeypatch) -> SimpleNamespace:
    """Stand-ins for exactly the detectron2 names detection/train_net.py imports, put into sys.modules with
    ``monkeypatch`` (removed again after the test). They record how the script calls them (``calls``); the two that
    the script builds on behave like detectron2's: ``Registry.register()`` (fvcore's decorator form) and
    ``Res5ROIHeads._build_res5_block(cfg)``, which returns (nn.Sequential of the res5 blocks, their output channels
    = MODEL.RESNETS.RES2_OUT_CHANNELS * 8). The blocks are two 1x1 convolutions with a ReLU, not bottlenecks."""
    calls: dict[str, list] = {}

    def record(name, *args, **kwargs):
        calls.setdefault(name, []).append((args, kwargs) if kwargs else args)

    class Registry:
        def __init__(self, name):
            self.name, self.objects = name, {}

        def register(self, obj=None):
            def deco(cls):
                assert cls.__name__ not in self.objects, f"{cls.__name__} already registered in {self.name}"
                self.objects[cls.__name__] = cls
                return cls
            return deco if obj is None else deco(obj)

        def get(self, name):
            return self.objects[name]

    class Res5ROIHeads(torch.nn.Module):
        @classmethod
        def _build_res5_block(cls, cfg):
            out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 2**3
            blocks = [torch.nn.Conv2d(out_channels // 2, out_channels, 1, bias=False), torch.nn.ReLU(),
                      torch.nn.Conv2d(out_channels, out_channels, 1, bias=False)]
            return torch.nn.Sequential(*blocks), out_channels

    def get_norm(norm, out_channels):
        record("get_norm", norm, out_channels)
        return {"BN": torch.nn.BatchNorm2d, "SyncBN": torch.nn.BatchNorm2d}[norm](out_channels)  # SyncBN: one process

    class Recorder:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class DefaultTrainer:
        instances: list = []

        def __init__(self, cfg):
            self.cfg, self.calls = cfg, []
            DefaultTrainer.instances.append(self)

        def resume_or_load(self, resume=True):
            self.calls.append(("resume_or_load", resume))

        def train(self):
            self.calls.append(("train",))
            return "trained"

        @classmethod
        def build_model(cls, cfg):
            record("build_model", cfg)
            return torch.nn.Linear(1, 1)

        @classmethod
        def test(cls, cfg, model):
            record("test", cfg, model)
            return {"bbox": {"AP": 0.0}}

    class DetectionCheckpointer(Recorder):
        def resume_or_load(self, path, *, resume=True):
            record("checkpointer", self.args, self.kwargs, path, resume)

    class Cfg:
        def __init__(self):
            self.calls, self.OUTPUT_DIR, self.MODEL = [], "", SimpleNamespace(WEIGHTS="")

        def merge_from_file(self, path):
            self.calls.append(("merge_from_file", path))

        def merge_from_list(self, opts):
            self.calls.append(("merge_from_list", list(opts)))
            for key, value in zip(opts[::2], opts[1::2], strict=True):
                *parents, leaf = key.split(".")
                node = self
                for part in parents:
                    node = getattr(node, part)
                setattr(node, leaf, value)

        def freeze(self):
            self.calls.append(("freeze",))

    def get_cfg():
        cfg = Cfg()
        record("get_cfg", cfg)
        return cfg

    def default_argument_parser():  # detectron2.engine.defaults.default_argument_parser's arguments
        parser = argparse.ArgumentParser()
        parser.add_argument("--config-file", default="", metavar="FILE")
        parser.add_argument("--resume", action="store_true")
        parser.add_argument("--eval-only", action="store_true")
        parser.add_argument("--num-gpus", type=int, default=1)
        parser.add_argument("--num-machines", type=int, default=1)
        parser.add_argument("--machine-rank", type=int, default=0)
        parser.add_argument("--dist-url", default="tcp://127.0.0.1:50152")
        parser.add_argument("opts", default=None, nargs=argparse.REMAINDER)
        return parser

    def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=()):
        record("launch", main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
               dist_url=dist_url, args=args)
        return main_func(*args)  # what detectron2's launch does on one machine after spawning a process per GPU

    names = {
        "detectron2.checkpoint": {"DetectionCheckpointer": DetectionCheckpointer},
        "detectron2.config": {"get_cfg": get_cfg},
        "detectron2.data": {"MetadataCatalog": SimpleNamespace(
            get=lambda name: SimpleNamespace(evaluator_type=EVALUATOR_TYPES[name]))},
        "detectron2.engine": {"DefaultTrainer": DefaultTrainer, "default_argument_parser": default_argument_parser,
                              "default_setup": lambda cfg, args: record("default_setup", cfg, args),
                              "launch": launch},
        "detectron2.evaluation": {"COCOEvaluator": type("COCOEvaluator", (Recorder,), {}),
                                  "PascalVOCDetectionEvaluator": type("PascalVOCDetectionEvaluator", (Recorder,), {})},
        "detectron2.layers": {"get_norm": get_norm},
        "detectron2.modeling.roi_heads": {"ROI_HEADS_REGISTRY": Registry("ROI_HEADS"), "Res5ROIHeads": Res5ROIHeads},
    }
    # The stubs are exactly what the script imports from detectron2: a new import would need a new stub here.
    tree = ast.parse((DETECTION / "train_net.py").read_text())
    imported = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module.split(".")[0] == "detectron2" for a in n.names}
    assert not any(isinstance(n, ast.Import) and any(a.name.startswith("detectron2") for a in n.names)
                   for n in ast.walk(tree))
    assert imported == {(module, name) for module, attrs in names.items() for name in attrs}
    for module in ("detectron2", "detectron2.modeling", *names):
        stub = types.ModuleType(module)
        for name, value in names.get(module, {}).items():
            setattr(stub, name, value)
        monkeypatch.setitem(sys.modules, module, stub)
    flat = {name: value for attrs in names.values() for name, value in attrs.items()}
    return SimpleNamespace(calls=calls, trainers=DefaultTrainer.instances, **flat)


def _train_net_module(monkeypatch):
    """detection/train_net.py imported as a module (not run as a script) over fresh stubs."""
    d2 = _detectron2_stubs(monkeypatch)
    spec = importlib.util.spec_from_file_location("train_net", DETECTION / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return d2, module


def _namespace(d: dict) -> SimpleNamespace:
    return SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in d.items()})


def test_detection_train_net_is_valid_python(monkeypatch):
    """detection/train_net.py runs (over stub detectron2 modules, detectron2 not being installable here) and does what
    it says: ``Res5ROIHeadsExtraNorm``, the ROI heads the configs name, is registered in ROI_HEADS_REGISTRY as a
    Res5ROIHeads whose res5 block gains ONE norm layer, of MODEL.RESNETS.NORM (SyncBN) over res5's output channels,
    after the res5 blocks and newly initialised (the exported weights have none for it), so that the box predictor
    sees activations whose scale no longer depends on the pretraining.

    Not exercised, as it needs detectron2 itself: that the real ``Res5ROIHeads._build_res5_block`` returns
    (nn.Sequential, out_channels) like the stub, that ``get_norm("SyncBN", C)`` builds a working SyncBN (the stub
    gives a BatchNorm2d: one process), the real registry, and any training or evaluation."""
    d2, train_net = _train_net_module(monkeypatch)
    heads = train_net.Res5ROIHeadsExtraNorm
    for name in ("pascal_voc_R_50_C4_24k_cgh.yaml", "coco_R_50_C4_1x_cgh.yaml"):
        assert d2.ROI_HEADS_REGISTRY.get(_resolved(name)["MODEL"]["ROI_HEADS"]["NAME"]) is heads
    assert issubclass(heads, d2.Res5ROIHeads) and heads is not d2.Res5ROIHeads

    cfg = _namespace(_resolved("pascal_voc_R_50_C4_24k_cgh.yaml"))
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 4  # detectron2's default is 256: res5 would have 2048 channels
    plain, plain_channels = d2.Res5ROIHeads._build_res5_block(cfg)
    res5, channels = heads._build_res5_block(cfg)
    assert channels == plain_channels == 32
    assert [n for n, _ in res5.named_children()] == [n for n, _ in plain.named_children()] + ["norm"]
    assert [type(m) for m in res5[:-1]] == [type(m) for m in plain]
    assert d2.calls["get_norm"] == [(cfg.MODEL.RESNETS.NORM, 32)] and cfg.MODEL.RESNETS.NORM == "SyncBN"
    norm = res5.norm
    assert isinstance(norm, torch.nn.BatchNorm2d) and norm.num_features == 32
    assert torch.equal(norm.weight, torch.ones(32)) and torch.equal(norm.bias, torch.zeros(32))  # a fresh layer
    exported = to_detectron2(torchvision_state_dict(ResNet("resnet50", width=4)))
    assert exported and not any(k.startswith(("res5.norm", "roi_heads")) for k in exported)

    # What the norm is for: res5's output no longer depends on the scale of its activations (training-mode BN).
    x = torch.randn(8, 16, 5, 5)
    res5.train()
    with torch.no_grad():
        before, plain_before = res5(x), plain(x)
        for block in (res5, plain):
            for m in block.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.weight.mul_(10)
        torch.testing.assert_close(res5(x), before, rtol=1e-2, atol=1e-2)  # up to BN's eps; unit-variance outputs
        torch.testing.assert_close(plain(x), 100 * plain_before, rtol=1e-4, atol=1e-4)  # without it: 100x


def test_detection_train_net_evaluators_setup_and_main(monkeypatch, tmp_path):
    """The rest of detection/train_net.py over the same stubs: the evaluator chosen per test set, ``setup`` merging
    the config file then the command-line options before freezing, and ``main`` training or (``--eval-only``)
    loading MODEL.WEIGHTS and testing, run as a script through detectron2's ``launch``. As above, detectron2's
    own DefaultTrainer, evaluators and launch are stubs: their behaviour is not tested here."""
    d2, train_net = _train_net_module(monkeypatch)
    trainer = train_net.Trainer
    assert issubclass(trainer, d2.DefaultTrainer)
    cfg = SimpleNamespace(OUTPUT_DIR=str(tmp_path / "out"))
    (voc_test,) = _resolved("pascal_voc_R_50_C4_24k_cgh.yaml")["DATASETS"]["TEST"]
    (coco_test,) = _resolved("coco_R_50_C4_1x_cgh.yaml")["DATASETS"]["TEST"]
    voc = trainer.build_evaluator(cfg, voc_test)
    assert isinstance(voc, d2.PascalVOCDetectionEvaluator) and (voc.args, voc.kwargs) == ((voc_test,), {})
    coco = trainer.build_evaluator(cfg, coco_test)
    assert isinstance(coco, d2.COCOEvaluator) and coco.args == (coco_test,)
    assert coco.kwargs == {"output_dir": str(tmp_path / "out" / "inference")}
    assert trainer.build_evaluator(cfg, coco_test, output_folder="elsewhere").kwargs == {"output_dir": "elsewhere"}
    with pytest.raises(NotImplementedError, match=r"lvis_v1_val.*'lvis'"):
        trainer.build_evaluator(cfg, "lvis_v1_val")

    # As a script, the way detection/README.md runs it.
    d2 = _detectron2_stubs(monkeypatch)  # fresh stubs: the script registers its heads once more
    config = str(DETECTION / "pascal_voc_R_50_C4_24k_cgh.yaml")
    opts = ["MODEL.WEIGHTS", "cgh_r50_detectron2.pkl", "OUTPUT_DIR", str(tmp_path / "voc")]
    monkeypatch.setattr(sys, "argv", ["train_net.py", "--config-file", config, "--num-gpus", "8", *opts])
    script = runpy.run_path(str(DETECTION / "train_net.py"), run_name="__main__")
    ((main_func, gpus), launched), = d2.calls["launch"]
    args = launched["args"][0]
    assert main_func is script["main"] and gpus == 8 and launched == {
        "num_machines": 1, "machine_rank": 0, "dist_url": args.dist_url, "args": (args,)}
    (cfg,), = d2.calls["get_cfg"]
    assert cfg.calls == [("merge_from_file", config), ("merge_from_list", opts), ("freeze",)]
    assert d2.calls["default_setup"] == [(cfg, args)]
    (run,) = d2.trainers
    assert type(run) is script["Trainer"] and run.cfg is cfg and run.calls == [("resume_or_load", False), ("train",)]

    # --eval-only --resume: the weights are loaded into a freshly built model, which is tested; nothing trains.
    args = script["default_argument_parser"]().parse_args(["--config-file", config, "--eval-only", "--resume", *opts])
    assert script["main"](args) == {"bbox": {"AP": 0.0}}
    cfg = d2.calls["get_cfg"][-1][0]
    ((model_cfg,),) = d2.calls["build_model"]
    (((model,), checkpointer_kwargs, weights, resume),) = d2.calls["checkpointer"]
    assert model_cfg is cfg and checkpointer_kwargs == {"save_dir": str(tmp_path / "voc")}
    assert weights == "cgh_r50_detectron2.pkl" and resume is True
    assert d2.calls["test"] == [(cfg, model)] and len(d2.trainers) == 1  # no new trainer
