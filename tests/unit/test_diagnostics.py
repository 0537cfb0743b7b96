"""Collapse diagnostics (cgh.model.diagnostics) on known tensors, the collapse watch, and the methods' ``diagnose``
switch."""

import math
from dataclasses import replace

import pytest
import torch

from cgh.methods import METHODS, build_method
from cgh.model.diagnostics import (
    CRITERIA,
    CollapseWatch,
    collapse_signs,
    context_diagnostics,
    feature_stats,
    is_diagnostic,
    relation_entropy,
)
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
    assert s["std"] < 1e-3 and s["std"] < CRITERIA.std_collapsed
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

LN_K = math.log(K)
HEALTHY = {"loss": 5.0, "relation": 5.0, "std_global": 0.8, "rank_global": 40.0, "ent_global": 0.6}
# the relation loss's fixed point: a uniform target matched by the student, the loss at ln K
FIXED_POINT = {**HEALTHY, "relation": LN_K * (1 - 1e-4), "std_global": 0.15, "ent_global": 0.999}
COLLAPSED = FIXED_POINT
C = CRITERIA


def test_healthy_values_show_no_sign():
    assert collapse_signs(HEALTHY, K, ("relation",)) == []


def test_fixed_point_is_a_sign_and_names_what_it_saw():
    (sign,) = collapse_signs(FIXED_POINT, K, ("relation",))
    assert "relation losses at ln K" in sign and f"ln K = {LN_K:.4f}" in sign and "global 0.999" in sign


@pytest.mark.parametrize("change", [
    {"ent_global": C.ent_uniform - 0.01},  # a target that still says something
    {"relation": LN_K * (1 - 2 * C.loss_rel_tol)},  # a student that does not match the uniform target
    {"relation": LN_K * (1 + 2 * C.loss_rel_tol)},  # ... from above (the warm-up's relation loss can exceed ln K)
    {"w_nce": C.in_charge + 0.1},  # the InfoNCE warm-up still carries the loss: features collinear at init are no
                                   # collapse while InfoNCE spreads them
])
def test_each_part_of_the_fixed_point_is_needed(change):
    assert collapse_signs({**FIXED_POINT, **change}, K, ("relation",)) == []


def test_thresholds_are_relative_and_inclusive():
    for k in (64, 1024, 65536):  # the same relative position flags at every K
        ln_k = math.log(k)
        at_edge = {**FIXED_POINT, "relation": ln_k * (1 + 0.99 * C.loss_rel_tol), "ent_global": C.ent_uniform,
                   "w_nce": C.in_charge}
        assert collapse_signs(at_edge, k, ("relation",)), k


def test_every_context_must_be_at_the_fixed_point():
    cgh = {"hyper": LN_K, "csist": LN_K, "ent_global": 0.999, "ent_hyper": 0.999, "std_global": 0.2,
           "std_hyper": 0.2, "w_nce": 0.0}
    assert collapse_signs(cgh, K, ("hyper", "csist"))
    assert collapse_signs({**cgh, "ent_hyper": 0.9}, K, ("hyper", "csist")) == []
    assert collapse_signs({**cgh, "csist": 0.9 * LN_K}, K, ("hyper", "csist")) == []
    assert collapse_signs({k: v for k, v in cgh.items() if k != "csist"}, K, ("hyper", "csist"))  # a term switched
                                                                                                   # off (ablation)


def test_std_sign_for_any_method():
    assert collapse_signs({"nce": 3.0, "std_global": C.std_collapsed / 2}, K)[0].startswith("feature std global")
    assert collapse_signs({**HEALTHY, "std_global": C.std_collapsed / 2, "std_hyper": 0.5}, K) == []  # every context
    assert collapse_signs({**HEALTHY, "std_global": 1.5 * C.std_collapsed}, K, ("relation",)) == []


def test_only_the_named_relation_terms_and_diagnostics_count():
    assert collapse_signs({**FIXED_POINT, "relation": 5.0, "nce": LN_K}, K, ("relation",)) == []
    assert collapse_signs({"loss": LN_K, "ent_global": 1.0}, K, ("hyper", "csist")) == []  # a missing term is no sign
    assert collapse_signs({"relation": LN_K}, K, ("relation",)) == []  # no teacher entropy logged: no verdict


