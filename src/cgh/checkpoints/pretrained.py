"""Loading a pretrained backbone for evaluation, export and transfer: ``cgh.load_backbone(path)``.

Accepted files, recognised from their keys (the table is ``cgh.checkpoints.formats.LAYOUTS``, which also says which
layouts were checked against their public code); ``model.info["format"]`` names the one found:
  - ``cgh-checkpoint``: a ``cgh pretrain`` checkpoint (any method): the student's backbone (``which="teacher"`` for
    the EMA teacher), and for CGH the trained hypercolumn head;
  - ``torchvision``: a torchvision-format state dict (``cgh export --format torchvision``, or
    ``torchvision.models.resnetNN``'s own weights): ``conv1.weight``, ``layer1.0.conv1.weight``, ... with or without
    ``fc``;
  - ``authors``: the CGH authors' checkpoints (``{"net": {"module.encoder_q.conv1.weight": ...}}``,
    docs/evaluation.md#knn-evaluation, docs/evaluation.md#linear-probe);
  - ``moco``: the official MoCo v1/v2 checkpoints (``{"state_dict": {"module.encoder_q.*"}}``, head in ``fc``);
  - ``ressl``: the official ReSSL checkpoints (``{"model": {"module.encoder_q.net.*"}}``);
  - ``solo-learn``: solo-learn's Lightning checkpoints (``{"state_dict": {"backbone.*", "classifier.*", ...}}``);
  - ``lightly``: lightly-style ``backbone.*`` state dicts, with torchvision's names or as the slots of
    ``nn.Sequential(*resnet.children()[:-1])`` (``backbone.0.weight`` ... ``backbone.7.1.bn2.bias``).
Each may sit in the file itself or under ``state_dict`` / ``model`` (one level deeper too), with or without DDP's
``module.`` prefix (``info["ddp"]``). Only the query/online backbone is kept: heads (``fc``, projectors, predictors,
classifiers), key encoders, momentum copies and queues are dropped (``info["dropped"]``). Every file is read with
``weights_only=True``; a file of none of these layouts is a CheckpointError listing the layouts looked for and the
keys found. The architecture (resnet18/34/50/101), stem (7x7 or 3x3 conv1) and width are read off the weights'
shapes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cgh.checkpoints.files import FORMAT, check_checkpoint, checkpoint_file
from cgh.checkpoints.formats import backbone_state_dict, detect, file_info, read_checkpoint
from cgh.config import Config, config_from_dict
from cgh.data.normalization import IMAGENET, dataset_normalization
from cgh.errors import CheckpointError
from cgh.model.backbone import ARCHS, STAGE_NAMES, ResNet
from cgh.model.heads import HypercolumnHead, stack_hypercolumn
from cgh.model.splitbn import convert_split_bn

FEATURE_KINDS = ("global", "hypercolumn", "hypercolumn_head")


class PretrainedBackbone(nn.Module):
    """A pretrained ResNet (plain BN, eval mode) with the features evaluation needs.

    - ``global_features(x)``: the pooled layer4 feature (N, C4): 512 for ResNet-18, 2048 for ResNet-50.
    - ``hypercolumn_features(x)``: global average pool of the stacked hypercolumn map that CGH's head sees
      (layer3 resized to layer4 and concatenated: 768 for ResNet-18, 3072 for ResNet-50; docs/evaluation.md#linear-probe
      option a).
    - ``hypercolumn_head_features(x)``: the pooled output of the trained head's 1x1 conv-BN-ReLU (N, C4); CGH
      checkpoints only (docs/evaluation.md#linear-probe option b).
    - ``features(x, kind)``: one of the above by name (``FEATURE_KINDS``); ``forward(x)``: the global features.

    What ``x`` must be (``prepare``):
    - shape (N, 3, H, W), RGB. Any H, W works (the network is convolutional and pooled), but features are best at
      the size the model was trained at: ``image_size`` (a cgh checkpoint's ``data.image_size``: 32 for CIFAR, 224
      for ImageNet; None for other files, where 224 is the convention). Nothing is resized here: for the evaluation
      transform (resize the shorter side, centre crop) use ``cgh.augment.EvalTransform(size, model.mean, model.std)``
      on uint8 images, which also normalises.
    - either **uint8** in 0..255, converted and normalised here with ``mean`` / ``std``, or **float** already
      normalised: (pixels / 255 - mean) / std. ``mean`` / ``std``: the training data's statistics for a cgh
      checkpoint (``data.mean`` / ``data.std`` or the dataset's, cgh.data.normalization), ImageNet's for other files.
      Other dtypes are a ValueError; floats are cast to the weights' dtype.
    - on any device: moved to the model's (``model.to(device)`` moves the model).
    Returns float tensors (N, D) on the model's device, computed under ``torch.no_grad`` (no graph is kept: they
    require no gradient). To fine-tune, train ``model.backbone``, a plain ``nn.Module``.

    ``info`` says where the weights come from (path, format, method, arch, epoch, step, image_size).
    """

    def __init__(self, backbone: ResNet, hyper_head: HypercolumnHead | None = None,
                 hyper_layers: tuple[str, ...] = ("layer3", "layer4"), hyper_resize: str = "bilinear",
                 hyper_target: str = "last", info: dict[str, Any] | None = None,
                 mean: tuple[float, ...] = IMAGENET[0], std: tuple[float, ...] = IMAGENET[1],
                 image_size: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.hyper_head = hyper_head
        self.hyper_layers, self.hyper_resize, self.hyper_target = tuple(hyper_layers), hyper_resize, hyper_target
        self.info = dict(info or {})
        self.mean, self.std, self.image_size = tuple(mean), tuple(std), image_size
        self.eval()

    @property
    def arch(self) -> str:
        return self.backbone.arch

    def feature_dim(self, kind: str = "global") -> int:
        channels = dict(zip(STAGE_NAMES, self.backbone.stage_channels, strict=True))
        if kind == "global" or kind == "hypercolumn_head":
            return self.backbone.num_features
        if kind == "hypercolumn":
            return sum(channels[name] for name in self.hyper_layers)
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {list(FEATURE_KINDS)}")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the network takes it: on the model's device, float, normalised (see the class docstring)."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of images (N, 3, H, W), got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            hint = (" (channels last: pass x.permute(0, 3, 1, 2))" if x.dim() == 4 and x.shape[-1] == 3 else
                    " (one image: pass x[None])" if x.dim() == 3 and x.shape[0] == 3 else "")
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}{hint}")
        weight = self.backbone.conv1.weight
        if x.dtype == torch.uint8:
            mean = torch.tensor(self.mean, device=weight.device, dtype=weight.dtype).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=weight.device, dtype=weight.dtype).view(1, 3, 1, 1)
            return (x.to(weight.device, weight.dtype) / 255 - mean) / std  # (N, 3, H, W)
        if not x.is_floating_point():
            raise ValueError(f"expected uint8 images in 0..255 or float images normalised with mean {self.mean} and "
                             f"std {self.std}, got dtype {x.dtype}")
        return x.to(weight.device, weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, "global")

    def global_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, "global")  # (N, C4)

    def hypercolumn_map(self, x: torch.Tensor) -> torch.Tensor:
        """The stacked map (N, sum C_i, h, w), as the CGH head's 1x1 conv receives it (no gradients)."""
        with torch.no_grad():
            return self._stack(self.backbone(self.prepare(x)))

    def hypercolumn_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, "hypercolumn")  # (N, sum C_i)

    def hypercolumn_head_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, "hypercolumn_head")  # (N, C4)

    def features(self, x: torch.Tensor, kind: str = "global") -> torch.Tensor:
        if kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; expected one of {list(FEATURE_KINDS)}")
        if kind == "hypercolumn_head" and self.hyper_head is None:
            raise ValueError(f"{self.info.get('path', 'this backbone')} has no trained hypercolumn head (only CGH "
                             f"checkpoints do); use the 'hypercolumn' features instead")
        x = self.prepare(x)
        with torch.no_grad():
            if kind == "global":
                return self.backbone.features(x)  # (N, C4)
            if kind == "hypercolumn":
                return self._stack(self.backbone(x)).mean(dim=(2, 3))  # (N, sum C_i)
            return self.hyper_head.reduced(self.backbone(x))  # (N, C4)

    def _stack(self, stages) -> torch.Tensor:
        return stack_hypercolumn(stages, self.hyper_layers, self.hyper_resize, self.hyper_target)


