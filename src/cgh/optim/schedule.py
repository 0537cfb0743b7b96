"""Schedules by global step, and the optimiser's parameter groups: every cosine of the project is ``cosine_decay``.

    lr_at(step, ...)          the pretraining lr: linear warm-up from exactly 0, then cosine (per iteration as the
                              authors, docs/method.md#lr-schedule, or per epoch as MoCo), step or constant
    momentum_at(...)          the teacher's EMA momentum: constant (the authors) or cosine to 1 (BYOL)
    param_groups(...)         decayed / non-decayed trainable parameters, by module type
    build_optimizer(...)      SGD or LARS on a method's trainable parameters (student and predictor)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
LR_SCHEDULES = ("cosine", "cosine_epoch", "step", "constant")


def cosine_decay(value: float, progress: float) -> float:
    """``value`` at ``progress`` in [0, 1] of a half cosine from ``value`` down to 0 (clamped past 1)."""
    return 0.5 * value * (1 + math.cos(math.pi * min(progress, 1.0)))


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, schedule: str,
          milestone_steps: list[int], steps_per_epoch: int = 1) -> float:
    """Per-iteration learning rate: linear warm-up from exactly 0 over ``warmup_steps``, then ``schedule``:
    'cosine' to 0 per iteration (the authors), 'cosine_epoch' the same but constant within an epoch (MoCo's
    ``adjust_learning_rate``), 'step' (x0.1 at each milestone) or 'constant'."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if schedule in ("cosine", "cosine_epoch"):
        at = step - step % steps_per_epoch if schedule == "cosine_epoch" else step
        return cosine_decay(base_lr, (at - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "step":
        return base_lr * 0.1 ** sum(step >= m for m in milestone_steps)
    return base_lr


def momentum_at(base: float, schedule: str, step: int, total_steps: int) -> float:
    """EMA momentum at a global step: 'constant' (the authors, docs/method.md#student-teacher) or 'cosine' from
    ``base`` to 1 over training (BYOL)."""
    if schedule == "constant" or total_steps <= 1:
        return base
    if schedule == "cosine":
        return 1.0 - cosine_decay(1.0 - base, step / total_steps)
    raise ValueError(f"unknown momentum schedule {schedule!r}; expected 'constant' or 'cosine'")


def param_groups(module: nn.Module, weight_decay: float, exclude_norm_bias: bool, predictor: nn.Module | None = None,
                 fixed: bool = False, scale: float = 1.0) -> list[dict[str, Any]]:
    """Trainable parameters split into decayed and non-decayed groups, by module type (docs/method.md#quirk-weight-
    decay: the authors' name match missed the downsample and hypercolumn-head BN weights). Frozen (teacher)
    parameters are left out. The non-decayed group is marked ``lars: False`` (cgh.optim.lars skips its adaptation).
    The parameters of ``predictor`` (a submodule: BYOL's or SimSiam's) get groups of their own when its lr differs
    from the rest's: marked ``fixed_lr: True`` with ``fixed`` (SimSiam's ``fix_pred_lr``: the training loop keeps it
    at the initial lr) and ``lr_scale: scale`` (``method.pred_lr_scale``, which the loop multiplies in)."""
    own = predictor is not None and (fixed or scale != 1.0)
    own_ids = {id(p) for p in predictor.parameters()} if own else set()
    buckets: dict[tuple[bool, bool], list] = {(is_own, skip): [] for is_own in (False, True) for skip in (False, True)}
    for mod in module.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            skip = exclude_norm_bias and (isinstance(mod, NORM_TYPES) or name == "bias")
            buckets[(id(p) in own_ids, skip)].append(p)
    groups = []
    for (is_own, skip), params in buckets.items():
        if not params and (is_own or skip):
            continue
        group: dict[str, Any] = {"params": params, "weight_decay": 0.0 if skip else weight_decay}
        if skip:
            group["lars"] = False
        if is_own and fixed:
            group["fixed_lr"] = True
        if is_own and scale != 1.0:
            group["lr_scale"] = scale
        groups.append(group)
    return groups


def build_optimizer(method: nn.Module, optim_cfg, lr: float) -> torch.optim.Optimizer:
    """The pretraining optimiser (``optim.algorithm``: 'sgd' or 'lars') on the student's and, where the method has
    one, the predictor's trainable parameters (the teacher is frozen), with ``optim.weight_decay`` and its exclusions
    (``optim.wd_exclude_norm_bias``, which under LARS also exempts those parameters from the adaptation)."""
    from cgh.optim.lars import LARS

    o, predictor = optim_cfg, getattr(method, "predictor", None)
    mcfg = getattr(method, "cfg", None)
    trainable = nn.ModuleList([method.student] + ([predictor] if predictor is not None else []))
    groups = param_groups(trainable, o.weight_decay, o.wd_exclude_norm_bias, predictor,
                          getattr(mcfg, "fix_pred_lr", False), getattr(mcfg, "pred_lr_scale", 1.0))
    if o.algorithm == "lars":
        return LARS(groups, lr=lr, momentum=o.momentum, eta=o.lars_eta)
    return torch.optim.SGD(groups, lr=lr, momentum=o.momentum)
