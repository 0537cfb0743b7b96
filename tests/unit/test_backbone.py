"""ResNet backbones (cgh.backbone): torchvision's names and shapes, stems, stage shapes, initialisation,
SplitBatchNorm."""

import json
import math

import pytest
import torch
from torch import nn

from cgh.backbone import ARCHS, ResNet, SplitBatchNorm, SplitBatchNorm1d, build_backbone, convert_split_bn
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

    def test_channels_last_input(self):
        x = torch.randn(8, 4, 5, 5)
        split = SplitBatchNorm(4, num_splits=2).train()
        torch.testing.assert_close(split(x.contiguous(memory_format=torch.channels_last)), split(x))

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