def load_backbone(path: str | os.PathLike, which: str = "student", map_location: str | torch.device = "cpu"
                  ) -> PretrainedBackbone:
    """A ``PretrainedBackbone`` from any accepted file (see the module docstring), or a run directory's
    ``checkpoints/last.pt``, in eval mode on ``map_location``."""
    if which not in ("student", "teacher"):
        raise ValueError(f"which must be 'student' or 'teacher', got {which!r}")
    path = checkpoint_file(path)
    obj, stood_in = read_checkpoint(path)
    info: dict[str, Any] = {"path": str(path)}
    hyper_sd: dict[str, torch.Tensor] = {}
    hyper_kw: dict[str, Any] = {}
    mean, std = IMAGENET  # a file without a training config: the usual statistics of natural images
    match = detect(obj, path)
    if match.layout.name == FORMAT:
        check_checkpoint(obj, path)
        model_sd = obj["model"]
        cfg = config_from_dict(obj["config"], origin=str(path))
        if which == "teacher" and not any(k.startswith("teacher.") for k in model_sd):
            which = "student"  # SimSiam, SimCLR: no momentum encoder, the target branch is the student itself
        info.update(format=FORMAT, method=obj["method"], arch=obj.get("arch"), epoch=obj.get("epoch"),
                    step=obj.get("step"), epoch_step=obj.get("epoch_step", 0), which=which)
        sd = _strip(model_sd, f"{which}.backbone.")
        hyper_sd = _strip(model_sd, f"{which}.hyper.")
        m = cfg.method
        mean, std = dataset_normalization(cfg.data)
        info.update(image_size=cfg.data.image_size)
        hyper_kw = dict(layers=tuple(m.hyper_layers), resize=m.hyper_resize, target=m.hyper_target, scale=m.hyper_scale,
                        l2norm=m.hyper_l2norm, hid_dim=m.hid_dim, out_dim=m.hyper_dim,
                        mlp_norm_layer=nn.BatchNorm1d if m.head_bn else None)
    else:
        # Only the query/online backbone is kept; what lies outside its prefix (key encoders, momentum copies,
        # projectors, classifiers, queues) and the heads under it (fc) are dropped.
        sd, dropped = backbone_state_dict(match, path)
        info.update(format=match.layout.name, **file_info(obj, match), ddp=match.ddp, dropped=dropped)
    if stood_in:
        info["stood_in"] = stood_in  # metadata classes of the file that were not loaded (cgh.checkpoints.formats)
    if not sd:
        raise CheckpointError(f"{path}: no backbone weights found (no {which}.backbone.* or conv1/layerN keys)")

    arch, stem, width = infer_architecture(sd, path)
    info.update(arch=arch, stem=stem, width=width)
    backbone = ResNet(arch, stem=stem, width=width, num_classes=0)
    if info["format"] == "solo-learn" and stem == "cifar":
        backbone.conv1.padding = (2, 2)  # solo-learn's CIFAR conv1: 3x3, stride 1, padding 2 (ours has padding 1)
        info["conv1_padding"] = 2
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    _load_strict(backbone, sd, path, "backbone")
    head = None
    if hyper_sd:
        channels = dict(zip(STAGE_NAMES, backbone.stage_channels, strict=True))
        head = HypercolumnHead(channels, reduce_dim=backbone.num_features, **hyper_kw)
        _load_strict(head, hyper_sd, path, "hypercolumn head")
    model = PretrainedBackbone(backbone, head, hyper_kw.get("layers", ("layer3", "layer4")),
                               hyper_kw.get("resize", "bilinear"), hyper_kw.get("target", "last"), info,
                               mean=mean, std=std, image_size=info.get("image_size"))
    return model.to(map_location).eval()


