"""A pretrained backbone in torchvision or detectron2 format (``cgh export``, in cgh.commands.export).

Input: any file ``cgh.load_backbone`` reads (a ``cgh pretrain`` checkpoint, ``--which student|teacher``; a torchvision
state dict; the authors' ``{"net": ...}`` checkpoints). Only the backbone is exported: projection heads, the CGH
hypercolumn head and the queues are pretraining machinery and are dropped.

- ``torchvision``: ``torch.save`` of the plain backbone state dict. Its keys are exactly those of
  ``torchvision.models.resnetNN().state_dict()`` minus ``fc.*``, so ``model.load_state_dict(sd, strict=False)`` reports
  only ``fc.weight`` and ``fc.bias`` missing (what the authors' linear probe asserts, docs/evaluation.md#linear-probe).
- ``detectron2``: the conversion of docs/evaluation.md#detection (MoCo's ``convert-pretrain-to-detectron2.py``):
  ``stem.conv1``, ``stem.conv1.norm``, ``layerN`` -> ``res{N+1}``, ``bnK`` -> ``convK.norm``, ``downsample.0/1`` ->
  ``shortcut`` / ``shortcut.norm``, numpy arrays, pickled as ``{"model": ..., "__author__": "cgh",
  "matching_heuristics": True}``. Unlike the authors' converter we drop the projection MLP (theirs leaks it as
  ``stem.fc.*``, which detectron2 then reports as unused) and BN's ``num_batches_tracked`` counters (detectron2's
  checkpoints carry none).

Files are written to a temporary name and renamed, so an interrupted export never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgh.checkpoints.files import write_atomic
from cgh.errors import CGHError, CheckpointError
from cgh.model.backbone import ResNet

FORMATS = ("torchvision", "detectron2")
TORCHVISION_WIDTH = 64  # torchvision's (and detectron2's R50) stem width; other widths do not fit their constructors
D2_AUTHOR = "cgh"
_BN_BUFFER = "num_batches_tracked"
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


# ---- torchvision ---------------------------------------------------------------------------------------------------


def torchvision_state_dict(backbone: ResNet) -> dict[str, torch.Tensor]:
    """The backbone's state dict with torchvision's names, without ``fc``: contiguous CPU copies (no shared storage
    with the live model, so saving writes only these tensors)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in backbone.state_dict().items()
            if not k.startswith("fc.")}


def compatibility_warnings(backbone: ResNet, fmt: str) -> list[str]:
    """Reasons the target library's own constructor will not accept this backbone as is (empty when it will)."""
    out = []
    target = {"torchvision": f"torchvision.models.{backbone.arch}()", "detectron2": "detectron2's ResNet"}[fmt]
    if backbone.stem == "cifar":
        out.append(f"this backbone has the CIFAR stem (3x3 stride-1 conv1, no max-pool, docs/method.md#backbone): "
                   f"{target} has a 7x7 "
                   f"stride-2 conv1, so conv1.weight will not load until conv1 is replaced by a 3x3 conv "
                   f"(and the max-pool by an identity)")
    if backbone.width != TORCHVISION_WIDTH:
        out.append(f"this backbone has width {backbone.width}, not {TORCHVISION_WIDTH}: every tensor's channel count "
                   f"differs from {target}'s (expected width {TORCHVISION_WIDTH})")
    if fmt == "detectron2" and backbone.arch not in ("resnet50", "resnet101"):
        out.append(f"the detection configs in detection/ are R50-C4 (RESNETS.DEPTH 50); a {backbone.arch} needs "
                   f"RESNETS.DEPTH {backbone.arch[6:]} and RESNETS.RES2_OUT_CHANNELS {backbone.width}")
    return out


# ---- detectron2 ----------------------------------------------------------------------------------------------------


