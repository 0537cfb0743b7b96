"""Images of every Pillow mode decoded as 8-bit RGB (cgh.data.image_modes), written as real files: 16-bit PNGs made
from a photograph (a 16-bit greyscale PNG used to become all white), 32-bit and float TIFFs, transparency, CMYK; and
the same pixels through every decode path (load_image, decode_all / in-memory folders, the evaluation loader, the
pretraining loader's crops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from cgh.config.views import ViewSpec
from cgh.data import build_eval_loader, build_pretrain_loader, open_source
from cgh.data.decode import decode_all, load_image
from cgh.data.image_modes import ALPHA_BACKGROUND, rgb_pixels
from tests.helpers import png_bit_depth, save_png, save_png16

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 96 x 128 crop of one of scikit-learn's bundled photographs, (H, W, 3) uint8."""
    return load_sample_image("china.jpg")[100:196, 200:328].copy()


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))  # (H, W) uint8


def decoded(path) -> np.ndarray:
    return np.asarray(load_image(str(path)))  # (H, W, 3) uint8


def test_a_16_bit_greyscale_png_is_scaled_to_8_bits_not_white(photo, tmp_path):
    """The issue's file: a 16-bit greyscale PNG became all white (Pillow clips I;16 at 255)."""
    rng = np.random.default_rng(0)
    grey = grey_of(photo)
    samples = (grey.astype(np.uint32) * 257 + rng.integers(-128, 129, grey.shape)).clip(0, 65535).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(samples).save(path)  # Pillow writes mode I;16 as a 16-bit PNG
    assert png_bit_depth(path) == 16 and Image.open(path).mode == "I;16"
    out = decoded(path)
    assert out.shape == (96, 128, 3) and (out == out[:, :, :1]).all()
    assert np.array_equal(out[:, :, 0], np.rint(samples / 257).astype(np.uint8))
    assert np.abs(out[:, :, 0].astype(int) - grey).max() <= 1 and out.mean() < 200


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16_bit_rgb_rgba_and_grey_alpha_pngs(photo, tmp_path, channels):
    """Pillow reads these as 8-bit RGB(A) itself (the high byte); alpha, where there is one, is composited."""
    rgb16 = photo.astype(np.uint16) * 257
    alpha16 = np.zeros(photo.shape[:2], np.uint16)
    alpha16[:, 64:] = 65535  # the left half transparent, the right half opaque
    samples = {3: rgb16, 4: np.dstack([rgb16, alpha16]), 2: np.dstack([grey_of(photo).astype(np.uint16) * 257,
                                                                       alpha16])}[channels]
    path = tmp_path / "photo16.png"
    save_png16(path, samples)
    assert png_bit_depth(path) == 16
    out = decoded(path)
    opaque = photo if channels != 2 else np.repeat(grey_of(photo)[:, :, None], 3, axis=2)
    if channels == 3:
        assert np.array_equal(out, photo)
        return
    assert np.array_equal(out[:, 64:], opaque[:, 64:])
    assert (out[:, :64] == np.asarray(ALPHA_BACKGROUND, np.uint8)).all()


def test_transparent_pixels_are_composited_on_the_background(tmp_path):
    """A transparent pixel that stores black used to come out black; half-transparent ones are blended."""
    rgba = np.zeros((4, 4, 4), np.uint8)  # transparent black
    rgba[0, 0] = (200, 100, 0, 255)  # opaque
    rgba[0, 1] = (0, 0, 0, 128)  # half-transparent black over white: 127
    save_png(tmp_path / "rgba.png", rgba)
    out = decoded(tmp_path / "rgba.png")
    assert out[0, 0].tolist() == [200, 100, 0] and out[0, 1].tolist() == [127, 127, 127]
    assert (out[1:] == 255).all()
    # a palette image with a transparent index, and 8-bit grey + alpha
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / "pal.png", transparency=0)
    assert decoded(tmp_path / "pal.png").reshape(4, 3).tolist() == [[255, 0, 0]] + [[255, 255, 255]] * 3
    Image.fromarray(np.dstack([np.full((2, 2), 30, np.uint8), np.array([[255, 0], [0, 255]], np.uint8)]),
                    "LA").save(tmp_path / "la.png")
    assert decoded(tmp_path / "la.png")[:, :, 0].tolist() == [[30, 255], [255, 30]]


def test_32_bit_and_float_tiffs_and_the_other_modes(photo, tmp_path):
    grey = grey_of(photo)
    expected_grey = np.repeat(grey[:, :, None], 3, axis=2)
    Image.fromarray(grey.astype(np.int32) * 257).save(tmp_path / "i32.tif")  # mode I, on the 16-bit scale
    Image.fromarray(grey.astype(np.float32) / 255).save(tmp_path / "unit.tif")  # mode F in [0, 1]
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "byte.tif")  # mode F in [0, 255]
    assert [Image.open(tmp_path / f).mode for f in ("i32.tif", "unit.tif", "byte.tif")] == ["I", "F", "F"]
    for name in ("i32.tif", "unit.tif", "byte.tif"):
        assert np.array_equal(decoded(tmp_path / name), expected_grey), name
    # CMYK (a JPEG goes through Pillow, which simplejpeg cannot turn into RGB; a TIFF is lossless), bilevel, grey
    cmyk = Image.fromarray(photo).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    assert np.array_equal(decoded(tmp_path / "cmyk.tif"), np.asarray(cmyk.convert("RGB")))
    assert np.abs(decoded(tmp_path / "cmyk.jpg").astype(int) - photo).mean() < 4
    Image.fromarray(grey > 128).save(tmp_path / "bilevel.png")
    assert set(np.unique(decoded(tmp_path / "bilevel.png"))) == {0, 255}
    assert rgb_pixels(Image.fromarray(grey)).shape == (96, 128, 3)


