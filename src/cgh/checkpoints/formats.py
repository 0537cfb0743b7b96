"""The checkpoint layouts ``cgh.load_backbone`` reads, recognised from their keys, and the reading of such a file.

``LAYOUTS`` is the table: for each layout its stable name (``model.info["format"]``), where its state dict sits in the
file (``wrappers``), the key that recognises it (``marker``, after a DDP ``module.`` prefix is removed from every
key), further keys one of which must be present (``requires``), the backbone's prefix (stripped) and the heads under
that prefix (``drop``). Everything outside the prefix (the key encoder, momentum copies, projectors, predictors,
classifiers, queues) is dropped too, and listed in ``info["dropped"]``. The first row that matches wins.

Checked against the public code (read, not copied):
  - ``moco``: facebookresearch/moco ``main_moco.py`` (``save_checkpoint({"epoch", "arch", "state_dict":
    model.state_dict(), "optimizer"})`` of a DDP model) and ``moco/builder.py`` (``encoder_q``/``encoder_k`` are
    torchvision ResNets whose ``fc`` is the head: one Linear for v1, ``fc.0``/``fc.2`` for v2; ``queue``,
    ``queue_ptr``); the backbone is ``module.encoder_q.*`` minus ``fc``, as in its ``main_lincls.py``.
  - ``ressl``: mingkai-zheng/ReSSL (the official code) ``ressl.py`` saves ``{"model": model.state_dict(),
    "optimizer", "epoch"}`` of a DDP ``ReSSL`` whose ``encoder_q`` is a ``BackBone`` with ``net`` (a torchvision ResNet
    without ``fc``) and ``head`` (``linear1``/``linear2``); its ``linear_eval.py`` keeps ``module.encoder_q.net.*``.
    Assumed, not seen published: an ``encoder_q`` saved on its own (``net.*`` next to ``head.*``).
  - ``solo-learn``: vturrisi/solo-learn ``solo/methods/base.py``: a Lightning checkpoint (``trainer.save_checkpoint``)
    whose ``state_dict`` holds ``backbone.*`` (torchvision ResNet, ``fc`` an Identity), ``classifier.*`` (the online
    linear probe, always there), ``projector.*``, ``momentum_backbone.*``...; older versions named the backbone
    ``encoder.*`` (its ``main_linear.py`` renames them). For CIFAR solo-learn replaces conv1 by a 3x3 conv with
    **padding 2** (and drops the max-pool); ``load_backbone`` rebuilds that padding (``info["conv1_padding"]``).
  - ``lightly``: lightly-ai/lightly ``examples/pytorch/*.py`` (``backbone = nn.Sequential(*list(resnet.children())
    [:-1])``: keys ``backbone.0.*`` conv1, ``backbone.1.*`` bn1, ``backbone.4-7.*`` layer1-4, next to
    ``projection_head.*``, ``backbone_momentum.*``) and ``benchmarks/imagenet/resnet50/*.py`` (Lightning modules whose
    ``backbone`` is a torchvision ResNet with ``fc`` an Identity, next to ``projection_head.*``,
    ``online_classifier.*``). Assumed: the Sequential's own state dict saved bare (``0.weight``, ``4.0.conv1.weight``).
    lightly's ``ResNetGenerator`` (layers in slots 2-5, ``shortcut`` blocks, no stem ReLU) is a different network and
    is refused.
  - ``authors``: the CGH authors' ``{"net": {"module.encoder_q.*"}}`` (docs/evaluation.md#knn-evaluation).

Files are read with ``weights_only=True`` only. A Lightning checkpoint may hold objects of classes we do not import
(an omegaconf config, an ``AttributeDict``, a ``Namespace`` in ``hyper_parameters``); ``read_checkpoint`` then loads
it again, still with ``weights_only=True``, with inert stand-ins allowlisted for exactly those names and only when
every one of them is training-framework metadata (``_is_metadata``): a stand-in keeps nothing and calls nothing, so
nothing in the file runs, and the file's other objects come out as placeholders nobody reads. Any other global (a
crafted file's ``os.system``, ``exec``) is refused as before.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cgh.checkpoints.files import FORMAT, load_file
from cgh.errors import CheckpointError

# Where a state dict may sit: the file itself, under "state_dict" or "model", or one level further down.
ANYWHERE = ("", "state_dict", "model", "state_dict.state_dict", "state_dict.model", "model.state_dict", "model.model")


@dataclass(frozen=True)
class Layout:
    name: str  # model.info["format"]
    wrappers: tuple[str, ...]  # where the state dict may sit (see ANYWHERE)
    marker: str  # the key that recognises the layout, after "module." is removed
    prefix: str  # the backbone's keys start with it; it is stripped, and everything else is dropped
    drop: tuple[str, ...] = ("fc.",)  # heads under the prefix, dropped too
    requires: tuple[str, ...] = ()  # one key must start with one of these as well (tells solo-learn from lightly)
    sequential: bool = False  # keys are slots of nn.Sequential(*torchvision_resnet.children()[:-1])
    method: str | None = None  # model.info["method"], where the layout says it

    def describe(self) -> str:
        if self.name == FORMAT:
            return f"{FORMAT} (a `cgh pretrain` checkpoint: format={FORMAT!r})"
        where = "|".join(w or "<top>" for w in self.wrappers[:3]) + ("|..." if len(self.wrappers) > 3 else "")
        also = f" with one of {', '.join(r + '*' for r in self.requires)}" if self.requires else ""
        return f"{self.name} ({where} -> [module.]{self.marker}{also})"


CGH_LAYOUT = Layout(FORMAT, ("",), "format='cgh-checkpoint'", "", ())
LAYOUTS = (
    CGH_LAYOUT,  # recognised by its format field, read by load_backbone itself (config, teacher, hypercolumn head)
    Layout("authors", ("net",), "encoder_q.conv1.weight", "encoder_q.", method="cgh"),
    Layout("ressl", ANYWHERE, "encoder_q.net.conv1.weight", "encoder_q.net.", method="ressl"),
    Layout("ressl", ANYWHERE, "net.conv1.weight", "net.", requires=("head.",), method="ressl"),
    Layout("moco", ANYWHERE, "encoder_q.conv1.weight", "encoder_q."),
    Layout("solo-learn", ANYWHERE, "backbone.conv1.weight", "backbone.",
           requires=("classifier.", "projector.", "momentum_backbone.")),
    Layout("solo-learn", ANYWHERE, "encoder.conv1.weight", "encoder.", requires=("classifier.",)),
    Layout("lightly", ANYWHERE, "backbone.conv1.weight", "backbone."),
    Layout("lightly", ANYWHERE, "backbone.0.weight", "backbone.", sequential=True),
    Layout("lightly", ANYWHERE, "0.weight", "", requires=("4.0.",), sequential=True),
    Layout("torchvision", ANYWHERE, "conv1.weight", ""),
    Layout("torchvision", ANYWHERE, "encoder.conv1.weight", "encoder."),
)

# nn.Sequential(*torchvision_resnet.children()): 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4, 8 avgpool, 9 fc.
SEQUENTIAL_SLOTS = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4", "9": "fc"}


@dataclass
class Match:
    layout: Layout
    wrapper: str
    state_dict: dict[str, torch.Tensor]  # the whole state dict, "module." removed
    ddp: bool


def detect(obj: Any, path: str | os.PathLike = "") -> Match:
    """The first layout of ``LAYOUTS`` that ``obj`` (a loaded file) matches; CheckpointError listing them all if
    none does."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return Match(CGH_LAYOUT, "", {}, False)
    for layout in LAYOUTS[1:]:
        for wrapper in layout.wrappers:
            raw = state_dict_at(obj, wrapper)
            if raw is None:
                continue
            sd = {k.removeprefix("module."): v for k, v in raw.items()}
            if layout.marker in sd and (not layout.requires or any(k.startswith(layout.requires) for k in sd)):
                return Match(layout, wrapper, sd, any(k.startswith("module.") for k in raw))
    raise CheckpointError(f"{path}: not a checkpoint layout cgh knows. Looked for: "
                          f"{'; '.join(x.describe() for x in LAYOUTS)}. Found: {_first_keys(obj)}")