def random_init_backbone(cfg: Config, seed: int | None = None, map_location: str | torch.device = "cpu"
                         ) -> PretrainedBackbone:
    """The encoder a ``cgh pretrain`` run of ``cfg`` starts from, bit for bit, as a ``PretrainedBackbone``: the
    baseline every self-supervised result is read against (``--random-init`` of the evaluation commands, the demo's
    "random init" row, the kNN monitor's epoch 0).

    ``cgh.train.prepare_run`` seeds torch with ``cfg.seed`` and then builds the method, whose student backbone is
    built first; so does this (``seed`` instead of cfg.seed when given), keeping the student's backbone and, for
    CGH, its hypercolumn head, with plain BN in eval mode. The global RNG state is left as it was. The BN running
    statistics are those of initialisation (mean 0, variance 1) and stay so: evaluation runs in eval mode, which
    reads them and never updates them (a run with lr near 0 is no substitute: its BN statistics move)."""
    from cgh.methods import build_method

    seed = cfg.seed if seed is None else seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_method(cfg).student
    m = cfg.method
    head = convert_split_bn(student.hyper) if student.hyper is not None else None
    info = {"path": "(random initialisation)", "format": "random-init", "method": m.name, "arch": cfg.model.arch,
            "stem": cfg.model.stem, "width": cfg.model.width, "epoch": 0, "step": 0, "seed": seed,
            "which": "student", "image_size": cfg.data.image_size}
    model = PretrainedBackbone(convert_split_bn(student.backbone), head, tuple(m.hyper_layers), m.hyper_resize,
                               m.hyper_target, info, *dataset_normalization(cfg.data),
                               image_size=cfg.data.image_size)
    return model.to(map_location).eval()