def test_watch_quiet_when_healthy():
    watch = CollapseWatch(K, ("relation",))
    assert all(watch.update(step, HEALTHY) is None for step in range(0, 20 * C.patience, 20))
    assert watch.streak == 0 and not watch.reported


def test_watch_warns_once_after_patience():
    watch = CollapseWatch(K, ("relation",))
    out = [watch.update(20 * (i + 1), COLLAPSED) for i in range(C.patience + 3)]
    assert all(o is None for o in out[:C.patience - 1]) and all(o is None for o in out[C.patience:])
    warning = out[C.patience - 1]
    assert warning is not None and watch.reported
    assert f"since step 20 ({C.patience} logged steps)" in warning and "std_global 0.150" in warning
    assert "loss_warmup_min_steps" in warning and "head_bn" in warning  # the settings that matter


def test_watch_healthy_step_resets_streak():
    watch = CollapseWatch(K, ("relation",))
    seq = [COLLAPSED] * (C.patience - 1) + [HEALTHY] + [COLLAPSED] * C.patience
    out = [watch.update(10 * i, v) for i, v in enumerate(seq)]
    assert all(o is None for o in out[:-1])
    assert out[-1] is not None and f"since step {10 * C.patience}" in out[-1]  # the new streak's first step


def test_watch_takes_its_criteria():
    strict = replace(C, ent_uniform=0.9999, patience=1)
    assert CollapseWatch(K, ("relation",), criteria=strict).update(5, FIXED_POINT) is None
    assert CollapseWatch(K, ("relation",), criteria=replace(C, patience=1)).update(5, FIXED_POINT) is not None


# ---- the methods' diagnose switch ----------------------------------------------------------------------------------

CONTEXTS = {"mocov2": ("global",), "ressl": ("global",), "cgh": ("global", "hyper"), "byol": ("global",),
            "simsiam": ("global",), "simclr": ("global",)}
NO_RELATION_TARGET = ("mocov2", "byol", "simsiam", "simclr")  # no teacher relation distribution: no entropy


def expected_keys(name):
    stats_ = ("std", "rank", "cos") + (() if name in NO_RELATION_TARGET else ("ent",))
    return {f"{s}_{c}" for c in CONTEXTS[name] for s in stats_}


def one_step(name, diagnose, step=2):
    """Loss, terms, gradients and queue after one step of a freshly seeded method on freshly seeded views."""
    torch.manual_seed(0)
    method = build_method(small_cfg(name))
    xs = views()
    loss, terms = method(xs, momentum=0.99, step=step, diagnose=diagnose)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}  # predictors too
    queue = getattr(method, "queue", None)  # BYOL, SimSiam and SimCLR keep none
    return loss.detach(), terms, grads, queue.queue.clone() if queue is not None else torch.empty(0)


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


@pytest.mark.parametrize("name", ["byol", "simsiam", "simclr"])
def test_symmetric_methods_report_std_and_rank_and_their_collapse_is_watched_by_the_std(name):
    """BYOL, SimSiam and SimCLR have no relation target (no entropy, no ln K): their logged diagnostics are the
    feature std, rank and cos, and the watch flags a collapse by the std alone (SimSiam's failure mode)."""
    from cgh.methods import METHODS, build_method
    from cgh.model.diagnostics import CollapseWatch
    from tests.helpers import small_cfg, views

    method = build_method(small_cfg(name, pred_hid_dim=24))
    _, terms = method(views(), momentum=0.99, diagnose=True)
    assert {k for k in terms if k.partition("_")[2] == "global"} == {"std_global", "rank_global", "cos_global"}
    watch = CollapseWatch(32, METHODS[name].relation_terms)
    healthy = {k: float(v) for k, v in terms.items()}
    assert all(watch.update(s, healthy) is None for s in range(5))
    collapsed = {**healthy, "std_global": 0.01}
    assert [watch.update(s, collapsed) is not None for s in range(5, 8)] == [False, False, True]
