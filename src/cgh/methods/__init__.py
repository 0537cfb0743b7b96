"""The six methods, dispatched through a plain dict, and the contract the training loop relies on.

Every method is an ``nn.Module`` that builds its student, teacher, heads and queues in ``__init__`` and owns what is
its own: the teacher's view (``teacher_view``), the names of the loss terms it returns, the temperatures the banner
prints, and the relation terms the collapse watch reads. ``views`` is ``[teacher view, student view, *local crops]``;
for the symmetric methods (BYOL, SimSiam, SimCLR) it is two strong views that play both parts. SimSiam and SimCLR have
no momentum encoder: their ``teacher`` is the student itself. A method with a ``predictor`` (BYOL, SimSiam) trains it
with the student (cgh.optim.schedule.param_groups).
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from cgh.config import Config, MethodConfig, resolve_bn_mode
from cgh.config.names import QUEUE_METHODS  # noqa: F401 - the methods' table of it
from cgh.methods.byol import BYOL
from cgh.methods.cgh import CGH
from cgh.methods.mocov2 import MoCoV2
from cgh.methods.ressl import ReSSL
from cgh.methods.simclr import SimCLR
from cgh.methods.simsiam import SimSiam
from cgh.model.backbone import build_backbone

# The names (and each one's teacher view, QUEUE_METHODS) are also cgh.config.names', which the config's checks read
# without importing the methods; tests/unit/test_methods.py holds the two tables in step.
METHODS = {"mocov2": MoCoV2, "ressl": ReSSL, "cgh": CGH, "byol": BYOL, "simsiam": SimSiam, "simclr": SimCLR}


@runtime_checkable
class Method(Protocol):
    """What the training loop (cgh.train.loop) uses of a method, and nothing more."""

    student: nn.Module  # the encoder that learns: optimised, kNN-monitored, exported
    teacher: nn.Module  # its EMA copy (no gradients); the student itself for SimSiam and SimCLR
    teacher_view: ClassVar[str]  # 'weak' (crop + flip) or 'strong': the recipe of views[0]
    loss_terms: ClassVar[tuple[str, ...]]  # the names forward's terms may carry (besides diagnostics, w_nce)
    relation_terms: ClassVar[tuple[str, ...]]  # terms that equal ln K when the relation target is uniform
    needs_find_unused: bool  # some parameters may get no gradient in a step (DDP's find_unused_parameters)
    warmup_steps: int  # length of the InfoNCE warm-up in steps (loss_warmup_steps); 0 without one
    teacher_pooled: torch.Tensor  # set by forward: the teacher's pooled backbone features of views[0], no grad

    def temperatures(self) -> dict[str, float]:
        """The temperatures in effect, by name, for the banner."""
        ...

    def forward(self, views: list[torch.Tensor], momentum: float, step: int = 0,
                diagnose: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Update the teacher (EMA ``momentum``), compute the loss of global step ``step`` and push the queues.
        Returns the scalar to back-propagate and detached named terms; with ``diagnose``, also the collapse
        diagnostics of cgh.model.diagnostics."""
        ...


def teacher_view(cfg: Config) -> str:
    """The teacher's view in effect: ``aug.teacher_view``, or the method's own when it is 'auto' (a contradicting
    value was rejected by ``Config.validate``)."""
    view = cfg.aug.teacher_view
    return METHODS[cfg.method.name].teacher_view if view == "auto" else view


def loss_warmup_steps(m: MethodConfig, steps_per_epoch: int) -> int:
    """Steps of the InfoNCE warm-up: the configured epochs, with ``loss_warmup_min_steps`` as a floor."""
    return max(m.loss_warmup_epochs * steps_per_epoch, m.loss_warmup_min_steps)


def build_method(cfg: Config, world_size: int = 1, steps_per_epoch: int = 1) -> Method:
    """The configured method on a freshly initialised backbone (seed torch before calling for reproducibility).

    BN: SplitBatchNorm with ``model.bn_splits`` chunks in 'split' mode, plain BN otherwise (converted to SyncBN by
    the training loop in 'sync' mode). The teacher's batch is shuffled in 'split' and 'shuffle' modes
    (docs/method.md#teacher-shuffle).
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
