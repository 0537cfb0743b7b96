"""LARS (You et al. 2017) as BYOL and SimCLR use it: SGD with momentum whose update of each parameter tensor is
rescaled by a trust ratio.

    d = g + wd * w                                   weight decay first
    d = d * eta * |w| / |d|    (if |w| > 0 and |d| > 0, else d)     the layer-wise adaptation
    buf = momentum * buf + d;  w = w - lr * buf      (buf starts at 0, so the first step is d)

as in BYOL's optimizer (deepmind-research byol/utils/optimizers.py: weight decay, then the trust ratio, then the
momentum trace) and SimCLR's (google-research simclr lars_optimizer.py). A parameter group with ``lars: False`` (the
norm layers and biases that ``wd_exclude_norm_bias`` exempts, cgh.optim.schedule.param_groups) skips the adaptation, and
its weight decay is 0: both papers exclude them from both. Everything stays on the device (no host reads).
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        if lr < 0 or eta <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"LARS needs lr >= 0, eta > 0 and momentum in [0, 1), got {lr}, {eta}, {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["weight_decay"]:
                    d = d.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    w_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where((w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm,
                                        torch.ones_like(w_norm))
                    d = d * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
