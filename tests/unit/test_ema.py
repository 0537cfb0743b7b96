"""The EMA teacher (cgh.model.ema): a frozen copy, the update formula, buffers, momentum schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cgh.model.ema import ema_update, make_teacher
from cgh.optim.schedule import momentum_at


def small_net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_teacher_is_a_frozen_copy():
    s = small_net()
    t = make_teacher(s)
    assert all(not p.requires_grad for p in t.parameters())
    assert all(torch.equal(a, b) for a, b in zip(s.state_dict().values(), t.state_dict().values(), strict=True))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(s.parameters(), t.parameters(), strict=True))


def test_ema_extremes_and_formula():
    s, t = small_net(), small_net()
    t.requires_grad_(False)
    before = [p.clone() for p in t.parameters()]
    ema_update(s, t, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, t.parameters(), strict=True))  # m = 1: unchanged
    ema_update(s, t, 0.9)
    for b, p_t, p_s in zip(before, t.parameters(), s.parameters(), strict=True):
        torch.testing.assert_close(p_t, 0.9 * b + 0.1 * p_s)
    ema_update(s, t, 0.0)  # m = 0: a copy of the student
    assert all(torch.equal(a, b) for a, b in zip(s.parameters(), t.parameters(), strict=True))


def test_ema_does_not_average_buffers():
    s, t = small_net(), small_net()
    s[1].running_mean.fill_(5.0)
    ema_update(s, t, 0.0)
    assert torch.all(t[1].running_mean == 0)


def test_momentum_schedules():
    assert momentum_at(0.99, "constant", 50, 100) == 0.99
    assert momentum_at(0.99, "cosine", 0, 100) == pytest.approx(0.99)
    assert momentum_at(0.99, "cosine", 50, 100) == pytest.approx(0.995)
    assert momentum_at(0.99, "cosine", 100, 100) == pytest.approx(1.0)


def test_cosine_momentum_is_byols_closed_form():
    """BYOL Sec. 3.3: tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, at every step of a run."""
    import math

    total = 37
    for base in (0.99, 0.996):
        for k in range(total + 1):
            expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
            assert abs(momentum_at(base, "cosine", k, total) - expected) < 1e-15
