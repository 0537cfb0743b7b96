"""Image decoding helpers (cgh.data.decode): RandomResizedCrop boxes, crop-resize, the reduced (draft) JPEG decode
and the evaluation resize."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from sklearn.datasets import load_sample_image

from cgh.config.views import ViewSpec
from cgh.data import open_source
from cgh.data.decode import (
    draft_scale,
    load_image,
    open_image,
    random_resized_crop_box,
    resize_center_crop,
    resized_crop,
    resized_crop_scaled,
)
from cgh.data.loaders import _CropDataset
from cgh.errors import DataError
from tests.reference import torchvision_crop_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img))  # (H, W, 3) uint8


def test_random_resized_crop_box_properties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(5, 300)), int(rng.integers(5, 300))
        top, left, ch, cw = random_resized_crop_box(w, h, (0.2, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
    # Impossible area/ratio requests fall back to the centred crop with the ratio clamped (torchvision).
    assert random_resized_crop_box(100, 10, (1.0, 1.0), (1.0, 1.0), rng) == (0, 45, 10, 10)
    assert random_resized_crop_box(40, 40, (1.0, 1.0), (2.0, 3.0), rng) == (10, 0, 20, 40)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8))
    same_size = resized_crop(image_tensor(img), (2, 1, 5, 5), 5)  # a crop of the output size is not resampled
    assert np.array_equal(same_size.permute(1, 2, 0).numpy(), np.asarray(img)[2:7, 1:6])
    big = Image.new("RGB", (300, 200))
    # docs/method.md#test-transforms: Resize(256) -> 384x256, CenterCrop(224) at offsets (80, 16).
    assert resize_center_crop(big, 256, 224).size == (224, 224)


# ----------------------------------------------------------------------------------------------------------------------
# Crops of real photographs: torch's uint8 resize against torchvision's PIL path, and the reduced JPEG decode
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-learn's two bundled photographs (640 x 427) as JPEG files: at their own size, and enlarged to
    1600 x 1067 and 1280 x 853 so that most 224 px crops can be decoded at a reduced scale."""
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("china.jpg", "flower.jpg"):
        img = Image.fromarray(load_sample_image(name))
        for size in ((640, 427), (1600, 1067), (1280, 853)):
            path = root / f"{size[0]}" / name
            path.parent.mkdir(exist_ok=True)
            img.resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
            paths.setdefault(size, []).append(str(path))
    return paths


def tv_resized_crop(img: Image.Image, box, size: int) -> np.ndarray:
    """torchvision's ``F.resized_crop`` on a PIL image: ``crop`` then ``resize`` (bilinear, Pillow's antialiasing)."""
    top, left, h, w = box
    return np.asarray(img.crop((left, top, left + w, top + h)).resize((size, size), Image.Resampling.BILINEAR))


