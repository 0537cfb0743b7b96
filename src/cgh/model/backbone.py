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
from typing import NamedTuple

import torch
from torch import nn

from cgh.model.splitbn import norm_layer_factory

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