def test_every_decode_path_reads_a_16_bit_png_as_its_8_bit_twin(photo, tmp_path):
    """Folders of the same photographs, one as 8-bit PNGs and one as 16-bit PNGs (v * 257): the in-memory folder
    (decode_all), the evaluation loader and the pretraining loader's crops give the same pixels for both."""
    grey = grey_of(photo)
    for i, crop in enumerate((slice(0, 64), slice(32, 96))):
        save_png(tmp_path / "8bit" / "a" / f"{i}.png", np.ascontiguousarray(photo[:, crop]))
        save_png16(str(tmp_path / "16bit" / "a" / f"{i}.png"), photo[:, crop].astype(np.uint16) * 257)
        save_png(tmp_path / "8bit" / "b" / f"{i}.png", np.ascontiguousarray(grey[:, crop]))
        (tmp_path / "16bit" / "b").mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(grey[:, crop]).astype(np.uint16) * 257).save(
            tmp_path / "16bit" / "b" / f"{i}.png")
    eight, sixteen = str(tmp_path / "8bit"), str(tmp_path / "16bit")

    def same(a: torch.Tensor, b: torch.Tensor) -> None:
        assert a.dtype == torch.uint8 and torch.equal(a, b)

    files = sorted(str(p.relative_to(tmp_path / "8bit")) for p in (tmp_path / "8bit").rglob("*.png"))
    same(decode_all([f"{eight}/{f}" for f in files], 32, num_workers=0),
         decode_all([f"{sixteen}/{f}" for f in files], 32, num_workers=0))
    for options in ({"in_memory": True, "image_size": 32, "num_workers": 0}, {}):
        a, b = (open_source("folder", root, "train", **options) for root in (eight, sixteen))
        if options:  # an ArraySource
            same(a.images, b.images)
            continue
        batches = [next(iter(build_eval_loader(s, 48, 4))) for s in (a, b)]
        same(batches[0][0], batches[1][0])
        specs = [ViewSpec(32, (0.2, 1.0), False), ViewSpec(24, (0.2, 1.0), True)]
        crops = [next(iter(build_pretrain_loader(s, specs, 4, seed=3))).views for s in (a, b)]
        for x, y in zip(*crops, strict=True):
            same(x, y)


def _transparent_pngs(root, split, n=4):
    """``n`` RGBA PNGs (half of each image transparent, stored black) in every class folder of ``root/split``."""
    paths = []
    for cls in sorted(p.name for p in (root / split).iterdir()):
        for k in range(n):
            rgba = np.zeros((40, 40, 4), np.uint8)
            rgba[:, :, :3] = np.asarray(Image.open(root / split / cls / "00.jpg"))
            rgba[:, :20, 3] = 255  # the right half transparent, its colour black
            path = root / split / cls / f"alpha{k}.png"
            Image.fromarray(rgba, "RGBA").save(path)
            paths.append(path)
    return paths


def test_transparent_pixels_are_noted_once_per_command(tmp_path, capfd):
    """Transparent PNG pixels used to become black silently; they are composited on white now, and the first image
    with transparent pixels that a command meets is named in one note, also when two loader workers meet several."""
    from cgh.cli import main
    from cgh.model.backbone import ResNet
    from tests.helpers import TINY, photo_folder

    photos = tmp_path / "photos"
    photo_folder(photos)
    transparent = _transparent_pngs(photos, "train") + _transparent_pngs(photos, "val")
    weights = tmp_path / "r18.pth"
    torch.save(ResNet("resnet18", stem="cifar", width=8, num_classes=0).state_dict(), weights)
    knn = ["knn", str(weights), "--dataset", "folder", "--data-path", str(photos), "--image-size", "32",
           "--num-workers", "2", "--k", "3"]
    for _ in range(2):  # once per command, also for a second command in the same process
        assert main(knn) == 0
        err = capfd.readouterr().err
        notes = [line for line in err.splitlines() if "transparent pixels" in line]
        assert len(notes) == 1, err
        assert notes[0].startswith("note: ") and any(str(p) in notes[0] for p in transparent)
        assert "composited on white (RGB (255, 255, 255))" in notes[0]
    # a pretraining run: its loader's workers, the kNN monitor's and the epoch ends say it once in all
    assert main(["pretrain", "cifar10", *TINY, "data.name=folder", f"data.path={photos}", "data.num_workers=2",
                 "optim.batch_size=16", "train.max_steps=2", "train.knn_every=1", "optim.epochs=1",
                 f"out_dir={tmp_path / 'run'}"]) == 0
    err = capfd.readouterr().err
    assert sum("transparent pixels" in line for line in err.splitlines()) == 1, err
    # opaque images (every JPEG, and an RGBA PNG with alpha 255 everywhere) get no note
    for path in transparent:
        path.unlink()
    opaque = np.full((40, 40, 4), 255, np.uint8)
    Image.fromarray(opaque, "RGBA").save(photos / "val" / "hopper" / "opaque.png")
    assert main(knn) == 0
    assert "transparent" not in capfd.readouterr().err
