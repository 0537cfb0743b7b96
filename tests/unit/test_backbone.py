"""ResNet backbones (cgh.model.backbone): torchvision's names and shapes, stems, stage shapes, initialisation,
SplitBatchNorm."""

import json
import math

import pytest
import torch
from torch import nn

from cgh.model.backbone import ARCHS, ResNet, build_backbone
from cgh.model.splitbn import SplitBatchNorm, SplitBatchNorm1d, convert_split_bn
from tests.helpers import TORCHVISION_SHAPES

TV = TORCHVISION_SHAPES


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_state_dict_matches_torchvision(arch):
    ref = json.loads((TV / f"{arch}_state_dict_shapes.json").read_text())
    sd = ResNet(arch, stem="imagenet", num_classes=1000).state_dict()
    assert list(sd) == list(ref)  # same keys in the same order
    assert {k: list(v.shape) for k, v in sd.items()} == ref


def test_no_fc_without_classes():
    keys = ResNet("resnet18", num_classes=0).state_dict().keys()
    assert not any(k.startswith("fc.") for k in keys)


def test_cifar_stem_only_changes_conv1_shape():
    a = ResNet("resnet18", stem="imagenet").state_dict()
    b = ResNet("resnet18", stem="cifar").state_dict()
    assert list(a) == list(b)
    assert [k for k in a if a[k].shape != b[k].shape] == ["conv1.weight"]
    assert b["conv1.weight"].shape == (64, 3, 3, 3)


# (arch, stem, size) -> expected spatial side of layer1..layer4
@pytest.mark.parametrize("stem,size,sides", [
    ("imagenet", 224, (56, 28, 14, 7)),
    ("imagenet", 96, (24, 12, 6, 3)),
    ("imagenet", 64, (16, 8, 4, 2)),
    ("imagenet", 32, (8, 4, 2, 1)),
    ("cifar", 32, (32, 16, 8, 4)),
    ("cifar", 64, (64, 32, 16, 8)),
    ("cifar", 96, (96, 48, 24, 12)),
    ("cifar", 224, (224, 112, 56, 28)),
])
@pytest.mark.parametrize("arch,channels", [("resnet18", (64, 128, 256, 512)), ("resnet50", (256, 512, 1024, 2048))])
def test_stage_shapes(arch, channels, stem, size, sides):
    # On the meta device: shapes without arithmetic, so ResNet-50 at 224 px with the CIFAR stem costs nothing.
    net = ResNet(arch, stem=stem).to("meta").eval()
    with torch.no_grad():
        stages = net(torch.empty(2, 3, size, size, device="meta"))
    assert [tuple(s.shape) for s in stages] == [(2, c, h, h) for c, h in zip(channels, sides, strict=True)]
    assert net.pool(stages.layer4).shape == (2, channels[-1])


def test_channels_last_gives_same_features():
    net = ResNet("resnet18", stem="cifar").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a = net.features(x)
        net_cl = net.to(memory_format=torch.channels_last)
        b = net_cl.features(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("splits", [1, 4])
def test_channels_last_training_mode_matches_contiguous(splits):
    """The GPU default (split BN, channels-last) in training mode: same stage maps and parameter gradients as the
    contiguous network, and every stage map comes out channels-last (no BN hands NCHW to the next convolution)."""
    torch.manual_seed(0)
    net = build_backbone("resnet18", "cifar", width=8, bn_splits=splits).train()
    net_cl = build_backbone("resnet18", "cifar", width=8, bn_splits=splits).train()
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16)
    ys, ys_cl = net(x), net_cl(x.contiguous(memory_format=torch.channels_last))
    assert all(y.is_contiguous(memory_format=torch.channels_last) for y in ys_cl)
    for a, b in zip(ys, ys_cl, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    sum(y.square().mean() for y in ys).backward()
    sum(y.square().mean() for y in ys_cl).backward()
    for (name, a), b in zip(net.named_parameters(), net_cl.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_torchvision_initialisation():
    net = ResNet("resnet50", num_classes=10)
    w = net.layer1[0].conv2.weight  # kaiming normal, fan_out, relu: std = sqrt(2 / (out * k * k))
    expected = math.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3]))
    assert abs(w.std().item() / expected - 1) < 0.05
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0)
    zero = ResNet("resnet18", zero_init_residual=True)
    assert torch.all(zero.layer1[0].bn2.weight == 0)


