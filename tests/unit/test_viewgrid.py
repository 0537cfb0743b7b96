"""`cgh views`: the PNG grid of augmented views, run through the real CLI dispatcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import cgh.data
from cgh.cli import main
from tests.helpers import png_size


def _pattern_images(n: int, size: int, first_seed: int = 0) -> torch.Tensor:
    """Colourful uint8 (n, 3, size, size) images (a gradient background and a disc), so views are visible."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng(first_seed + i)
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        img = c0[:, None, None] * (1 - xx) + c1[:, None, None] * yy
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img[:, disc] = rng.integers(0, 256, 3)[:, None]
        out[i] = img.clip(0, 255)
    return torch.from_numpy(out)


class _FakeArraySource:
    def __init__(self, n: int, size: int):
        self.images = _pattern_images(n, size)
        self.labels = torch.arange(n, dtype=torch.int64) % 3
        self.classes = ["disc", "ring", "square"]
        self.name = "fake:train"

    def __len__(self) -> int:
        return self.images.shape[0]


class _FakeFileSource:
    """Like cgh.data.FileSource: images of different sizes decoded on demand."""

    def __init__(self, n: int):
        self._images = [_pattern_images(1, 40 + 10 * i, first_seed=i)[0].permute(1, 2, 0).numpy() for i in range(n)]
        self._images = [im[:, : im.shape[1] - 7] for im in self._images]  # not square
        self.labels = torch.full((n,), -1, dtype=torch.int64)
        self.classes: list[str] = []
        self.name = "fakefiles:train"

    def __len__(self) -> int:
        return len(self._images)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._images[i]))


@pytest.fixture
def fake_source(monkeypatch):
    calls = []

    def open_source(name, path, split, **options):
        calls.append((name, path, split))
        return _FakeFileSource(5) if name == "folder" else _FakeArraySource(20, 32)

    # raising=False: works whether or not the real open_source has landed in cgh.data.
    monkeypatch.setattr(cgh.data, "open_source", open_source, raising=False)
    return calls


def test_views_writes_png_grid(tmp_path, fake_source, capsys):
    out = tmp_path / "sub" / "grid.png"
    rc = main(["views", "--dataset", "cifar10", "--num-images", "3", "--local", "2", "--seed", "1", "--out", str(out)])
    assert rc == 0
    assert fake_source == [("cifar10", None, "train")]
    assert str(out) in capsys.readouterr().out
    width, height = png_size(out)
    cols, rows = 3 + 2, 3  # original, weak, strong, 2 locals; one row per image
    assert cols * 150 <= width <= cols * 200  # 1.7 in per cell at 100 dpi
    assert rows * 150 <= height <= rows * 200 + 100  # plus the title band


def test_views_file_source_and_strong_teacher(tmp_path, fake_source):
    out = tmp_path / "files.png"
    rc = main(
        [
            "views",
            "--dataset",
            "folder",
            "--path",
            "x",
            "--image-size",
            "48",
            "--teacher",
            "strong",
            "--num-images",
            "8",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    width, height = png_size(out)
    assert 3 * 150 <= width <= 3 * 200
    assert 5 * 150 <= height <= 5 * 200 + 100  # only 5 images in the source


def test_views_rejects_bad_arguments(tmp_path, fake_source):
    with pytest.raises(SystemExit) as e:
        main(["views", "--local", "5", "--out", str(tmp_path / "x.png")])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["views", "--num-images", "0", "--out", str(tmp_path / "x.png")])


def test_views_with_the_real_synthetic_source(tmp_path):
    out = tmp_path / "synthetic.png"
    assert main(["views", "--num-images", "2", "--out", str(out)]) == 0
    assert png_size(out)[0] >= 3 * 150


# ---- --data-path like every other command, and a run's own views (issue 18 item 11) ------------------------------


def test_views_takes_data_path_and_still_path_with_a_note(tmp_path, fake_source, capsys):
    assert main(["views", "--dataset", "folder", "--data-path", "x", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["views", "--dataset", "folder", "--path", "y", "--out", str(tmp_path / "b.png")]) == 0
    assert fake_source == [("folder", "x", "train"), ("folder", "y", "train")]
    assert capsys.readouterr().err == "note: --path is deprecated; use --data-path, as every other command does\n"


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("method", ["cgh", "mocov2"])
def test_views_of_a_run_use_its_config(tmp_path, one_step_runs, monkeypatch, method):
    """`cgh views RUN`: the run's data, split, image size, augmentation, teacher view and local crops."""
    import yaml

    import cgh.commands.views as views_command

    config = yaml.safe_load((one_step_runs[method] / "config.yaml").read_text())
    config["aug"]["jitter"] = [0.1, 0.2, 0.3, 0.05]
    config["method"]["num_local"] = 2 if method == "cgh" else 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    seen = {}
    real_build, real_save = views_command.build_augment, views_command.save_view_grid
    monkeypatch.setattr(views_command, "build_augment",
                        lambda cfg, specs: seen.update(cfg=cfg) or real_build(cfg, specs))
    monkeypatch.setattr(views_command, "save_view_grid",
                        lambda path, images, views, specs, **kw: seen.update(specs=specs, **kw) or real_save(
                            path, images, views, specs, **kw))
    assert main(["views", str(run), "--num-images", "2", "--out", str(tmp_path / "v.png")]) == 0
    assert seen["cfg"].aug.jitter == [0.1, 0.2, 0.3, 0.05] and seen["cfg"].data.name == "synthetic"
    sizes = [s.size for s in seen["specs"]]
    assert sizes[:2] == [32, 32] and len(sizes) == (4 if method == "cgh" else 2)  # the run's two local crops
    assert seen["teacher"] == ("weak" if method == "cgh" else "strong")
    assert seen["title"].startswith(f"synthetic:train: views seen in pretraining by {method} in {run}")
    # from the checkpoint when there is no config.yaml, and flags override single values
    checkpoint = one_step_runs[method] / "checkpoints" / "last.pt"
    assert main(["views", str(checkpoint), "--local", "1", "--teacher", "strong", "--image-size", "24",
                 "--out", str(tmp_path / "w.png")]) == 0
    assert [s.size for s in seen["specs"]][:2] == [24, 24] and len(seen["specs"]) == 3
    assert seen["teacher"] == "strong"


def test_views_skips_a_corrupt_photo_with_a_note(tmp_path, capsys):
    """A folder of photographs with a truncated JPEG: the grid is drawn from the files that decode and the note names
    the one left out (data.corrupt=skip, as in pretraining); a folder whose every file is broken is an error."""
    from tests.helpers import break_jpeg, photo_folder

    photo_folder(tmp_path / "photos", splits=("train",), per_split=(2,))
    broken = break_jpeg(tmp_path / "photos" / "train" / "hopper" / "01.jpg")
    out = tmp_path / "v.png"
    assert main(["views", "--dataset", "folder", "--data-path", str(tmp_path / "photos"), "--num-images", "10",
                 "--image-size", "32", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("note: skipped an undecodable image") == 1 and broken in err
    assert 10 * 32 <= png_size(out)[1]  # nine rows drawn, not stopped at the broken file
    for path in (tmp_path / "photos" / "train").rglob("*.jpg"):
        break_jpeg(path)
    assert main(["views", "--dataset", "folder", "--data-path", str(tmp_path / "photos"), "--num-images", "3",
                 "--out", str(tmp_path / "w.png")]) == 2
    assert "none of its 10 images could be decoded" in capsys.readouterr().err
