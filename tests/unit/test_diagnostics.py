"""Collapse diagnostics (cgh.diagnostics) on known tensors, the collapse watch, and the methods' ``diagnose`` switch."""

import math

import pytest
import torch

from cgh.diagnostics import (
    LOSS_NATS,
    PATIENCE,
    STD_COLLAPSED,
    CollapseWatch,
    collapse_signs,
    context_diagnostics,
    feature_stats,
    is_diagnostic,
    relation_entropy,
)
from cgh.methods import METHODS, build_method
from tests.helpers import small_cfg, views

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, D, K = 512, 64, 1024


def stats(z):
    return {k: v.item() for k, v in feature_stats(z).items()}


# ---- feature statistics ------------------------------------------------------------------------------------------


def test_gaussian_features_are_spread():
    # Over 200 seeds (measured): std 0.9995 +- 0.0002, cos 0.0000 +- 0.0004, rank 62.97 +- 0.03 (not 64: the
    # singular values of a finite Gaussian sample are unequal, Marchenko-Pastur). Tolerances are ~15 sigma or more.
    s = stats(torch.randn(N, D))
    assert s["std"] == pytest.approx(1.0, abs=0.01)
    assert abs(s["cos"]) < 5e-3
    assert 0.95 * D < s["rank"] <= D


def test_identical_rows_are_collapsed():
    s = stats(torch.randn(D).repeat(N, 1) + 1e-4 * torch.randn(N, D))
    assert s["std"] < 1e-3 and s["std"] < STD_COLLAPSED
    assert s["cos"] == pytest.approx(1.0, abs=1e-6)
    # (rank is scale-invariant: the centred noise around the one vector is full-rank, so std and cos, not rank,
    # are what says "collapsed" here)


def test_effective_rank_extremes():
    eye = torch.eye(D)
    assert stats(torch.cat([eye, -eye]))["rank"] == pytest.approx(D, rel=1e-4)  # centred already: equal singular values
    # Rank one after normalising and centring: two antipodal points (a line through the origin meets the sphere twice;
    # any other line's points land on a circle's arc once normalised, which is rank two).
    signs = torch.randint(0, 2, (N, 1)) * 2.0 - 1.0
    u = torch.randn(D)
    assert stats(signs * u)["rank"] == pytest.approx(1.0, abs=1e-3)
    assert stats(signs * u + 1e-4 * torch.randn(N, D))["rank"] < 1.05


def test_relation_entropy_bounds():
    assert relation_entropy(torch.full((8, K), 0.3), tau=0.04).item() == pytest.approx(1.0, abs=1e-6)  # uniform target
    one_hot_like = torch.eye(8, K)  # one queue slot at similarity 1, the rest at 0
    assert relation_entropy(one_hot_like, tau=0.01).item() < 1e-6
    assert 0 < relation_entropy(one_hot_like, tau=0.1).item() < relation_entropy(one_hot_like, tau=1.0).item() < 1


def test_wrong_shapes_raise():
    for bad in (torch.randn(D), torch.randn(1, D), torch.randn(2, 3, D)):
        with pytest.raises(ValueError, match="feature_stats"):
            feature_stats(bad)
    for bad in (torch.randn(K), torch.randn(8, 1)):
        with pytest.raises(ValueError, match="relation_entropy"):
            relation_entropy(bad, 0.04)


def test_context_names_and_is_diagnostic():
    z, logits = torch.randn(16, 8), torch.randn(16, 32)
    assert set(context_diagnostics("hyper", z)) == {"std_hyper", "rank_hyper", "cos_hyper"}
    assert set(context_diagnostics("global", z, logits, 0.04)) == {"std_global", "rank_global", "cos_global",
                                                                   "ent_global"}
    assert all(is_diagnostic(k) for k in context_diagnostics("global", z, logits, 0.04))
    assert not any(is_diagnostic(k) for k in ("loss", "nce", "relation", "hyper", "csist", "w_nce", "std", "std_x"))


# ---- collapse signs and the watch ----------------------------------------------------------------------------------

HEALTHY = {"loss": 5.0, "relation": 5.0, "std_global": 0.8, "rank_global": 40.0, "ent_global": 0.6}
COLLAPSED = {**HEALTHY, "std_global": 0.01}


