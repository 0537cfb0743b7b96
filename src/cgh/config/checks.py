"""The checks of ``Config.validate``: what a type check cannot see (ranges, names, divisibility, values that
contradict each other). Every invalid key is listed at once, each with the value it has and what would fit."""

from __future__ import annotations

import math
from typing import Any

from cgh.config import Config, _suggest, resolve_bn_mode
from cgh.config.names import METHOD_NAMES, QUEUE_METHODS, TEACHER_VIEWS
from cgh.config.views import aug_problems
from cgh.errors import ConfigError


def validate_config(cfg: Config, world_size: int = 1) -> None:
    """What ``cfg.validate(world_size)`` checks; raises one ConfigError listing every invalid key."""
    check = _Checker()
    m, mo, d, o, t, a = cfg.method, cfg.model, cfg.data, cfg.optim, cfg.train, cfg.aug
    from cgh.model.backbone import (  # the tables that define the choices: they import no config
        ARCHS,
        STAGE_NAMES,
        STEMS,
    )
    from cgh.optim.schedule import LR_SCHEDULES

    check.choice("method.name", m.name, METHOD_NAMES)
    check.choice("model.arch", mo.arch, tuple(ARCHS))
    check.choice("model.stem", mo.stem, STEMS)
    check.choice("model.bn_mode", mo.bn_mode, ("auto", "split", "shuffle", "sync", "plain"))
    check.choice("method.momentum_schedule", m.momentum_schedule, ("constant", "cosine"))
    check.choice("method.hyper_resize", m.hyper_resize, ("bilinear", "avgpool"))
    check.choice("method.hyper_target", m.hyper_target, ("last", "first"))
    check.choice("method.context", m.context, ("cross", "same"))
    check.choice("method.hyper_bn", m.hyper_bn, ("split", "plain"))
    check.choice("aug.teacher_view", a.teacher_view, ("auto", "weak", "strong"))
    own_view = TEACHER_VIEWS.get(m.name, a.teacher_view)
    if a.teacher_view not in ("auto", own_view):
        check.fail("aug.teacher_view", a.teacher_view,
                   f"'auto' or {own_view!r}: {m.name}'s teacher view is {own_view} (cgh.methods); set "
                   f"aug.teacher_view=auto")
    check.choice("optim.schedule", o.schedule, LR_SCHEDULES)
    check.choice("optim.algorithm", o.algorithm, ("sgd", "lars"))
    check.positive("optim.lars_eta", o.lars_eta)
    check.choice("train.amp", t.amp, ("auto", "none", "bf16", "fp16"))
    check.choice("train.knn_features", t.knn_features, ("backbone", "projection"))
    check.choice("data.corrupt", d.corrupt, ("skip", "error"))
    for key in ("temperature", "temp_teacher_global", "temp_student_global", "temp_teacher_hyper",
                "temp_student_hyper"):
        check.positive(f"method.{key}", getattr(m, key))
    check.positive("optim.lr", o.lr)
    check.positive("train.knn_t", t.knn_t)
    for key in ("feat_dim", "hid_dim", "hyper_dim", "queue_size", "pred_hid_dim"):
        check.positive(f"method.{key}", getattr(m, key))
    for key in ("epochs", "batch_size", "lr_ref_batch"):
        check.positive(f"optim.{key}", getattr(o, key))
    check.positive("data.image_size", d.image_size)
    check.positive("data.prefetch_factor", d.prefetch_factor)
    check.positive("model.width", mo.width)
    check.positive("model.bn_splits", mo.bn_splits)
    check.positive("train.knn_k", t.knn_k)
    for key in ("num_workers",):
        check.non_negative(f"data.{key}", getattr(d, key))
    for key in ("warmup_epochs",):
        check.non_negative(f"optim.{key}", getattr(o, key))
    check.non_negative("optim.weight_decay", o.weight_decay)
    check.non_negative("method.loss_warmup_epochs", m.loss_warmup_epochs)
    check.non_negative("method.loss_warmup_min_steps", m.loss_warmup_min_steps)
    check.non_negative("method.num_local", m.num_local)
    for key in ("ckpt_every", "ckpt_every_steps", "keep_every", "knn_every", "knn_max_train", "max_steps"):
        check.non_negative(f"train.{key}", getattr(t, key))
    check.positive("train.log_every", t.log_every)
    check.positive("train.dist_timeout_s", t.dist_timeout_s)
    check.unit_interval("method.momentum", m.momentum)
    check.unit_interval("method.center_momentum", m.center_momentum)
    check.unit_interval("optim.momentum", o.momentum)
    for key, value, expected in aug_problems(**{k: getattr(a, k) for k in (
            "jitter", "jitter_p", "grayscale_p", "blur_p", "blur_sigma", "flip_p", "weak_scale", "strong_scale")}):
        check.fail(f"aug.{key}", value, expected)
    for key in ("mean", "std"):
        v = getattr(d, key)
        if v and (len(v) != 3 or (key == "std" and min(v) <= 0)):
            check.fail(f"data.{key}", v,
                       "empty (the dataset's own) or three numbers" + (" > 0" if key == "std" else ""))
    if not m.hyper_layers or len(set(m.hyper_layers)) != len(m.hyper_layers):
        check.fail("method.hyper_layers", m.hyper_layers,
                   f"a non-empty list of distinct names from {list(STAGE_NAMES)}")
    for s in m.hyper_layers:
        if s not in STAGE_NAMES:
            check.fail("method.hyper_layers", m.hyper_layers,
                       f"names from {list(STAGE_NAMES)}; {s!r} is not a stage" + _suggest(s, STAGE_NAMES))
    if m.num_local and m.name not in ("ressl", "cgh"):
        check.fail("method.num_local", m.num_local, f"0 for {m.name} (multi-crop is defined for ReSSL and CGH); set "
                                                    "method.num_local=0, or method.name=ressl or cgh")
    if m.fix_pred_lr and m.name not in ("simsiam", "byol"):
        check.fail("method.fix_pred_lr", m.fix_pred_lr, f"false for {m.name}: only SimSiam and BYOL have a predictor")
    if m.pred_lr_scale != 1.0 and m.name not in ("simsiam", "byol"):
        check.fail("method.pred_lr_scale", m.pred_lr_scale, f"1 for {m.name}: only SimSiam and BYOL have a predictor")
    if not m.pred_lr_scale > 0:
        check.fail("method.pred_lr_scale", m.pred_lr_scale, "a positive multiple of the learning rate, e.g. 10")
    for key, switch in (("hyper_weight", "hyper_from_global"), ("csist_weight", "global_from_hyper")):
        value = getattr(m, key)
        if value != 0.5 and m.name != "cgh":
            check.fail(f"method.{key}", value, f"0.5 for {m.name}: only CGH has the two cross-context directions")
        if not (value > 0 and math.isfinite(value)):
            check.fail(f"method.{key}", value,
                       f"a positive weight, e.g. 0.5 (the authors'); to switch the direction off, set "
                       f"method.{switch}=false")
    if m.num_local > 4:
        check.fail("method.num_local", m.num_local, "at most 4 (docs/method.md#multi-crop-views defines four local "
                                                    "crop sizes); e.g. method.num_local=4")
    if o.milestones != sorted(o.milestones):
        check.fail("optim.milestones", o.milestones,
                   f"increasing epochs; e.g. optim.milestones=[{','.join(str(e) for e in sorted(o.milestones))}]")
    if o.warmup_epochs >= o.epochs and o.schedule == "cosine" and o.epochs > 1:
        # the presets' 5 warm-up epochs meet a short run's optim.epochs first: say which value fits
        check.fail("optim.warmup_epochs", o.warmup_epochs,
                   f"fewer than optim.epochs ({o.epochs}): the lr warm-up must end before the cosine decay; e.g. "
                   f"optim.warmup_epochs={max(1, min(o.epochs // 10, o.epochs - 1))} (0: no warm-up)")
    # Divisibility: the batch splits across processes, then across BN chunks; the queue advances by the global
    # batch each step and wraps exactly (docs/method.md#queues asserts K % B == 0;
    # docs/method.md#quirk-queue-divisibility). A zero size was reported above.
    if o.batch_size % world_size:
        check.fail("optim.batch_size", o.batch_size,
                   f"a multiple of the number of processes ({world_size}); e.g. "
                   f"optim.batch_size={-(-o.batch_size // world_size) * world_size}")
    per_process = o.batch_size // world_size
    mode = resolve_bn_mode(mo.bn_mode, world_size)
    if mode == "split" and mo.bn_splits > 0 and per_process % mo.bn_splits:
        divisor = max(d for d in range(1, min(mo.bn_splits, max(per_process, 1)) + 1) if per_process % d == 0)
        check.fail("model.bn_splits", mo.bn_splits,
                   f"a divisor of the per-process batch ({per_process} = optim.batch_size / processes); e.g. "
                   f"model.bn_splits={divisor}")
    if o.batch_size > 0 and m.queue_size % o.batch_size and m.name in QUEUE_METHODS:
        check.fail("method.queue_size", m.queue_size,
                   f"a multiple of the global batch optim.batch_size ({o.batch_size}); e.g. "
                   f"method.queue_size={max(1, round(m.queue_size / o.batch_size)) * o.batch_size}")
    check.raise_if_any()


class _Checker:
    def __init__(self):
        self.errors: list[str] = []

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{key} = {value!r}: expected {expected}")

    def choice(self, key: str, value: Any, options: tuple) -> None:
        if value not in options:
            self.fail(key, value, f"one of {list(options)}" + _suggest(str(value), options))

    def positive(self, key: str, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            self.fail(key, value, "a positive finite number")

    def non_negative(self, key: str, value: float) -> None:
        if not (value >= 0 and math.isfinite(value)):
            self.fail(key, value, "a finite number >= 0")

    def unit_interval(self, key: str, value: float) -> None:
        if not 0 <= value <= 1:
            self.fail(key, value, "a number in [0, 1]")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.errors))