def backbone_state_dict(match: Match, path: str | os.PathLike = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone's weights under torchvision's names, and the groups of keys dropped (heads, key encoders...)."""
    layout, prefix = match.layout, match.layout.prefix
    sd, dropped = {}, set()
    for k, v in match.state_dict.items():
        if not k.startswith(prefix):
            dropped.add(_group(k, prefix))
            continue
        name = k[len(prefix):]
        if layout.sequential:
            name = _from_sequential(name, path)
        if name.startswith(layout.drop):
            dropped.add(prefix + name.split(".")[0])
            continue
        sd[name] = v
    return sd, sorted(dropped)


def _group(key: str, prefix: str) -> str:
    """The part of a dropped key that names its module: "encoder_k" for "encoder_k.layer1.0.conv1.weight", and
    "encoder_q.head" for "encoder_q.head.linear1.weight" beside the prefix "encoder_q.net."."""
    parts, shared = key.split("."), prefix.split(".")[:-1]
    n = next((i for i, (a, b) in enumerate(zip(parts, shared, strict=False)) if a != b), min(len(parts), len(shared)))
    return ".".join(parts[:n + 1])


def state_dict_at(obj: Any, wrapper: str) -> dict[str, torch.Tensor] | None:
    """The tensors of the dict at ``wrapper`` ("" the object itself, "a.b" obj["a"]["b"]) if it holds any."""
    for part in wrapper.split(".") if wrapper else ():
        if not isinstance(obj, dict) or not isinstance(obj.get(part), dict):
            return None
        obj = obj[part]
    if not isinstance(obj, dict):
        return None
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return tensors or None


def file_info(obj: Any, match: Match) -> dict[str, Any]:
    """What the file says about itself: epoch, step (Lightning's global_step) and the method where known."""
    info: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, field in (("epoch", "epoch"), ("global_step", "step"), ("step", "step")):
            if isinstance(obj.get(key), int) and not isinstance(obj.get(key), bool):
                info.setdefault(field, obj[key])
        hparams = obj.get("hyper_parameters")
        if isinstance(hparams, dict) and isinstance(hparams.get("method"), str):
            info["method"] = hparams["method"]
    sd = match.state_dict
    if match.layout.name == "moco":
        mlp, linear = "encoder_q.fc.0.weight" in sd, "encoder_q.fc.weight" in sd  # v2's MLP head, v1's linear one
        info["method"] = "mocov2" if mlp else "mocov1" if linear else None
    elif match.layout.method:
        info["method"] = match.layout.method
    return info


def _from_sequential(name: str, path) -> str:
    slot, _, rest = name.partition(".")
    if slot not in SEQUENTIAL_SLOTS:
        raise CheckpointError(
            f"{path}: key {name!r} sits in slot {slot} of an nn.Sequential; a torchvision ResNet's children have "
            f"parameters only in slots 0 (conv1), 1 (bn1), 4-7 (layer1-4) and 9 (fc). This is another network "
            f"(lightly's ResNetGenerator, with its layers in slots 2-5 and 'shortcut' blocks, is not a torchvision "
            f"ResNet)")
    return f"{SEQUENTIAL_SLOTS[slot]}.{rest}"


def _first_keys(obj: Any, n: int = 6) -> str:
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}, not a dict"
    out = f"top-level keys {[str(k) for k in list(obj)[:n]]}"
    for wrapper in ANYWHERE[1:] + ("net",):
        sd = state_dict_at(obj, wrapper)
        if sd:
            return f"{out}, and under {wrapper!r} {list(sd)[:n]}"
    return out


# ---- reading a file: weights_only=True, with inert stand-ins for training-framework metadata ------------------------

_METADATA_PACKAGES = ("omegaconf", "lightning", "lightning_fabric", "pytorch_lightning", "pl_bolts", "torchmetrics",
                      "solo", "lightly", "typing", "pathlib", "torch.optim")
_METADATA_GLOBALS = {"argparse.Namespace", "collections.defaultdict", "functools.partial", "builtins.getattr"} | {
    f"builtins.{t}" for t in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                              "bool", "object", "type")}


