"""Loss maths checked against the equations of docs/method.md#losses, recomputed independently in float64 NumPy
(tests/reference.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cgh.losses import cgh_loss_weights, info_nce, relation_logits, relation_loss
from tests.reference import np_info_nce, np_relation


def unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def t32(x):
    return torch.tensor(x, dtype=torch.float32)


@pytest.mark.parametrize("tau_s,tau_t", [(0.1, 0.04), (0.08, 0.08), (0.2, 0.05)])
def test_relation_loss_matches_equation(tau_s, tau_t):
    q, k, queue = unit(16, 32, 1), unit(16, 32, 2), unit(64, 32, 3)
    expected = np_relation(q @ queue.T, k @ queue.T, tau_s, tau_t)
    got = relation_loss(relation_logits(t32(q), t32(queue)), relation_logits(t32(k), t32(queue)), tau_s, tau_t)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_relation_loss_is_not_symmetric_and_detaches_the_teacher():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10, requires_grad=True)
    loss = relation_loss(s, t, 0.1, 0.04)
    loss.backward()
    assert s.grad is not None and t.grad is None
    assert loss.item() != pytest.approx(relation_loss(t, s, 0.1, 0.04).item())


def test_relation_loss_minimum_is_teacher_entropy():
    # CE(p, z) >= H(p), with equality when softmax(z / tau_s) == p
    t = torch.randn(3, 7)
    p = F.softmax(t / 0.04, dim=1)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(1).mean()
    student = torch.log(p.clamp_min(1e-30)) * 0.1  # softmax(student / 0.1) == p
    assert relation_loss(student, t, 0.1, 0.04).item() == pytest.approx(entropy.item(), abs=1e-4)


def test_info_nce_matches_equation():
    q, k, queue = unit(8, 16, 4), unit(8, 16, 5), unit(32, 16, 6)
    assert info_nce(t32(q), t32(k), t32(queue), 0.2).item() == pytest.approx(np_info_nce(q, k, queue, 0.2), rel=1e-5)


def test_info_nce_prefers_matching_keys():
    q = F.normalize(torch.randn(8, 16), dim=1)
    queue = F.normalize(torch.randn(32, 16), dim=1)
    assert info_nce(q, q, queue, 0.2) < info_nce(q, q.roll(1, 0), queue, 0.2)


def test_losses_run_in_float32_under_autocast():
    q, k, queue = (F.normalize(torch.randn(n, 16), dim=1) for n in (8, 8, 64))
    ref_rel = relation_loss(relation_logits(q, queue), relation_logits(k, queue), 0.1, 0.04)
    ref_nce = info_nce(q, k, queue, 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = relation_logits(q, queue)
        rel = relation_loss(logits, relation_logits(k, queue), 0.1, 0.04)
        nce = info_nce(q, k, queue, 0.2)
    assert logits.dtype == rel.dtype == nce.dtype == torch.float32
    torch.testing.assert_close(rel, ref_rel)
    torch.testing.assert_close(nce, ref_nce)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(4, 10\)"):
        relation_loss(torch.randn(4, 10), torch.randn(4, 11), 0.1, 0.04)
    with pytest.raises(ValueError, match="queue"):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), torch.randn(10, 9), 0.2)


@pytest.mark.parametrize("step,expected", [
    (0, (1.0, 0.0, 0.0)),       # docs/method.md#loss-weights: weights 1, 0, 0 at the very first step
    (50, (0.5, 0.25, 0.25)),    # half the warm-up: alpha = 1/2
    (99, (0.01, 0.495, 0.495)),  # last warm-up iteration
    (100, (0.0, 0.5, 0.5)),     # end of the warm-up
    (10_000, (0.0, 0.5, 0.5)),  # after
])
def test_cgh_warmup_weights(step, expected):
    assert cgh_loss_weights(step, warmup_steps=100) == pytest.approx(expected)


def test_no_warmup():
    assert cgh_loss_weights(0, 0) == (0.0, 0.5, 0.5)


@pytest.mark.parametrize("step,expected", [(0, (1.0, 0.0, 0.0)), (25, (0.75, 0.2, 0.05)), (100, (0.0, 0.8, 0.2))])
def test_direction_weights_scale_the_ramp_and_its_end(step, expected):
    assert cgh_loss_weights(step, 100, hyper=0.8, csist=0.2) == pytest.approx(expected)