def test_width_option_scales_channels():
    net = ResNet("resnet18", width=32)
    assert net.stage_channels == (32, 64, 128, 256) and net.num_features == 256


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="resnet19"):
        ResNet("resnet19")
    with pytest.raises(ValueError, match="stem"):
        ResNet("resnet18", stem="tiny")


class TestSplitBatchNorm:
    def test_equals_batchnorm_on_each_interleaved_split(self):
        x = torch.randn(8, 4, 5, 5)
        split = SplitBatchNorm(4, num_splits=4).train()
        plain = nn.BatchNorm2d(4).train()
        y = split(x)
        for s in range(4):  # split s = rows s, s+4: what rank s of 4 processes gets from the batch sampler
            torch.testing.assert_close(y[s::4], plain(x[s::4]))

    def test_1d_version_for_feature_vectors(self):
        x = torch.randn(12, 5)
        split, plain = SplitBatchNorm1d(5, num_splits=3).train(), nn.BatchNorm1d(5).train()
        y = split(x)
        for s in range(3):
            torch.testing.assert_close(y[s::3], plain(x[s::3]))
        assert split.state_dict().keys() == plain.state_dict().keys()
        plain.load_state_dict(split.state_dict())
        torch.testing.assert_close(split.eval()(x), plain.eval()(x))

    @pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
    def test_outputs_gradients_and_running_stats_equal_plain_bn_per_split(self, layout):
        """Issue 19: split BN of a channels-last map no longer goes through NCHW; in both layouts it computes plain BN
        of each interleaved split (outputs, gradients of input, weight and bias, running statistics), and the output
        keeps the input's layout."""
        g = torch.Generator().manual_seed(3)
        x0 = (torch.randn(12, 5, 4, 3, generator=g) * 2 + 1.5).contiguous(memory_format=layout)  # mean far from 0
        dy = torch.randn(12, 5, 4, 3, generator=g).contiguous(memory_format=layout)
        split = SplitBatchNorm(5, num_splits=3).train()
        with torch.no_grad():
            split.weight.copy_(torch.rand(5, generator=g) + 0.5)
            split.bias.copy_(torch.randn(5, generator=g))
            split.running_var.fill_(2.0)
        plains = [nn.BatchNorm2d(5).train() for _ in range(3)]
        for p in plains:
            p.load_state_dict(split.state_dict())
        x = x0.clone().requires_grad_(True)
        y = split(x)
        assert y.is_contiguous(memory_format=layout) and not y._is_view()
        (y * dy).sum().backward()
        xr = x0.contiguous().clone().requires_grad_(True)
        yr = torch.empty_like(xr)
        for j, p in enumerate(plains):  # split j = rows j, j+3, ...
            yr[j::3] = p(xr[j::3])
        (yr * dy).sum().backward()
        close = {"rtol": 1e-5, "atol": 1e-5}  # float reordering
        torch.testing.assert_close(y, yr, **close)
        torch.testing.assert_close(x.grad, xr.grad, **close)
        torch.testing.assert_close(split.weight.grad, sum(p.weight.grad for p in plains), **close)
        torch.testing.assert_close(split.bias.grad, sum(p.bias.grad for p in plains), **close)
        torch.testing.assert_close(split.running_mean, sum(p.running_mean for p in plains) / 3, **close)
        torch.testing.assert_close(split.running_var, sum(p.running_var for p in plains) / 3, **close)
        assert int(split.num_batches_tracked) == 1

    def test_channels_last_input_keeps_its_layout_and_values(self):
        x = torch.randn(8, 4, 5, 5)
        split = SplitBatchNorm(4, num_splits=2).train()
        y = split(x.contiguous(memory_format=torch.channels_last))
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, split(x))

    def test_channels_last_bf16_stays_bf16_and_close_to_float32(self):
        x = torch.randn(16, 4, 6, 6) * 3 + 2
        split = SplitBatchNorm(4, num_splits=4).train()
        ref = split(x)
        low = split(x.bfloat16().contiguous(memory_format=torch.channels_last))
        assert low.dtype == torch.bfloat16 and low.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(low.float(), ref, rtol=0.03, atol=0.03)  # bf16 input rounding: 2^-9 of |x|

    def test_running_stats_are_the_average_of_chunk_updates(self):
        x = torch.randn(6, 3, 4, 4)
        split = SplitBatchNorm(3, num_splits=2).train()
        split(x)
        means = []
        for c in (x[0::2], x[1::2]):
            bn = nn.BatchNorm2d(3).train()
            bn(c)
            means.append(bn.running_mean)
        torch.testing.assert_close(split.running_mean, torch.stack(means).mean(0))
        assert int(split.num_batches_tracked) == 1

    def test_eval_and_one_split_are_plain_bn(self):
        x = torch.randn(4, 3, 4, 4)
        split, plain = SplitBatchNorm(3, num_splits=1), nn.BatchNorm2d(3)
        torch.testing.assert_close(split.train()(x), plain.train()(x))
        split8 = SplitBatchNorm(3, num_splits=2)
        split8.load_state_dict(plain.state_dict())
        torch.testing.assert_close(split8.eval()(x), plain.eval()(x))

    def test_indivisible_batch_is_a_clear_error(self):
        with pytest.raises(ValueError, match="divisible by the number of BN splits"):
            SplitBatchNorm(3, num_splits=4).train()(torch.randn(6, 3, 2, 2))

    def test_same_state_dict_keys_as_batchnorm(self):
        assert SplitBatchNorm(3, 2).state_dict().keys() == nn.BatchNorm2d(3).state_dict().keys()

    def test_convert_split_bn_keeps_weights(self):
        net = build_backbone("resnet18", stem="cifar", bn_splits=4).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            before = net.features(x)
            sd = {k: v.clone() for k, v in net.state_dict().items()}
            convert_split_bn(net)
            after = net.features(x)
        assert not any(isinstance(m, SplitBatchNorm) for m in net.modules())
        torch.testing.assert_close(before, after)
        assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())


