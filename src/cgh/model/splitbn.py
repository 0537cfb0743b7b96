"""SplitBatchNorm: batch norm over ``num_splits`` interleaved sub-batches, the single-GPU stand-in for the authors'
per-GPU BN statistics (docs/method.md#quirk-split-bn), as one ``batch_norm`` call (channels-last too); the factory
that picks it or plain BN for a backbone or head (``norm_layer_factory``), and ``convert_split_bn``, which turns it
back into plain BN when a pretrained backbone leaves its training setup. The state dict is plain BN's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def _split_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, s: int) -> torch.Tensor:
    """Train-mode BN of ``s`` interleaved sub-batches of ``x`` (N, C, ...), one ``batch_norm`` call; a channels-last
    ``x`` gives a channels-last output (``_ChannelsLastSplitBN``)."""
    n, c = x.shape[:2]
    if n % s:
        raise ValueError(f"SplitBatchNorm: the per-process batch ({n}) must be divisible by the number of BN splits "
                         f"({s}); change optim.batch_size or model.bn_splits")
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    if momentum is None:  # torch's cumulative average (BatchNorm2d(momentum=None)); not the default
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.num_batches_tracked is not None else 0.0
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return _ChannelsLastSplitBN.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, s, momentum, bn.eps)
    running_mean, running_var = bn.running_mean.repeat(s), bn.running_var.repeat(s)  # (S*C,)
    # (N, C, ...) -> (N/S, S*C, ...): row n*S + j lands in channel block j, i.e. split j = rows j, j+S, ...
    affine = bn.weight is not None  # a BN without affine parameters (SimSiam's projector output) has none to repeat
    out = F.batch_norm(x.contiguous().view(n // s, s * c, *x.shape[2:]), running_mean, running_var,
                       bn.weight.repeat(s) if affine else None, bn.bias.repeat(s) if affine else None, True,
                       momentum, bn.eps)
    with torch.no_grad():
        bn.running_mean.copy_(running_mean.view(s, c).mean(0))
        bn.running_var.copy_(running_var.view(s, c).mean(0))
    # Back to (N, C, ...) as a tensor of its own, not a view: the blocks add their residual into BN outputs in place,
    # and an in-place op on a view would make autograd copy the whole map in the backward pass (CopySlices). Nothing
    # else holds the reshaped output (batch_norm's backward keeps its input, not its output), so this is safe.
    return torch.ops.aten._unsafe_view(out, x.shape)


_SPLIT_DIMS = (0, 3, 4)  # of the (N/S, S, C, H, W) view: the dims one split's statistics reduce over


class _ChannelsLastSplitBN(torch.autograd.Function):
    """Split BN of a channels-last (N, C, H, W) map without a layout change, forward and backward.

    The reshape of ``_split_batch_norm`` (N, C, H, W) -> (N/S, S*C, H, W) needs NCHW memory: on a channels-last map it
    cost a copy to NCHW, and the NCHW output made the next convolution copy back (issue 19: about 53 round trips per
    ResNet-50 forward, as many backward). Here the statistics reduce the (N/S, S, C, H, W) view, which exists for
    every layout, over (N/S, H, W); the output is one fused ``addcmul`` that keeps the input's memory format.
    Statistics and coefficients are float32 (as ``batch_norm`` keeps them under bf16 autocast); the elementwise
    passes run in the input's dtype. The maths is BN's: y = (x - mean) * w / sqrt(var + eps) + b per (split,
    channel), biased variance in y, unbiased in the running variance; backward is BN's closed form
    dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), written as a * dy + b * x + c per (split, channel).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, s, momentum, eps):
        n, c, h, w = x.shape
        x5 = x.view(n // s, s, c, h, w)  # split j = rows j, j+S, ...: index 1 of the view
        var, mean = torch.var_mean(x5, dim=_SPLIT_DIMS, correction=0)  # (S, C) each
        var, mean = var.float(), mean.float()
        invstd = torch.rsqrt(var + eps)
        weight32 = weight.float() if weight is not None else torch.ones(c, device=x.device)
        scale = weight32 * invstd  # (S, C)
        shift = (bias.float() if bias is not None else 0.0) - mean * scale
        y5 = torch.addcmul(shift.to(x.dtype).view(1, s, c, 1, 1), x5, scale.to(x.dtype).view(1, s, c, 1, 1))
        if running_mean is not None:
            count = x5.numel() // (s * c)
            with torch.no_grad():  # the average over splits of each split's update, as _split_batch_norm's
                unbiased = var * (count / max(count - 1, 1))
                running_mean.mul_(1 - momentum).add_(mean.mean(0).to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.mean(0).to(running_var.dtype), alpha=momentum)
        ctx.save_for_backward(x, weight32, mean, invstd)
        ctx.s, ctx.has_weight, ctx.has_bias = s, weight is not None, bias is not None
        ctx.param_dtype = weight.dtype if weight is not None else torch.float32
        return torch.ops.aten._unsafe_view(y5, x.shape)  # not a view: the blocks add their residual in place

    @staticmethod
    def backward(ctx, grad):
        x, weight32, mean, invstd = ctx.saved_tensors
        s = ctx.s
        n, c, h, w = x.shape
        x5, g5 = x.view(n // s, s, c, h, w), grad.view(n // s, s, c, h, w)
        count = x5.numel() // (s * c)
        sum_g = g5.sum(_SPLIT_DIMS, dtype=torch.float32)  # (S, C)
        dot = (g5 * x5).sum(_SPLIT_DIMS, dtype=torch.float32) - mean * sum_g  # sum(dy * (x - mean))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            a = weight32 * invstd
            b = -a * invstd * invstd * dot / count
            shift = -b * mean - a * sum_g / count
            dt = x.dtype
            gx5 = torch.addcmul(torch.addcmul(shift.to(dt).view(1, s, c, 1, 1), x5, b.to(dt).view(1, s, c, 1, 1)),
                                g5, a.to(dt).view(1, s, c, 1, 1))
            grad_x = gx5.reshape(x.shape)
        if ctx.has_weight and ctx.needs_input_grad[1]:
            grad_w = (dot * invstd).sum(0).to(ctx.param_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = sum_g.sum(0).to(ctx.param_dtype)
        return grad_x, grad_w, grad_b, None, None, None, None, None


class _Splits:
    """The split behaviour shared by the 2-d and 1-d split BNs (mixed in before the torch BN class)."""

    def __init__(self, num_features: int, num_splits: int = 8, **kwargs):
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        return _split_batch_norm(self, x, self.num_splits)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_splits={self.num_splits}"


class SplitBatchNorm(_Splits, nn.BatchNorm2d):
    """BatchNorm that normalises ``num_splits`` interleaved sub-batches separately in training mode.

    This simulates ``num_splits`` processes with per-process BN on one device (the MoCo CIFAR demo's trick, used by the
    authors for every single-GPU run with 8 splits, docs/method.md#backbone). Split s holds rows s, s + S, s + 2S, ...
    of the batch: exactly the rows the distributed batch sampler gives rank s of S processes, so one process with
    ``num_splits = W`` normalises as ``W`` processes with plain BN do. The interleaved layout lets one ``batch_norm``
    call treat the splits as extra channels of a reshaped batch (N/S, S*C, H, W): measured on this project's CPUs at
    1.3x the cost of plain BN, against 5.6x for a loop over contiguous chunks. Running statistics are the average of the
    per-split updates; in eval mode it is plain BN. The batch must be divisible by ``num_splits``. Parameter and buffer
    names equal ``BatchNorm2d``'s.
    """


class SplitBatchNorm1d(_Splits, nn.BatchNorm1d):
    """``SplitBatchNorm`` for (N, C) features: the BN of a projection MLP (``method.head_bn``)."""


def norm_layer_factory(bn_splits: int = 1, dims: int = 2) -> Callable[[int], nn.Module]:
    """The BN constructor for a backbone or head: plain BN for 1 split, else the SplitBatchNorm of ``dims`` (2: conv
    maps, 1: feature vectors)."""
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims}")
    if bn_splits == 1:
        return nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return partial(SplitBatchNorm if dims == 2 else SplitBatchNorm1d, num_splits=bn_splits)


def convert_split_bn(module: nn.Module) -> nn.Module:
    """Replace every SplitBatchNorm(1d) in ``module`` by a plain BatchNorm2d(1d) with the same parameters and buffers.

    Used when a pretrained backbone leaves its training setup (evaluation, export): the state dict is unchanged.
    """
    for name, child in module.named_children():
        if isinstance(child, (SplitBatchNorm, SplitBatchNorm1d)):
            plain = nn.BatchNorm2d if isinstance(child, SplitBatchNorm) else nn.BatchNorm1d
            bn = plain(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            setattr(module, name, bn.to(child.weight.device))
        else:
            convert_split_bn(child)
    return module
