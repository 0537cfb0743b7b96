"""Augmentation (docs/method.md#augmentations): view shapes and ranges, reproducibility, weak = crop + flip only, strong
colour changes, torchvision crop semantics, the pre-cropped path, local crops, the eval transform and the statistics."""

from __future__ import annotations

import math

import kornia.enhance as KE
import kornia.filters as KF
import pytest
import torch
import torch.nn.functional as F

import cgh.augment.ops as augment_ops
from cgh.augment import NORMALIZATION, AugParams, EvalTransform, ViewAugment, ViewSpec, pretrain_views
from cgh.augment.ops import adjust_hue, color_jitter, crop_boxes, gaussian_blur, random_resized_crop
from cgh.data.loaders import Batch
from tests.reference import torchvision_resized_crop

CIFAR = NORMALIZATION["cifar10"]


def _images(b: int = 16, h: int = 32, w: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w or h), dtype=torch.uint8, generator=g)


def _denorm(x: torch.Tensor, mean_std=CIFAR) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    return x * std + mean


def _as_float(x: torch.Tensor, mean_std=CIFAR) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    return (x.float() / 255 - mean) / std


# ----------------------------------------------------------------------------------------------------- views, shapes


def test_views_shapes_dtype_device_and_range():
    specs = pretrain_views(32, num_local=4)
    aug = ViewAugment(specs, mean=CIFAR[0], std=CIFAR[1])
    x = _images(8)
    out = aug([x])
    assert len(out) == 6
    for view, spec in zip(out, specs, strict=True):
        assert view.shape == (8, 3, spec.size, spec.size)
        assert view.dtype == torch.float32 and view.device == x.device
        d = _denorm(view)
        assert d.min() >= -1e-5 and d.max() <= 1 + 1e-5


def test_local_view_sizes_and_scales_follow_spec_3_3():
    specs = pretrain_views(224, num_local=4)
    assert [s.size for s in specs] == [224, 224, 192, 160, 128, 96]
    assert [s.scale for s in specs[2:]] == [(0.172, 0.86), (0.143, 0.715), (0.114, 0.571), (0.086, 0.429)]
    assert [s.strong for s in specs] == [False, True, True, True, True, True]
    assert [s.size for s in pretrain_views(32, num_local=4)[2:]] == [27, 23, 18, 14]
    assert [s.size for s in pretrain_views(8, num_local=4)[2:]] == [8, 8, 8, 8]  # at least 8 px
    explicit = pretrain_views(32, num_local=5, local_sizes=[16] * 5, local_scales=[(0.1, 0.5)] * 5)
    assert [s.size for s in explicit[2:]] == [16] * 5
    with pytest.raises(ValueError, match="num_local=5"):
        pretrain_views(32, num_local=5)
    with pytest.raises(ValueError, match="teacher"):
        pretrain_views(32, teacher="medium")
    with pytest.raises(ValueError, match="weak_scale"):
        pretrain_views(32, weak_scale=(0.5, 0.2))


def test_teacher_strong_gives_two_strong_views():
    specs = pretrain_views(32, teacher="strong")
    assert [s.strong for s in specs] == [True, True]
    assert pretrain_views(32)[0] == ViewSpec(32, (0.2, 1.0), strong=False)


def test_reproducible_under_manual_seed_and_seeds_differ():
    aug = ViewAugment(pretrain_views(32, num_local=2), mean=CIFAR[0], std=CIFAR[1])
    x = _images(16)
    torch.manual_seed(3)
    a = aug([x])
    torch.manual_seed(3)
    b = aug([x])
    torch.manual_seed(4)
    c = aug([x])
    for va, vb, vc in zip(a, b, c, strict=True):
        assert torch.equal(va, vb)
        assert not torch.equal(va, vc)


