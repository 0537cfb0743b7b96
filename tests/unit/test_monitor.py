"""The kNN monitor of pretraining (cgh.train.monitor) on folders of real photographs as people keep them, through
`cgh pretrain cifar10 data.name=folder data.path=PHOTOS`: train/ is pretrained on and is the bank, val/ the test
split, the banner says so; a corrupt JPEG is left out (data.corrupt=skip) and reported; a folder without labels,
without a held-out split, or whose test images are its training images turns the monitor off with one line."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from cgh.cli import main
from tests.helpers import TINY, break_jpeg, one_error_line, photo_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pretrain(photos, out, *extra: str) -> int:
    """The user's command on the folder, shrunk to TINY: one epoch of 2 steps, the monitor at every epoch."""
    return main(["pretrain", "cifar10", *TINY, "data.name=folder", f"data.path={photos}", "optim.batch_size=16",
                 "optim.epochs=1", "train.knn_every=1", "train.device=cpu", f"out_dir={out}", *extra])


def start_record(out) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_train_and_val_folders_are_the_splits_and_a_corrupt_jpeg_is_left_out(tmp_path, capsys):
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(6, 3))
    broken = photos / "val" / "hopper" / "broken.jpg"
    shutil.copy(photos / "val" / "hopper" / "00.jpg", broken)
    break_jpeg(broken)
    assert pretrain(photos, tmp_path / "run") == 0
    out, err = capsys.readouterr()
    assert "pretraining cgh on folder:train (30 images)" in out
    assert f"  data       folder:train (30 images, 5 classes, {photos / 'train'})\n" in out
    assert ("  kNN        bank folder:train (30 images, 5 classes), test folder:val (16 images, 5 classes), every "
            "epoch\n") in out
    assert re.search(r"epoch 0: kNN top-1 \d+\.\d+% \(random init\)", out) and "kNN top-1" in out.splitlines()[-2]
    # the monitor honours data.corrupt=skip (the default) as pretraining does: one note, naming the file
    assert (f"note: the kNN monitor left out 1 undecodable image (data.corrupt=skip), e.g. {broken}\n") in err
    assert err.count("left out") == 1  # once, not at every epoch
    assert start_record(tmp_path / "run")["knn"].startswith("bank folder:train (30 images")


def test_with_corrupt_error_the_monitor_stops_on_the_file(tmp_path, capsys):
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(4, 2))
    bad = break_jpeg(photos / "val" / "china_left" / "01.jpg")
    assert pretrain(photos, tmp_path / "run", "data.corrupt=error") == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: cannot decode image {bad}: ")


@pytest.mark.parametrize("layout", ["flat", "train_only", "class_folders"])
def test_without_labels_or_a_held_out_split_the_monitor_is_off_with_one_line(tmp_path, capsys, layout):
    photos = tmp_path / "photos"
    photo_folder(tmp_path / "made", splits=("train",), per_split=(4,))
    if layout == "flat":  # images directly in the folder: no labels
        photos.mkdir()
        for k, f in enumerate(sorted((tmp_path / "made" / "train").rglob("*.jpg"))):
            f.rename(photos / f"{k:02d}.jpg")
    elif layout == "train_only":  # PHOTOS/train/<class>/ and nothing to test on
        (tmp_path / "made").rename(photos)
    else:  # PHOTOS/<class>/: every split is the same images
        (tmp_path / "made" / "train").rename(photos)
    assert pretrain(photos, tmp_path / "run", "train.online_probe=true") == 0
    out, err = capsys.readouterr()
    expected = {
        "flat": ("note", "folder:train has no labels (no class sub-folders)"),
        "train_only": ("note", f"{photos} has no test nor val split to measure it on"),
        "class_folders": ("warning", f"its test split folder:test is the same images as its bank folder:train "
                                     f"({photos}): its accuracy would mean nothing"),
    }[layout]
    lines = [line for line in err.splitlines() if "kNN monitor" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{expected[0]}: the kNN monitor is off: {expected[1]}; "), err
    assert f"  kNN        off: {expected[1]}\n" in out and "kNN top-1" not in out
    assert len([line for line in err.splitlines() if "online probe is off" in line]) == 1  # the probe, likewise
    assert "done: 1 step in " in out  # 20 images, batch 16


def test_a_folder_read_as_classes_on_request(tmp_path, capsys):
    """data.folder_splits=false: cgh 0.1's reading (classes named train and val), for whoever has such classes;
    the monitor then has no held-out images and says so."""
    photos = tmp_path / "photos"
    photo_folder(photos, per_split=(4, 2))
    assert pretrain(photos, tmp_path / "run", "data.folder_splits=false") == 0
    out, err = capsys.readouterr()
    assert "on folder:train (30 images)" in out and f"folder:train (30 images, 2 classes, {photos})" in out
    assert "warning: the kNN monitor is off: its test split folder:test is the same images" in err


@pytest.mark.parametrize("values, below", [((40.0, 35.0, 30.0), True), ((30.0, 35.0, 40.0), False),
                                           ((30.0, 50.0, 30.0), False)])
def test_a_run_whose_knn_ends_below_its_random_init_says_so(tmp_path, capsys, monkeypatch, values, below):
    """Every method of a short run on a folder of photographs ended below its random-init kNN, and nothing in the run
    said so. Now one note at the end (not a collapse warning), and the end record of metrics.jsonl carries it. The
    monitor's values are set here (epoch 0, 1, 2), so that the test does not hang on a trained number."""
    from cgh.train.monitor import KnnMonitor

    photos = tmp_path / "photos"
    photo_folder(photos)
    given = iter(values)
    monkeypatch.setattr(KnnMonitor, "__call__", lambda self, encoder: next(given))
    run = tmp_path / "run"
    assert pretrain(photos, run, "optim.epochs=2") == 0  # 30 images, batch 16: one step an epoch
    out, err = capsys.readouterr()
    end = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert end["kind"] == "end" and end["knn_init"] == values[0] and end["knn_top1"] == values[-1]
    note = (f"the kNN monitor ended at {values[-1]:.2f}% top-1, below the {values[0]:.2f}% of the random "
            f"initialisation (epoch 0): for kNN this run made the features worse. A linear probe may still gain: "
            f"compare `cgh linear {run}` with `cgh linear {run} --random-init` (not a collapse warning)")
    if below:
        assert end["notes"] == [note] and f"note: {note}\n" in err and err.count("below the") == 1
        assert "collapse" not in err.replace("(not a collapse warning)", "")
    else:
        assert "notes" not in end and "below the" not in err
