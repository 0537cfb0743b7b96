"""cgh: self-supervised representation learning with cross-context learning between global and hypercolumn features.

Python API:
    cgh.load_backbone(path)                 a pretrained backbone giving global and hypercolumn features
    cgh.losses.info_nce(q, k, queue, tau)   MoCo's InfoNCE
    cgh.losses.relation_loss(student_logits, teacher_logits, tau_s, tau_t)
    cgh.config.load_config(preset, overrides), cgh.train.pretrain(cfg)
Submodules are imported on first use, so ``import cgh`` is cheap.
"""

from __future__ import annotations

import importlib

from cgh.runtime import launcher as _launcher  # noqa: F401 - first: it records this process's parent (cgh.runtime.launcher)

__version__ = "0.1.0"

_SUBMODULES = {"losses", "config", "train", "methods", "model", "data", "augment", "evaluate", "checkpoints",
               "optim", "runtime", "demo", "commands"}


def load_backbone(path, which: str = "student", map_location="cpu"):
    """A pretrained backbone from a cgh checkpoint, a torchvision state dict or an authors' checkpoint."""
    from cgh.checkpoints.pretrained import load_backbone as _load

    return _load(path, which=which, map_location=map_location)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"cgh.{name}")
    raise AttributeError(f"module 'cgh' has no attribute {name!r}")