def test_no_grad_and_channels_last_input_give_the_same_views():
    aug = ViewAugment(pretrain_views(32, num_local=1), mean=CIFAR[0], std=CIFAR[1])
    x = _images(8)
    torch.manual_seed(0)
    ref = aug([x])
    torch.manual_seed(0)
    with torch.no_grad():
        out = aug([x.contiguous(memory_format=torch.channels_last)])
    for r, o in zip(ref, out, strict=True):
        torch.testing.assert_close(o, r, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- weak / strong


def _is_image_or_mirror(view: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    same = (view - image).abs().amax(dim=(1, 2, 3)) < 1e-4
    mirror = (view - image.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-4
    return same, mirror


def test_weak_view_is_only_a_flip_of_the_crop():
    # A crop covering the whole image at the same size: the weak view must be the image or its mirror, exactly.
    aug = ViewAugment([ViewSpec(32, (1.0, 1.0), strong=False, ratio=(1.0, 1.0))], mean=CIFAR[0], std=CIFAR[1])
    x = _images(64)
    same, mirror = _is_image_or_mirror(aug([x])[0], _as_float(x))
    assert bool((same | mirror).all())
    assert same.any() and mirror.any()  # flip p = 0.5 over 64 samples


def test_strong_views_change_colour():
    x = _images(32)
    gray = AugParams(jitter_p=1.0, grayscale_p=1.0, blur_p=0.0)
    view = ViewAugment([ViewSpec(32, (0.2, 1.0), strong=True)], gray, mean=(0.5,) * 3, std=(0.25,) * 3)([x])[0]
    assert torch.allclose(view[:, 0], view[:, 1], atol=1e-5) and torch.allclose(view[:, 1], view[:, 2], atol=1e-5)
    # Jitter alone on a whole-image crop: per-image channel means move (weak views keep them, see above).
    jitter = AugParams(jitter_p=1.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0)
    whole = ViewSpec(32, (1.0, 1.0), strong=True, ratio=(1.0, 1.0))
    view = ViewAugment([whole], jitter, mean=CIFAR[0], std=CIFAR[1])([x])[0]
    moved = (_denorm(view).mean(dim=(2, 3)) - (x.float() / 255).mean(dim=(2, 3))).abs().amax(dim=1)
    assert (moved > 0.01).float().mean() > 0.9


def test_blur_sigma_is_scaled_to_the_global_view_size():
    small = ViewAugment(pretrain_views(32, num_local=4))
    assert small.blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))
    assert small.blur_kernel == 3
    assert ViewAugment(pretrain_views(224, num_local=4)).blur_kernel == 13  # 2 * ceil(3 * 2.0) + 1, as PIL's 2 px
    fixed = ViewAugment(pretrain_views(32), AugParams(blur_relative=False))
    assert fixed.blur_sigma == (0.1, 2.0) and fixed.blur_kernel == 13


def test_hue_matches_kornia_adjust_hue_including_greys_and_ties():
    x = torch.rand(16, 3, 12, 12)
    x[:, :, :3] = 0.5  # grey pixels (no hue)
    x[:4, 1] = x[:4, 0]  # R == G ties
    x[4:8, 2] = x[4:8, 1]  # G == B ties
    shift = torch.linspace(-0.5, 0.5, 16)
    torch.testing.assert_close(adjust_hue(x, shift), KE.adjust_hue(x, shift * 2 * math.pi), rtol=0, atol=1e-5)
    torch.testing.assert_close(adjust_hue(x, torch.zeros(16)), x, rtol=0, atol=1e-6)


def test_blur_matches_kornia_gaussian_blur2d():
    x = torch.rand(6, 3, 20, 17)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    ref = KF.gaussian_blur2d(x, (9, 9), sigma.view(-1, 1).expand(-1, 2), border_type="reflect")
    torch.testing.assert_close(gaussian_blur(x, sigma, 9), ref, rtol=0, atol=1e-5)


def test_color_jitter_gate_and_brightness_factor_range():
    x = torch.rand(64, 3, 8, 8) * 0.45 + 0.25  # so that 1.4 x stays below 1 (no clamping)
    torch.testing.assert_close(color_jitter(x, (0.4, 0.4, 0.4, 0.1), p=0.0), x, rtol=0, atol=1e-5)
    y = color_jitter(x, (0.4, 0.0, 0.0, 0.0), p=1.0)  # brightness only: y = f x with f in [0.6, 1.4]
    ratio = (y / x).flatten(1)
    assert torch.allclose(ratio.amin(1), ratio.amax(1), atol=1e-5)  # one factor per image
    assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1.4 + 1e-5 and ratio.std() > 0.1


# -------------------------------------------------------------------------------------------------------------- crop


@pytest.mark.parametrize(
    ("b", "h", "w", "size", "scale"),
    [
        (64, 32, 32, 32, (0.2, 1.0)),  # CIFAR: every crop is enlarged -> grid_sample path
        (32, 96, 96, 64, (0.2, 1.0)),  # STL-10 at 64: crops shrunk -> antialiased matrix path
        (16, 40, 47, 14, (0.086, 0.429)),  # a local crop of a non-square image
        (32, 48, 48, 32, (0.2, 1.0)),  # some crops shrunk, some enlarged
        (32, 40, 40, 32, (0.08, 0.5)),  # nearly all enlarged, of images larger than the output
    ],
)
@pytest.mark.parametrize("gpu_path", [False, True])
def test_crop_matches_torchvision_resized_crop_semantics(b, h, w, size, scale, gpu_path, monkeypatch):
    """Both paths, and on a GPU (which does not read the boxes back) the antialiased one for every batch of images
    larger than the output, enlarged crops included."""
    if gpu_path:
        monkeypatch.setattr(augment_ops, "READ_FREE_DEVICES", ())
    x = torch.rand(b, 3, h, w)
    torch.manual_seed(7)
    out = random_resized_crop(x, size, scale, (3 / 4, 4 / 3), flip_p=0.0)
    torch.manual_seed(7)
    boxes = [t.long().tolist() for t in crop_boxes(b, h, w, scale, (3 / 4, 4 / 3), x.device)]
    ref = torchvision_resized_crop(x, boxes, size)  # torchvision's crop, then resize with antialias=True
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.manual_seed(7)
    flipped = random_resized_crop(x, size, scale, (3 / 4, 4 / 3), flip_p=1.0)
    torch.testing.assert_close(flipped, ref.flip(-1), rtol=0, atol=1e-5)


def test_crop_boxes_respect_scale_and_ratio():
    torch.manual_seed(0)
    top, left, h, w = crop_boxes(4096, 64, 64, (0.2, 1.0), (3 / 4, 4 / 3), torch.device("cpu"))
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 64) & (left + w <= 64)).all())
    area = h * w / 64**2
    # Rounding the sides moves area and aspect slightly past the bounds.
    assert area.min() >= 0.2 * 0.9 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() >= 3 / 4 * 0.9 and aspect.max() <= 4 / 3 * 1.1
    assert area.std() > 0.1 and (top + h / 2).float().std() > 3  # spread, not stuck at the centre
    # No try fits (scale above 1): torchvision's fallback, the whole image clamped to the ratio range, centred.
    top, left, h, w = crop_boxes(8, 40, 100, (2.0, 2.0), (3 / 4, 4 / 3), torch.device("cpu"))
    assert h.tolist() == [40] * 8 and w.tolist() == [round(40 * 4 / 3)] * 8
    assert left.tolist() == [(100 - 53) // 2] * 8 and top.tolist() == [0] * 8


# ------------------------------------------------------------------------------------------------------ pre-cropped


def test_precropped_views_skip_the_crop():
    specs = pretrain_views(32, num_local=2)
    aug = ViewAugment(specs, AugParams(jitter_p=1.0), mean=CIFAR[0], std=CIFAR[1])
    crops = [_images(16, s.size, seed=i) for i, s in enumerate(specs)]
    out = aug(crops)
    assert [tuple(v.shape) for v in out] == [(16, 3, s.size, s.size) for s in specs]
    same, mirror = _is_image_or_mirror(out[0], _as_float(crops[0]))  # weak: flip only, no crop, no colour
    assert bool((same | mirror).all())
    same, mirror = _is_image_or_mirror(out[1], _as_float(crops[1]))
    assert not bool((same | mirror).any())  # strong: colour changed
    with pytest.raises(ValueError, match=r"must be 27x27"):
        aug([crops[0], crops[1], crops[1], crops[3]])
    with pytest.raises(ValueError, match=r"1 tensor of full images or 4 pre-cropped"):
        aug(crops[:2])


def test_single_spec_batch_says_whether_it_is_cropped():
    # One spec and one tensor is ambiguous: a bare tensor is full images (cropped here); a loader Batch says which.
    spec = ViewSpec(32, (0.2, 0.2), strong=False, ratio=(1.0, 1.0))
    aug = ViewAugment([spec], mean=CIFAR[0], std=CIFAR[1])
    x = _images(16)
    labels, index = torch.zeros(16, dtype=torch.long), torch.arange(16)
    same, mirror = _is_image_or_mirror(aug(Batch([x], labels, index, [], cropped=True))[0], _as_float(x))
    assert bool((same | mirror).all())
    for full in (x, [x], Batch([x], labels, index, [], cropped=False)):
        same, mirror = _is_image_or_mirror(aug(full)[0], _as_float(x))  # a 20% crop, enlarged
        assert not bool((same | mirror).any())
    with pytest.raises(ValueError, match="1 tensor of full images or 2 pre-cropped"):
        ViewAugment(pretrain_views(32))(Batch([x], labels, index, [], cropped=True))


def test_bad_inputs_raise_value_errors_naming_the_expectation():
    aug = ViewAugment(pretrain_views(32))
    with pytest.raises(ValueError, match="uint8"):
        aug([torch.rand(2, 3, 32, 32)])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        aug([torch.zeros(2, 1, 32, 32, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="same batch size"):
        aug([_images(2), _images(3)])
    with pytest.raises(ValueError, match="probability"):
        AugParams(blur_p=1.5)
    with pytest.raises(ValueError, match="hue"):
        AugParams(jitter=(0.4, 0.4, 0.4, 0.7))
    with pytest.raises(ValueError, match="mean and std"):
        ViewAugment(pretrain_views(32), mean=(0.5, 0.5), std=(0.2, 0.2, 0.2))


def test_augparams_accepts_config_lists_and_positional_fields():
    p = AugParams(jitter=[0.4, 0.4, 0.4, 0.1], blur_sigma=[0.1, 2.0])
    assert p == AugParams() and hash(p) == hash(AugParams())
    # cgh.train.loop builds it positionally from config.AugConfig, in this order.
    q = AugParams((0.1, 0.2, 0.3, 0.04), 0.5, 0.6, 0.7, (0.2, 1.0), False, 0.9)
    assert (q.jitter, q.jitter_p, q.grayscale_p, q.blur_p, q.blur_sigma, q.blur_relative, q.flip_p) == (
        (0.1, 0.2, 0.3, 0.04),
        0.5,
        0.6,
        0.7,
        (0.2, 1.0),
        False,
        0.9,
    )


# ------------------------------------------------------------------------------------------------------------- eval


def test_eval_transform_same_size_only_normalises():
    x = _images(4, 32)
    out = EvalTransform(32, *CIFAR)(x)
    torch.testing.assert_close(out, _as_float(x))


def test_eval_transform_resizes_shorter_side_and_centre_crops():
    x = _images(4, 96, 120)
    out = EvalTransform(64, *NORMALIZATION["stl10"])(x)
    assert out.shape == (4, 3, 64, 64)
    ref = F.interpolate(x.float() / 255, size=(64, 80), mode="bilinear", antialias=True)[..., :, 8:72]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION["stl10"])
    torch.testing.assert_close(out, (ref - mean) / std, rtol=0, atol=1e-5)
    imagenet = EvalTransform(224, *NORMALIZATION["imagenet"], resize=256)(_images(2, 300, 400))
    assert imagenet.shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform(32, *CIFAR)(torch.rand(1, 3, 32, 32))


# ------------------------------------------------------------------------------------------------------- statistics


def test_normalization_matches_spec():
    assert NORMALIZATION["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # docs/method.md#strong-view
    assert NORMALIZATION["imagenet100"] == NORMALIZATION["imagenet"]
    # docs/method.md#small-datasets
    assert NORMALIZATION["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert NORMALIZATION["cifar100"] == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    assert NORMALIZATION["stl10"] == ((0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686))
    assert NORMALIZATION["tinyimagenet"] == ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
    assert NORMALIZATION["synthetic"] == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert NORMALIZATION["folder"] == NORMALIZATION["npz"] == NORMALIZATION["imagenet"]
    for mean, std in NORMALIZATION.values():
        assert len(mean) == len(std) == 3 and all(0 < s < 1 for s in std) and not any(math.isnan(m) for m in mean)