def _d2_name(key: str) -> str:
    """torchvision name -> detectron2 name (docs/evaluation.md#detection steps 2-5), component by component so that e.g.
    a ``layer1`` inside a longer token can never be rewritten by accident."""
    parts = key.split(".")
    if not parts[0].startswith("layer"):  # the stem: conv1.weight, bn1.*
        parts = ["stem", *parts]
    out = []
    for p in parts:
        if p.startswith("layer") and p[5:].isdigit():
            out.append(f"res{int(p[5:]) + 1}")
        elif p.startswith("bn") and p[2:].isdigit():
            out += [f"conv{p[2:]}", "norm"]
        else:
            out.append(p)
    name = ".".join(out)
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def _tv_name(key: str) -> str:
    """detectron2 name -> torchvision name: the inverse of :func:`_d2_name`."""
    key = key.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    parts = key.split(".")
    if parts[0] == "stem":
        parts = parts[1:]
    out: list[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if p.startswith("res") and p[3:].isdigit():
            out.append(f"layer{int(p[3:]) - 1}")
        elif p.startswith("conv") and p[4:].isdigit() and i + 1 < len(parts) and parts[i + 1] == "norm":
            out.append(f"bn{p[4:]}")
            i += 1
        else:
            out.append(p)
        i += 1
    return ".".join(out)


def to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A torchvision-named backbone state dict (``fc.*`` and heads already dropped) -> detectron2 names and numpy
    arrays (float32 for floating tensors), without ``num_batches_tracked``."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("fc.") or k.endswith(_BN_BUFFER):
            continue
        if not (k.startswith("layer") or k.split(".")[0] in ("conv1", "bn1")):
            raise ValueError(f"unexpected key {k!r} in a backbone state dict; expected conv1.*, bn1.* or layerN.*")
        arr = v.detach().cpu()
        out[_d2_name(k)] = (arr.float() if arr.is_floating_point() else arr).numpy().copy()
    return out


def from_detectron2(model: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_detectron2`: detectron2-named arrays -> a torchvision-named state dict that loads
    strictly into ``cgh.model.backbone.ResNet``. BN counters, which detectron2 does not store, are restored as 0 (they
    only matter for BN with ``momentum=None``). Keys outside the backbone (``stem.fc.*`` of the authors' converter,
    detector heads) are ignored."""
    sd: dict[str, torch.Tensor] = {}
    for k, v in model.items():
        if not (k.startswith("stem.conv1.") or k.split(".")[0] in ("res2", "res3", "res4", "res5")):
            continue
        sd[_tv_name(k)] = torch.as_tensor(np.asarray(v))
    for k in list(sd):
        if k.endswith(".running_var"):
            sd[k[: -len("running_var")] + _BN_BUFFER] = torch.tensor(0, dtype=torch.long)
    return sd


def detectron2_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    # matching_heuristics=True makes detectron2's DetectionCheckpointer match checkpoint keys to model keys by their
    # longest common suffix (align_and_update_state_dicts) instead of by exact name. That is what lets "res2.0.conv1"
    # find "backbone.res2.0.conv1" and, in the C4 models of detection/, "res5.*" find "roi_heads.res5.*" (res5 lives in
    # the ROI head there, not in the backbone). MoCo's converter sets it for the same reason
    # (docs/evaluation.md#detection).
    return {"model": to_detectron2(state_dict), "__author__": D2_AUTHOR, "matching_heuristics": True}


class _PortablePickler(pickle.Pickler):
    """Pickles each numpy array as ``numpy.ndarray(shape, dtype_string, bytearray)``.

    Why: numpy >= 2 pickles arrays through ``numpy._core``, which numpy < 1.26.1 cannot import ("No module named
    numpy._core"), and detectron2 environments often have an older numpy. ``numpy.ndarray`` and ``builtins.bytearray``
    exist under every numpy and Python 3; the bytearray keeps the loaded arrays writable (``torch.from_numpy`` in
    detectron2's checkpointer warns on read-only arrays)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return np.ndarray, (obj.shape, obj.dtype.str, bytearray(np.ascontiguousarray(obj).tobytes()))
        return NotImplemented


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a detectron2 weight pickle of numpy arrays references (ours, or numpy's own array pickling
    as in MoCo's converter output), so a crafted file cannot run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytearray"), ("__builtin__", "bytearray"),
                ("_codecs", "encode")} | {(f"numpy.{core}.{mod}", name) for core in ("core", "_core")
                                          for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                                            ("numeric", "_frombuffer"))}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")


def load_detectron2(path: str | os.PathLike) -> dict[str, Any]:
    """Read a detectron2 weight pickle (ours or MoCo-style) with a restricted unpickler."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()  # latin1: what detectron2 itself uses for .pkl files
    except FileNotFoundError:
        raise CheckpointError(f"detectron2 weights not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a readable detectron2 weight pickle of numpy arrays: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(f"{path}: expected a pickled dict with a 'model' dict of arrays")
    return obj


# ---- writing ---------------------------------------------------------------------------------------------------------


def export_backbone(backbone: ResNet, fmt: str, path: str | os.PathLike) -> dict[str, Any]:
    """Write ``backbone`` to ``path`` in ``fmt`` ("torchvision" or "detectron2"); returns a summary dict
    (format, out, num_tensors, num_parameters, warnings)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")
    path = Path(path)
    sd = torchvision_state_dict(backbone)
    if fmt == "torchvision":
        write_atomic(path, lambda f: torch.save(sd, f), "export")
        tensors = sd
    else:
        if path.suffix != ".pkl":  # detectron2 unpickles only files named *.pkl (others go to torch.load)
            raise CGHError(f"detectron2 weights must be written to a .pkl file (detectron2 picks its reader by the "
                           f"extension), got {path}")
        ckpt = detectron2_checkpoint(sd)
        # Protocol 4: readable by every Python 3 (>= 3.4), and it holds files over 4 GB.
        write_atomic(path, lambda f: _PortablePickler(f, protocol=4).dump(ckpt), "export")
        tensors = ckpt["model"]
    return {
        "format": fmt,
        "out": str(path),
        "num_tensors": len(tensors),
        "num_parameters": int(sum(p.numel() for p in backbone.parameters())),
        "warnings": compatibility_warnings(backbone, fmt),
    }


def default_output(checkpoint: str | os.PathLike, fmt: str) -> Path:
    """Where ``cgh export`` writes without ``--out``: beside the input, ``<name>_torchvision.pth`` or
    ``<name>_detectron2.pkl``."""
    src = Path(checkpoint)
    return src.with_name(f"{src.stem}_{fmt}{'.pkl' if fmt == 'detectron2' else '.pth'}")
