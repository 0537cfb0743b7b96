"""The teacher: a frozen copy of the student, updated as an exponential moving average of its parameters."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with every parameter frozen (docs/method.md#student-teacher: the teacher starts equal
    to the student).

    Copying, rather than building a second network from fresh weights, is what guarantees the two start identical.
    """
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, m: float) -> None:
    """theta_teacher <- m * theta_teacher + (1 - m) * theta_student, for every parameter
    (docs/method.md#student-teacher).

    Buffers (BatchNorm running statistics) are *not* averaged: the teacher's come from its own train-mode forward
    passes, as in the authors' code. m = 1 leaves the teacher unchanged; m = 0 copies the student.
    """
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameter tensors, student {len(s_params)}")
    if m == 1.0:
        return
    torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - m)