class TestInPlaceResidual:
    """The blocks add the residual into the BN output in place (as torchvision); issue 12, point 4."""

    def test_split_bn_output_is_not_a_view(self):
        # an in-place op on a view would make autograd copy the whole map in the backward pass (CopySlices)
        x = torch.randn(8, 4, 5, 5, requires_grad=True)
        for split in (SplitBatchNorm(4, num_splits=4).train(), SplitBatchNorm1d(4, num_splits=2).train()):
            y = split(x if isinstance(split, SplitBatchNorm) else x[:, :, 0, 0])
            assert not y._is_view()
            y.clone().add_(1.0)  # and it can be changed in place under autograd
        y = SplitBatchNorm(4, num_splits=4).train()(x)
        y += 1.0
        y.sum().backward()
        assert "CopySlices" not in type(y.grad_fn).__name__

    @pytest.mark.parametrize("arch,splits", [("resnet18", 4), ("resnet18", 1), ("resnet50", 2)])
    def test_equals_the_out_of_place_sum_bitwise(self, arch, splits):
        torch.manual_seed(0)
        net = build_backbone(arch, "cifar", width=8, bn_splits=splits).train()
        ref = build_backbone(arch, "cifar", width=8, bn_splits=splits).train()
        ref.load_state_dict(net.state_dict())

        def out_of_place(block, x):  # the formula the in-place sum replaces
            identity = x if block.downsample is None else block.downsample(x)
            if hasattr(block, "bn3"):
                out = block.relu(block.bn1(block.conv1(x)))
                out = block.relu(block.bn2(block.conv2(out)))
                return block.relu(block.bn3(block.conv3(out)) + identity)
            out = block.relu(block.bn1(block.conv1(x)))
            return block.relu(block.bn2(block.conv2(out)) + identity)

        for block in [b for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4) for b in layer]:
            block.forward = out_of_place.__get__(block)
        x = torch.randn(8, 3, 16, 16)
        ys, ys_ref = net(x), ref(x)
        sum(y.square().mean() for y in ys).backward()
        sum(y.square().mean() for y in ys_ref).backward()
        assert all(torch.equal(a, b) for a, b in zip(ys, ys_ref, strict=True))
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(net.parameters(), ref.parameters(), strict=True))
        assert all(torch.equal(a, b) for a, b in zip(net.buffers(), ref.buffers(), strict=True))