def test_collapse_signs():
    ln_k = math.log(K)
    assert collapse_signs(HEALTHY, K, ("relation",)) == []
    assert len(collapse_signs(COLLAPSED, K, ("relation",))) == 1
    assert collapse_signs({**HEALTHY, "std_hyper": 0.05}, K)[0].startswith("hyper feature std")
    near, far = ln_k + 0.9 * LOSS_NATS, ln_k + 2 * LOSS_NATS
    assert "relation loss relation" in collapse_signs({**HEALTHY, "relation": near}, K, ("relation",))[0]
    assert collapse_signs({**HEALTHY, "relation": ln_k - 0.9 * LOSS_NATS}, K, ("relation",))  # from below too
    assert collapse_signs({**HEALTHY, "relation": far}, K, ("relation",)) == []
    assert collapse_signs({**HEALTHY, "nce": ln_k}, K, ("relation",)) == []  # only the named relation terms count
    assert collapse_signs({"loss": ln_k}, K, ("hyper", "csist")) == []  # a missing term is no sign


def test_watch_quiet_when_healthy():
    watch = CollapseWatch(K, ("relation",))
    assert all(watch.update(step, HEALTHY) is None for step in range(0, 20 * PATIENCE, 20))
    assert watch.streak == 0 and not watch.reported


def test_watch_warns_once_after_patience():
    watch = CollapseWatch(K, ("relation",))
    out = [watch.update(20 * (i + 1), COLLAPSED) for i in range(PATIENCE + 3)]
    assert all(o is None for o in out[:PATIENCE - 1]) and all(o is None for o in out[PATIENCE:])
    warning = out[PATIENCE - 1]
    assert warning is not None and watch.reported
    assert f"since step 20 ({PATIENCE} logged steps)" in warning and "std_global 0.010" in warning


def test_watch_healthy_step_resets_streak():
    watch = CollapseWatch(K, ("relation",))
    seq = [COLLAPSED] * (PATIENCE - 1) + [HEALTHY] + [COLLAPSED] * PATIENCE
    out = [watch.update(10 * i, v) for i, v in enumerate(seq)]
    assert all(o is None for o in out[:-1])
    assert out[-1] is not None and f"since step {10 * PATIENCE}" in out[-1]  # the new streak's first step


def test_watch_relation_loss_sign():
    watch = CollapseWatch(K, ("hyper", "csist"))
    uniform = {"hyper": math.log(K) + 1e-4, "csist": 4.0, "std_global": 0.5}  # std alone says healthy
    out = [watch.update(i, uniform) for i in range(PATIENCE)]
    assert out[-1] is not None and "relation loss hyper" in out[-1]


# ---- the methods' diagnose switch ----------------------------------------------------------------------------------

CONTEXTS = {"mocov2": ("global",), "ressl": ("global",), "cgh": ("global", "hyper")}


def expected_keys(name):
    stats_ = ("std", "rank", "cos") + (() if name == "mocov2" else ("ent",))  # MoCo-v2 has no relation target
    return {f"{s}_{c}" for c in CONTEXTS[name] for s in stats_}


def one_step(name, diagnose, step=2):
    """Loss, terms, gradients and queue after one step of a freshly seeded method on freshly seeded views."""
    torch.manual_seed(0)
    method = build_method(small_cfg(name))
    xs = views()
    loss, terms = method(xs, momentum=0.99, step=step, diagnose=diagnose)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in method.student.named_parameters() if p.grad is not None}
    return loss.detach(), terms, grads, method.queue.queue.clone()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_diagnose_adds_exactly_the_diagnostics_and_changes_nothing(name):
    assert set(CONTEXTS) == set(METHODS)  # a new method needs its contexts listed here
    loss_off, terms_off, grads_off, queue_off = one_step(name, diagnose=False)
    loss_on, terms_on, grads_on, queue_on = one_step(name, diagnose=True)
    assert not any(is_diagnostic(k) for k in terms_off)
    assert set(terms_on) == set(terms_off) | expected_keys(name)
    for k in expected_keys(name):
        v = terms_on[k]
        assert v.ndim == 0 and v.dtype == torch.float32 and not v.requires_grad and torch.isfinite(v)
    # bit-identical: the diagnostics read the step's tensors and consume no random numbers
    assert torch.equal(loss_on, loss_off)
    assert all(torch.equal(terms_on[k], terms_off[k]) for k in terms_off)
    assert grads_on.keys() == grads_off.keys() and grads_off
    assert all(torch.equal(grads_on[n], grads_off[n]) for n in grads_off)
    assert torch.equal(queue_on, queue_off)
