"""Hypercolumn stacking and the hypercolumn head (cgh.model.heads), docs/method.md#hypercolumn-head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cgh.model.heads import HypercolumnHead, stack_hypercolumn


class TestHypercolumn:
    def stages(self, arch="resnet18", size=32):
        from cgh.model.backbone import ResNet

        net = ResNet(arch, stem="cifar")
        with torch.no_grad():
            return net(torch.randn(2, 3, size, size)), net.stage_channels

    def test_stack_default_resizes_layer3_to_layer4(self):
        stages, _ = self.stages()
        h = stack_hypercolumn(stages)
        assert h.shape == (2, 256 + 512, 4, 4)  # docs/method.md#hypercolumn-head: R18 stacks 768 channels
        torch.testing.assert_close(h[:, 256:], stages.layer4)  # layer4 is not resized
        torch.testing.assert_close(h[:, :256], F.interpolate(stages.layer3, size=(4, 4), mode="bilinear",
                                                             align_corners=False))

    def test_options(self):
        stages, _ = self.stages()
        avg = stack_hypercolumn(stages, ("layer2", "layer4"), resize="avgpool")
        torch.testing.assert_close(avg[:, :128], F.adaptive_avg_pool2d(stages.layer2, 4))
        first = stack_hypercolumn(stages, ("layer3", "layer4"), target="first")
        assert first.shape == (2, 768, 8, 8)
        scaled = stack_hypercolumn(stages, ("layer3", "layer4"), scale=True)
        torch.testing.assert_close(scaled[:, 256:], stages.layer4)
        torch.testing.assert_close(scaled[:, :256], 0.25 * stack_hypercolumn(stages)[:, :256])  # kappa 1/4
        normed = stack_hypercolumn(stages, ("layer4",), l2norm=True)
        torch.testing.assert_close(normed.norm(dim=1), torch.ones(2, 4, 4))

    def test_head_dimensions_follow_the_paper(self):
        head = HypercolumnHead({"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048})
        assert head.reduce[0].weight.shape == (2048, 3072, 1, 1)  # docs/method.md#hypercolumn-head: R50 3072 -> 2048
        assert [m.out_features for m in head.mlp if hasattr(m, "out_features")] == [4096, 512]

    def test_bad_layer_names(self):
        with pytest.raises(ValueError, match="layer5"):
            HypercolumnHead({"layer4": 8}, layers=("layer5",))
