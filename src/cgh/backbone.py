"""ResNet-18/34/50/101 with torchvision's parameter names, returning its four stages explicitly.

The state dict of ``resnet50(num_classes=1000)`` has exactly the keys and shapes of
``torchvision.models.resnet50().state_dict()`` (checked against ``shared/data/torchvision/``), and parameters are
initialised as torchvision does (kaiming-normal fan-out for convolutions, BN weight 1 and bias 0, PyTorch's default
for ``fc``). Self-supervised training builds the backbone with ``num_classes=0``: no ``fc`` at all, so an exported
backbone loads into torchvision with only ``fc`` missing.

Stems:
  - ``"imagenet"``: conv 7x7 stride 2, BN, ReLU, max-pool 3x3 stride 2 (torchvision).
  - ``"cifar"``: conv 3x3 stride 1, BN, ReLU, no max-pool. docs/method.md#backbone: the authors use it for CIFAR only;
    its conv1 has PyTorch's default init there, which we keep. The max-pool is an ``Identity``, so the key set is
    unchanged and only ``conv1.weight``'s shape differs from torchvision's.

``forward(x)`` returns ``Stages(layer1, layer2, layer3, layer4)``: the block outputs after the final residual ReLU, the
maps the hypercolumn head stacks (docs/method.md#hypercolumn-head). ``pool(layer4)`` gives the pooled feature from the
same forward pass, so nothing is recomputed and no forward hook is needed (docs/method.md#quirk-hooks).

Spatial sizes of layer3 / layer4 (docs/method.md#backbone): 224 px ImageNet stem 14 / 7; 32 px CIFAR stem 8 / 4; 96 px
ImageNet stem 6 / 3; 64 px ImageNet stem 4 / 2.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")

# name -> (block type, blocks per stage); torchvision's table.
ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
STEMS = ("imagenet", "cifar")


class Stages(NamedTuple):
    """The outputs of the four residual stages, each (N, C_i, H_i, W_i)."""

    layer1: torch.Tensor
    layer2: torch.Tensor
    layer3: torch.Tensor
    layer4: torch.Tensor


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


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None, norm: Callable):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision: no activation-sized buffer per block (benchmarks/training_cost.md)
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None, norm: Callable):
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as in BasicBlock
        return self.relu(out)


class ResNet(nn.Module):
    """A torchvision-compatible ResNet that returns its stages.

    Args:
        arch: one of ``ARCHS`` (resnet18, resnet34, resnet50, resnet101).
        stem: ``"imagenet"`` (7x7/2 conv + max-pool) or ``"cifar"`` (3x3/1 conv, no max-pool).
        width: channels of the stem and of layer1's planes (torchvision: 64). Other widths give a narrower or wider
            network (the demo uses 32); only 64 is state-dict compatible with torchvision.
        num_classes: size of the ``fc`` classifier; 0 builds none (self-supervised training and export).
        norm_layer: BN constructor, e.g. ``norm_layer_factory(8)`` for SplitBatchNorm with 8 splits.
        zero_init_residual: zero the last BN of each block (torchvision's option, off by default).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        stem: str = "imagenet",
        width: int = 64,
        num_classes: int = 0,
        norm_layer: Callable[[int], nn.Module] | None = None,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; expected one of {list(STEMS)}")
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        kind, depths = ARCHS[arch]
        block = BasicBlock if kind == "basic" else Bottleneck
        norm = norm_layer or nn.BatchNorm2d
        self.arch, self.stem, self.width = arch, stem, width

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(3, width)
            self.maxpool = nn.Identity()
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)

        cin = width
        layers = []
        for i, depth in enumerate(depths):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            downsample, cout = None, planes * block.expansion
            if stride != 1 or cin != cout:
                downsample = nn.Sequential(conv1x1(cin, cout, stride), norm(cout))
            blocks = [block(cin, planes, stride, downsample, norm)]
            cin = planes * block.expansion
            blocks += [block(cin, planes, 1, None, norm) for _ in range(depth - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.stage_channels = tuple(width * 2**i * block.expansion for i in range(4))
        self.num_features = self.stage_channels[-1]
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else None

        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's initialisation; the CIFAR stem's conv1 keeps PyTorch's default (docs/method.md#backbone).
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not (name == "conv1" and self.stem == "cifar"):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def forward(self, x: torch.Tensor) -> Stages:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        l1 = self.layer1(x)  # (N, C1, H/4, W/4) imagenet stem; (N, C1, H, W) cifar stem
        l2 = self.layer2(l1)  # (N, C2, H/8, W/8)
        l3 = self.layer3(l2)  # (N, C3, H/16, W/16)
        l4 = self.layer4(l3)  # (N, C4, H/32, W/32)
        return Stages(l1, l2, l3, l4)

    def pool(self, layer4: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled feature (N, num_features) of a layer4 map."""
        return torch.flatten(self.avgpool(layer4), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone feature (N, num_features): ``pool(forward(x).layer4)``."""
        return self.pool(self.forward(x).layer4)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes) through ``fc``; only for a backbone built with ``num_classes > 0``."""
        if self.fc is None:
            raise ValueError("this backbone was built with num_classes=0 and has no fc layer")
        return self.fc(self.features(x))


def build_backbone(
    arch: str = "resnet18",
    stem: str = "imagenet",
    width: int = 64,
    num_classes: int = 0,
    bn_splits: int = 1,
    zero_init_residual: bool = False,
) -> ResNet:
    """A ``ResNet`` with SplitBatchNorm when ``bn_splits > 1`` (else plain BN)."""
    return ResNet(arch, stem, width, num_classes, norm_layer_factory(bn_splits), zero_init_residual)


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