def _is_metadata(name: str) -> bool:
    """Whether a pickled global is a training framework's metadata (configs, hyper-parameters, scheduler state)."""
    return name in _METADATA_GLOBALS or any(name.startswith(p + ".") for p in _METADATA_PACKAGES)


class Placeholder:
    """Stands in for an object of a class that is not imported: accepts any arguments and state, keeps none."""

    pickled_as = "?"

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{self.pickled_as}, not loaded>"


class _DictStandIn:
    """Stands in for a dict subclass (Lightning's AttributeDict, defaultdict): the items load into a plain dict."""

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


def _stand_in(name: str):
    if name == "collections.defaultdict" or name.endswith(".AttributeDict"):
        return _DictStandIn
    return type(name.rsplit(".", 1)[-1], (Placeholder,), {"pickled_as": name})


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, list[str]]:
    """The loaded file and the globals that were stood in for (none for a file of tensors and plain values).

    ``cgh.checkpoints.files.load_file`` first; if it refuses the file for its globals and every one of them is metadata
    (``_is_metadata``), the same ``weights_only=True`` load with an inert stand-in allowlisted for each. Otherwise
    the refusal stands."""
    try:
        return load_file(path), []
    except CheckpointError as refusal:
        if not str(refusal).startswith("refused to load"):
            raise
        try:
            names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(Path(path)))
        except Exception:
            raise refusal from None
        code = [n for n in names if not _is_metadata(n)]
        if code and len(code) < len(names):  # metadata next to something else: name what is refused
            raise CheckpointError(f"{refusal}; of its globals, these are not training metadata: {code}") from None
        if not names or code:
            raise refusal from None
        try:
            with torch.serialization.safe_globals([(_stand_in(n), n) for n in names]):
                return torch.load(Path(path), map_location="cpu", weights_only=True), names
        except Exception:
            raise refusal from None