def infer_architecture(sd: dict[str, torch.Tensor], path: Path | str = "") -> tuple[str, str, int]:
    """(arch, stem, width) of a ResNet state dict, from its block counts and conv1's shape."""
    if "conv1.weight" not in sd:
        raise CheckpointError(f"{path}: no conv1.weight, not a ResNet backbone state dict")
    conv1 = sd["conv1.weight"]
    if not isinstance(conv1, torch.Tensor) or conv1.dim() != 4 or conv1.shape[0] < 1 or conv1.shape[1] != 3:
        shape = tuple(conv1.shape) if isinstance(conv1, torch.Tensor) else type(conv1).__name__
        raise CheckpointError(f"{path}: conv1.weight has shape {shape}; expected (width, 3, k, k)")
    width, kernel = conv1.shape[0], conv1.shape[-1]
    stem = {7: "imagenet", 3: "cifar"}.get(kernel)
    if stem is None:
        raise CheckpointError(f"{path}: conv1 has a {kernel}x{kernel} kernel; expected 7x7 (ImageNet) or 3x3 (CIFAR)")
    kind = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    depths = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"{name}.")}) for name in STAGE_NAMES)
    for arch, spec in ARCHS.items():
        if spec == (kind, depths):
            return arch, stem, width
    raise CheckpointError(f"{path}: {kind} blocks {depths} per stage match none of {sorted(ARCHS)}")


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], path, what: str) -> None:
    try:
        result = module.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{path}: the {what} weights do not fit: {str(e).splitlines()[-1].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{path}: the {what} weights do not fit: missing {result.missing_keys[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")