def test_resized_crop_matches_torchvision_pil_path_on_photographs(photos):
    """Shrinking and enlarging crops of real JPEGs agree with torchvision's PIL path within one grey level."""
    rng = np.random.default_rng(0)
    img = load_image(photos[(640, 427)][0])
    hwc = image_tensor(img)
    shrunk = enlarged = 0
    for _ in range(40):
        box = random_resized_crop_box(*img.size, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        out = resized_crop(hwc, box, 224)
        assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
        diff = np.abs(out.permute(1, 2, 0).numpy().astype(int) - tv_resized_crop(img, box, 224).astype(int))
        assert diff.max() <= 1, box
        shrunk += min(box[2:]) > 224
        enlarged += max(box[2:]) < 224
    assert shrunk and enlarged  # both directions of the resample were checked


def test_draft_scale_is_the_largest_reduction_every_crop_survives():
    assert draft_scale([(0, 0, 1800, 2000)], [224]) == 8  # 1800 >= 8 * 224
    assert draft_scale([(0, 0, 1791, 2000)], [224]) == 4  # 1791 < 1792
    assert draft_scale([(0, 0, 900, 900), (5, 5, 460, 500)], [224, 224]) == 2  # the smallest crop decides
    assert draft_scale([(0, 0, 900, 900), (5, 5, 400, 500)], [224, 96]) == 4  # 400 >= 4 * 96
    assert draft_scale([(0, 0, 300, 500)], [224]) == 1


def test_reduced_decode_of_a_jpeg_and_a_png(photos, tmp_path):
    path = photos[(1600, 1067)][0]
    image = open_image(path)
    assert image.size == (1600, 1067)
    full, one = image.decode()
    assert one == 1 and full.shape == (1067, 1600, 3) and full.dtype == np.uint8
    for scale in (2, 4, 8):
        hwc, applied = image.decode(scale)
        assert applied == scale and hwc.shape == (math.ceil(1067 / scale), math.ceil(1600 / scale), 3)
    png = tmp_path / "x.png"
    Image.fromarray(full).save(png)
    hwc, applied = open_image(str(png)).decode(4)  # only JPEG has a reduced decode
    assert applied == 1 and np.array_equal(hwc, full)
    (tmp_path / "cut.jpg").write_bytes(open(path, "rb").read()[:5000])
    for scale in (1, 4):  # truncated: the error names the file, reduced decode or not
        with pytest.raises(DataError, match="cut.jpg"):
            open_image(str(tmp_path / "cut.jpg")).decode(scale)
    with pytest.raises(DataError, match="missing.jpg"):
        open_image(str(tmp_path / "missing.jpg"))
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(DataError, match="text.jpg"):
        open_image(str(tmp_path / "text.jpg"))


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # Pillow's codes for 4:4:4, 4:2:2, 4:2:0
@pytest.mark.parametrize("progressive", [False, True])
def test_simplejpeg_decodes_the_pixels_pillow_decodes(photos, tmp_path, monkeypatch, subsampling, progressive):
    """simplejpeg and Pillow run the same libjpeg-turbo decode: the same pixels, fully and at 1/2 and 1/4 (measured:
    identical); grayscale and CMYK JPEGs, which simplejpeg leaves to Pillow, come out as Pillow's RGB."""
    import cgh.data.decode as decode

    assert decode.simplejpeg is not None  # a dependency of cgh: the fast path is what runs
    src = Image.open(photos[(1280, 853)][1])
    files = {"rgb": tmp_path / "rgb.jpg", "gray": tmp_path / "gray.jpg", "cmyk": tmp_path / "cmyk.jpg"}
    src.save(files["rgb"], quality=88, subsampling=subsampling, progressive=progressive)
    src.convert("L").save(files["gray"], quality=88, progressive=progressive)
    src.convert("CMYK").save(files["cmyk"], quality=88, progressive=progressive)
    fast = {k: [open_image(str(f)).decode(s) for s in (1, 2, 4)] for k, f in files.items()}
    monkeypatch.setattr(decode, "simplejpeg", None)
    slow = {k: [open_image(str(f)).decode(s) for s in (1, 2, 4)] for k, f in files.items()}
    for k in files:
        for (a, sa), (b, sb) in zip(fast[k], slow[k], strict=True):
            assert sa == sb and a.shape == b.shape
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, k
    assert np.array_equal(fast["rgb"][0][0], np.asarray(Image.open(files["rgb"]).convert("RGB")))


def test_reduced_decode_differs_from_the_full_decode_by_resampling_noise_only(photos):
    """A crop resampled from a JPEG decoded at 1/2, 1/4 or 1/8 differs from the same crop of the full decode less
    than two standard resamplings of the full decode differ (bilinear against bicubic) on average, and far less than
    the same crop moved by one pixel: no geometric shift, only resampling noise. Measured: mean absolute difference
    0.78 grey levels (draft), 1.17 (bicubic), 3.47 (one-pixel shift)."""
    rng = np.random.default_rng(1)
    draft_err, bicubic_err, scales = [], [], set()
    for path in photos[(1600, 1067)] + photos[(1280, 853)]:
        full = load_image(path)
        hwc = image_tensor(full)
        for _ in range(12):
            box = random_resized_crop_box(*full.size, (0.2, 1.0), (3 / 4, 4 / 3), rng)
            scale = draft_scale([box], [224])
            if scale == 1:
                continue
            reduced, applied = open_image(path).decode(scale)
            assert applied == scale
            ref = resized_crop(hwc, box, 224).float()
            err = (resized_crop_scaled(Image.fromarray(reduced), box, 224, scale).float() - ref).abs()
            top, left, h, w = box
            bicubic = torch.from_numpy(np.array(full.crop((left, top, left + w, top + h)).resize(
                (224, 224), Image.Resampling.BICUBIC))).permute(2, 0, 1).float()
            moved = resized_crop(hwc, (top + 1, left + 1, h, w) if top + h < full.size[1] and left + w < full.size[0]
                                 else (top - 1, left - 1, h, w), 224).float()
            assert err.mean() < (moved - ref).abs().mean(), box  # never a shift
            assert 10 * math.log10(255**2 / float((err**2).mean())) > 30, box  # PSNR
            draft_err.append(float(err.mean()))
            bicubic_err.append(float((bicubic - ref).abs().mean()))
            scales.add(scale)
    assert len(draft_err) >= 20 and scales >= {2, 4}
    assert np.mean(draft_err) < np.mean(bicubic_err)


def test_the_loader_draws_the_same_crop_boxes_with_the_reduced_decode(photos, tmp_path):
    """The boxes are drawn from the header's size, exactly as before from the decoded image's size, and the loader's
    crops are those boxes' crops of the full image (to the reduced decode's noise), whichever way each was decoded."""
    root = tmp_path / "photos"
    root.mkdir()
    for k, path in enumerate(photos[(1600, 1067)] + photos[(640, 427)]):
        (root / f"{k}.jpg").write_bytes(open(path, "rb").read())
    src = open_source("folder", str(root), "train")
    specs = [ViewSpec(224, (0.2, 1.0), False), ViewSpec(96, (0.05, 0.14), True)]
    drafted = _CropDataset(src, specs, seed=3, corrupt="error")
    full_decode = _CropDataset(src, specs, seed=3, corrupt="error", jpeg_draft=False)
    reduced = 0
    for epoch in range(3):
        for i in range(len(src)):
            img = src.load(i)
            rng = np.random.default_rng([3, epoch, i])  # the draw of the pre-draft code, on the decoded size
            boxes = [random_resized_crop_box(*img.size, s.scale, s.ratio, rng) for s in specs]
            assert drafted.boxes(epoch, i, *open_image(drafted.path(i)).size) == boxes
            reduced += draft_scale(boxes, [s.size for s in specs]) > 1
            a, b = drafted[(epoch, i)][0], full_decode[(epoch, i)][0]
            for crop, exact, box, spec in zip(a, b, boxes, specs, strict=True):
                assert torch.equal(exact, resized_crop(image_tensor(img), box, spec.size))
                assert (crop.float() - exact.float()).abs().mean() < 2.5
    assert reduced >= 3  # the reduced decode was exercised


def test_crop_boxes_follow_torchvision_distributions():
    """The boxes drawn for a 1600 x 1067 image have torchvision's distribution (its own algorithm on torch's RNG,
    tests/reference.py): two-sample Kolmogorov-Smirnov tests on the area fraction, the log aspect ratio and the
    box centre. (The area is not uniform: large boxes of some aspect ratios do not fit and are drawn again.)"""
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    ours = np.array([random_resized_crop_box(1600, 1067, (0.2, 1.0), (3 / 4, 4 / 3), rng) for _ in range(3000)])
    ref = np.array([torchvision_crop_params(1067, 1600, (0.2, 1.0), (3 / 4, 4 / 3), gen) for _ in range(3000)])
    for name, f in (("area", lambda b: b[:, 2] * b[:, 3]), ("log ratio", lambda b: np.log(b[:, 3] / b[:, 2])),
                    ("centre y", lambda b: b[:, 0] + b[:, 2] / 2), ("centre x", lambda b: b[:, 1] + b[:, 3] / 2)):
        assert stats.ks_2samp(f(ours), f(ref)).pvalue > 1e-3, name
    shifted = np.array([random_resized_crop_box(1600, 1067, (0.3, 1.0), (3 / 4, 4 / 3), rng) for _ in range(3000)])
    assert stats.ks_2samp(shifted[:, 2] * shifted[:, 3], ref[:, 2] * ref[:, 3]).pvalue < 1e-6  # the test can fail
