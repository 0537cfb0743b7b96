"""The three methods, dispatched through a plain dict (conventions 9).

Every method is an ``nn.Module`` that builds its student, teacher, heads and queues in ``__init__``, and whose
``forward(views, momentum, step)`` returns ``(loss, terms)``: the scalar to back-propagate and a dict of detached
named terms for logging. ``views`` is ``[teacher view, student view, *local crops]``.
"""

from __future__ import annotations

from torch import nn

from cgh.backbone import build_backbone
from cgh.config import Config, MethodConfig, resolve_bn_mode
from cgh.methods.cgh import CGH
from cgh.methods.mocov2 import MoCoV2
from cgh.methods.ressl import ReSSL

METHODS = {"mocov2": MoCoV2, "ressl": ReSSL, "cgh": CGH}


def loss_warmup_steps(m: MethodConfig, steps_per_epoch: int) -> int:
    """Steps of the InfoNCE warm-up: the configured epochs, with ``loss_warmup_min_steps`` as a floor."""
    return max(m.loss_warmup_epochs * steps_per_epoch, m.loss_warmup_min_steps)


def build_method(cfg: Config, world_size: int = 1, steps_per_epoch: int = 1) -> nn.Module:
    """The configured method on a freshly initialised backbone (seed torch before calling for reproducibility).

    BN: SplitBatchNorm with ``model.bn_splits`` chunks in 'split' mode, plain BN otherwise (converted to SyncBN by
    the training loop in 'sync' mode). The teacher's batch is shuffled in 'split' and 'shuffle' modes (SPEC 1.6).
    """
    mode = resolve_bn_mode(cfg.model.bn_mode, world_size)
    splits = cfg.model.bn_splits if mode == "split" else 1
    backbone = build_backbone(cfg.model.arch, cfg.model.stem, cfg.model.width, 0, splits, cfg.model.zero_init_residual)
    return METHODS[cfg.method.name](
        backbone,
        cfg.method,
        bn_splits=splits,
        shuffle=mode in ("split", "shuffle"),
        warmup_steps=loss_warmup_steps(cfg.method, steps_per_epoch),
    )
