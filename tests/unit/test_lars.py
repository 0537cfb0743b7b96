"""cgh.optim.lars: one step against the update rule written out, and the exclusions of norm layers and biases."""

import pytest
import torch
from torch import nn

from cgh.config import Config
from cgh.optim.lars import LARS
from cgh.optim.schedule import build_optimizer


def test_one_step_is_the_lars_rule_and_excluded_groups_are_plain_sgd():
    torch.manual_seed(0)
    w, b = torch.randn(6, 4, dtype=torch.float64, requires_grad=True), torch.randn(6, dtype=torch.float64,
                                                                                  requires_grad=True)
    gw, gb = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    lr, wd, eta, mom = 0.5, 1e-2, 1e-3, 0.9
    opt = LARS([{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0, "lars": False}],
               lr=lr, momentum=mom, eta=eta)
    w0, b0 = w.detach().clone(), b.detach().clone()
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    d = gw + wd * w0
    d = d * (eta * w0.norm() / d.norm())  # the trust ratio (BYOL byol/utils/optimizers.py, SimCLR lars_optimizer.py)
    torch.testing.assert_close(w.detach(), w0 - lr * d, rtol=0, atol=1e-15)
    torch.testing.assert_close(b.detach(), b0 - lr * gb, rtol=0, atol=1e-15)  # excluded: no wd, no trust ratio
    w.grad, b.grad = gw.clone(), gb.clone()  # the second step adds the momentum trace
    w1, b1 = w.detach().clone(), b.detach().clone()
    opt.step()
    torch.testing.assert_close(b.detach(), b1 - lr * (mom * gb + gb), rtol=0, atol=1e-15)
    d2 = gw + wd * w1
    d2 = d2 * (eta * w1.norm() / d2.norm())
    torch.testing.assert_close(w.detach(), w1 - lr * (mom * d + d2), rtol=0, atol=1e-14)


def test_zero_weights_or_gradients_keep_the_plain_update():
    w = torch.zeros(3, requires_grad=True)
    opt = LARS([w], lr=1.0, momentum=0.0, eta=1e-3)
    w.grad = torch.ones(3)
    opt.step()
    assert torch.equal(w.detach(), -torch.ones(3))  # |w| = 0: trust ratio 1


def test_the_optimizer_option_excludes_norm_and_bias_from_decay_and_adaptation():
    cfg = Config()
    cfg.optim.algorithm, cfg.optim.wd_exclude_norm_bias = "lars", True
    model = nn.Module()
    model.student = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    opt = build_optimizer(model, cfg.optim, 0.1)
    assert isinstance(opt, LARS)
    adapted, excluded = opt.param_groups
    assert adapted["lars"] and adapted["weight_decay"] == cfg.optim.weight_decay
    assert not excluded["lars"] and excluded["weight_decay"] == 0.0
    assert {id(p) for p in excluded["params"]} == {id(model.student[0].bias), id(model.student[1].weight),
                                                  id(model.student[1].bias)}
    cfg.optim.algorithm = "sgd"
    assert isinstance(build_optimizer(model, cfg.optim, 0.1), torch.optim.SGD)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="eta > 0"):
        LARS([torch.zeros(1, requires_grad=True)], lr=0.1, eta=0.0)
