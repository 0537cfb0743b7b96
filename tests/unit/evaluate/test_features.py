"""Feature extraction and the shared plumbing of the evaluation commands: checkpoint defaults, flags, JSON, errors;
corrupt files left out and reported by every command, test splits that are not held out refused or warned about."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch

from cgh.augment import EvalTransform
from cgh.checkpoints.pretrained import load_backbone
from cgh.commands.common import add_checkpoint_arguments, add_data_arguments, eval_config, resolve_eval_setup
from cgh.config import load_config
from cgh.data.base import ArraySource
from cgh.data.decode import eval_resize
from cgh.errors import ConfigError
from cgh.evaluate.features import extract_features
from cgh.model.backbone import ResNet
from tests.helpers import one_error_line
from tests.helpers import photo_folder as make_photo_folder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def cgh_checkpoint(tmp_path_factory):
    """A real `cgh pretrain` checkpoint: CGH, ResNet-18 width 8, 2 steps on 64 synthetic images."""
    from cgh.train import pretrain

    out = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [
        "data.name=synthetic", "data.synthetic_size=64", "data.synthetic_test_size=24", "data.synthetic_classes=4",
        "data.synthetic_image_size=16", "data.image_size=16", "model.arch=resnet18", "model.stem=cifar",
        "model.width=8", "method.queue_size=64", "method.hid_dim=16", "method.feat_dim=8", "method.hyper_dim=8",
        "optim.batch_size=32", "optim.epochs=1", "optim.warmup_epochs=0", "train.knn_every=0",
        "train.progress=false", f"out_dir={out}",
    ])
    pretrain(cfg)
    return out / "checkpoints" / "last.pt"


def torchvision_file(path, arch="resnet18", stem="cifar", width=8):
    torch.save(ResNet(arch, stem=stem, width=width).state_dict(), path)
    return path


def parse(argv):
    p = argparse.ArgumentParser()
    add_checkpoint_arguments(p)
    add_data_arguments(p)
    return p.parse_args(argv)


def test_extract_features_matches_the_model_in_dataset_order(tmp_path):
    model = load_backbone(torchvision_file(tmp_path / "r18.pt"))
    images = torch.randint(0, 256, (11, 3, 16, 16), dtype=torch.uint8)
    source = ArraySource(images, torch.arange(11) % 3, ["a", "b", "c"], "toy:test")
    model.train()
    feats, labels = extract_features(model, source, "global", image_size=16, mean=MEAN, std=STD, batch_size=4)
    assert model.training  # the caller's mode is restored
    assert feats.dtype == torch.float32 and feats.device.type == "cpu" and feats.shape == (11, 64)
    assert torch.equal(labels, source.labels)
    model.eval()
    with torch.no_grad():
        expected = model.global_features(EvalTransform(16, MEAN, STD)(images))
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(feats.norm(dim=1), torch.ones(11))  # not normalised
    hyper, _ = extract_features(model, source, "hypercolumn", image_size=16, mean=MEAN, std=STD)
    assert hyper.shape == (11, 32 + 64)  # layer3 + layer4 channels at width 8
    with pytest.raises(ValueError, match="hypercolumn head"):
        extract_features(model, source, "hypercolumn_head", image_size=16, mean=MEAN, std=STD)


def test_eval_resize_follows_spec_3_4():
    assert eval_resize(224) == 256 and eval_resize(32) == 32 and eval_resize(64) == 64


def test_checkpoint_config_supplies_the_dataset(cgh_checkpoint):
    setup = resolve_eval_setup(parse([str(cgh_checkpoint), "--device", "cpu"]))
    p = setup.protocol
    assert (p["dataset"], p["train_split"], p["test_split"], p["image_size"]) == ("synthetic", "train", "test", 16)
    assert (p["num_train"], p["num_test"], p["num_classes"]) == (64, 24, 4)
    assert (p["method"], p["arch"], p["epoch"], p["step"]) == ("cgh", "resnet18", 1, 2)
    assert setup.model.hyper_head is not None and setup.mean == MEAN
    feats, _ = setup.features(setup.test_source, "hypercolumn_head")
    assert feats.shape == (24, 64)


def test_flags_override_the_checkpoint(cgh_checkpoint):
    args = parse([str(cgh_checkpoint), "--device", "cpu", "--data-option", "synthetic_size=20",
                  "--data-option", "data.synthetic_classes=2", "--train-split", "test", "--test-split", "train",
                  "--image-size", "24"])
    setup = resolve_eval_setup(args)
    assert len(setup.test_source) == 20 and setup.num_classes == 2
    assert setup.protocol["test_split"] == "train" and setup.image_size == 24
    # a test split that is the train split would measure the accuracy on the images it votes with: refused
    with pytest.raises(ConfigError, match="test split synthetic:train holds the same images as the train split"):
        resolve_eval_setup(parse([str(cgh_checkpoint), "--device", "cpu", "--test-split", "train"]))


def test_another_dataset_takes_its_preset_defaults_but_the_trained_image_size(cgh_checkpoint):
    """The splits and path are the other dataset's; the input size stays the one the model was trained at (issue 18:
    a 32-px model was evaluated on a folder at 224 px)."""
    cfg = eval_config({"data": {"name": "synthetic", "image_size": 16, "path": "x"}},
                      parse([str(cgh_checkpoint), "--dataset", "imagenet", "--data-path", "/in"]), "ckpt")
    d = cfg.data
    assert (d.name, d.path, d.image_size, d.eval_train_split, d.eval_test_split) == ("imagenet", "/in", 16, "train",
                                                                                     "val")
    cfg = eval_config(None, parse(["w.pt", "--dataset", "imagenet100"]), "w.pt")
    assert (cfg.data.name, cfg.data.image_size, cfg.data.eval_test_split) == ("imagenet100", 224, "val")
    cfg = eval_config(None, parse(["w.pt", "--dataset", "synthetic"]), "w.pt")
    assert cfg.data.image_size == cfg.data.synthetic_image_size


def test_torchvision_weights_need_a_dataset(tmp_path):
    path = torchvision_file(tmp_path / "r18.pt")
    with pytest.raises(ConfigError, match="--dataset"):
        resolve_eval_setup(parse([str(path), "--device", "cpu"]))


def test_cli_knn_json(cgh_checkpoint, capsys):
    from cgh.cli import main

    code = main(["knn", str(cgh_checkpoint), "--json", "--k", "1", "5", "200", "--temperature", "0.1",
                 "--features", "hypercolumn", "--device", "cpu", "--chunk-size", "7"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    p, m = out["protocol"], out["metrics"]
    assert out["command"] == "knn" and set(m) == {"1", "5", "200"}
    assert all(0 <= m[k]["top1"] <= m[k]["top5"] <= 100 for k in m)
    assert p["features"] == "hypercolumn" and p["k"] == [1, 5, 200] and p["k_effective"] == [1, 5, 64]
    assert p["temperature"] == 0.1 and p["dataset"] == "synthetic" and p["test_split"] == "test"
    assert p["checkpoint"] == str(cgh_checkpoint) and p["epoch"] == 1 and p["step"] == 2
    assert p["method"] == "cgh" and p["arch"] == "resnet18" and p["image_size"] == 16


def test_cli_knn_human_line(tmp_path, capsys):
    from cgh.cli import main

    path = torchvision_file(tmp_path / "r18.pt")
    code = main(["knn", str(path), "--dataset", "synthetic", "--data-option", "synthetic_size=30",
                 "--data-option", "synthetic_test_size=10", "--k", "3", "--device", "cpu"])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("kNN synthetic test") and "k=3 top-1" in line and "\n" not in line


def test_cli_missing_checkpoint(tmp_path, capsys):
    from cgh.cli import main

    missing = tmp_path / "nope" / "last.pt"
    assert main(["knn", str(missing), "--json"]) == 2
    captured = capsys.readouterr()
    assert str(missing) in captured.err and captured.out == ""


def test_cli_bad_dataset_is_one_line_error(tmp_path, capsys):
    from cgh.cli import main

    path = torchvision_file(tmp_path / "r18.pt")
    assert main(["knn", str(path), "--dataset", "cifar10", "--data-path", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "absent" in err


def test_cli_head_features_need_a_cgh_checkpoint(tmp_path, capsys):
    from cgh.cli import main

    path = torchvision_file(tmp_path / "r18.pt")
    assert main(["knn", str(path), "--dataset", "synthetic", "--data-option", "synthetic_size=20",
                 "--data-option", "synthetic_test_size=10", "--features", "hypercolumn_head"]) == 2
    assert "no trained hypercolumn head" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# A folder of photographs as people keep them: evaluated on val/ with its true classes, corrupt files left out
# ---------------------------------------------------------------------------------------------------------------------

# command -> (its flags, the splits whose files it reads)
EVALUATIONS = {
    "knn": (["--k", "3"], ("train", "val")),
    "linear": (["--augment", "rrc", "--epochs", "1"], ("train", "val")),
    "semisup": (["--fraction", "1", "--epochs", "1"], ("train", "val")),
    "cluster": ([], ("val",)),
    "tsne": (["--perplexity", "5", "--out", "{tmp}/t.png"], ("train",)),
    "embed": (["--split", "train", "--out", "{tmp}/e.npy"], ("train",)),
    "neighbors": (["--queries", "4", "--k", "3", "--out", "{tmp}/n.png"], ("train",)),
}


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("command", list(EVALUATIONS))
def test_every_evaluation_leaves_corrupt_files_out_and_reports_them(photo_run, tmp_path, capsys, command):
    """`cgh COMMAND RUN/checkpoints/last.pt --json` on the run's folder (train/ and val/ with a truncated JPEG in
    each): data.corrupt=skip, the checkpoint's (and the default), leaves them out, with a note on stderr and every
    path in the protocol; before, every evaluation stopped on the first one."""
    from cgh.cli import main

    flags, splits = EVALUATIONS[command]
    flags = [f.format(tmp=tmp_path) for f in flags]
    assert main([command, str(photo_run["checkpoint"]), "--device", "cpu", "--json", *flags]) == 0
    out, err = capsys.readouterr()
    protocol = json.loads(out)["protocol"]
    broken = sorted(photo_run["broken"][s] for s in splits)
    assert sorted(p for paths in protocol["skipped_files"].values() for p in paths) == broken
    assert protocol["corrupt"] == "skip" and protocol["dataset"] == "folder"
    for path in broken:
        assert re.search(rf"note: left out 1 undecodable image of folder:\w+.* \(data.corrupt=skip; error stops "
                         rf"instead\): {re.escape(path)}\n", err), err
    if "val" in splits:  # the test split is val/ (there is no test/), with the five classes of the folder
        assert (protocol["test_split"], protocol["num_test"], protocol["num_classes"]) == ("val", 16, 5)


@pytest.mark.usefixtures("one_torch_thread")
def test_corrupt_error_on_request_and_held_out_splits(photo_run, tmp_path, capsys):
    from cgh.cli import main

    ckpt, photos = str(photo_run["checkpoint"]), photo_run["photos"]
    assert main(["knn", ckpt, "--device", "cpu", "--data-option", "corrupt=error"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err.startswith(f"error: cannot decode image {photo_run['broken']['train']}"), err
    # The split the checkpoint was pretrained on, used as the test split: a loud warning, also in the protocol.
    assert main(["knn", ckpt, "--device", "cpu", "--json", "--train-split", "val", "--test-split", "train"]) == 0
    out, err = capsys.readouterr()
    warning = (f"the test split folder:train ({photos / 'train'}) is the split this checkpoint was pretrained on: "
               f"the result is not measured on held-out images")
    assert f"warning: {warning}\n" in err and json.loads(out)["protocol"]["warnings"] == [warning]
    # A folder of class folders only: the test split is the train split, the same images: refused.
    assert main(["knn", ckpt, "--device", "cpu", "--data-path", str(photos / "val")]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: the test split folder:test holds the same images as the train split folder:train "
        f"({photos / 'val'}): the accuracy would be measured on the training images; keep held-out images apart "
        f"(PATH/train/<class>/ and PATH/val/<class>/) or name other splits with --train-split / --test-split\n")


@pytest.mark.usefixtures("one_torch_thread")
def test_weights_without_a_config_on_a_folder_of_splits(photo_run, tmp_path, capsys):
    """An exported backbone (no training config) on `--dataset folder --data-path PHOTOS`: train/ is the bank,
    val/ the test split (the test split 'auto'), not a class folder named val."""
    from cgh.cli import main

    weights = torchvision_file(tmp_path / "r18.pt")
    assert main(["knn", str(weights), "--dataset", "folder", "--data-path", str(photo_run["photos"]), "--image-size",
                 "32", "--num-workers", "0", "--k", "3", "--device", "cpu", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)["protocol"]
    assert (p["train_split"], p["test_split"], p["num_train"], p["num_test"], p["num_classes"]) == ("train", "val", 31,
                                                                                                    16, 5)
# ---- run directories, the image size of a file without config, loader workers (issue 18 item 9) ----------------------


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Real JPEG photographs in train/<class>/ and val/<class>/ (tests.helpers.photo_folder)."""
    root = tmp_path_factory.mktemp("photos")
    make_photo_folder(root, per_split=(4, 2))
    return root


def test_evaluation_commands_take_a_run_directory(cgh_checkpoint, tmp_path, capsys):
    from cgh.cli import main

    run_dir = cgh_checkpoint.parent.parent
    assert main(["knn", str(run_dir), "--json", "--k", "3", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"]["checkpoint"] == str(cgh_checkpoint)
    assert main(["export", str(run_dir), "--format", "torchvision", "--out", str(tmp_path / "r.pth")]) == 0
    assert (tmp_path / "r.pth").exists() and load_backbone(run_dir).info["path"] == str(cgh_checkpoint)
    capsys.readouterr()
    assert main(["knn", str(tmp_path)]) == 2  # a directory without checkpoints/last.pt: say where it was looked for
    assert capsys.readouterr().err == (f"error: {tmp_path} is a directory without checkpoints/last.pt: give a "
                                       f"checkpoint file, or a run directory of `cgh pretrain` (its checkpoint is "
                                       f"RUN/checkpoints/last.pt)\n")


def test_an_exported_file_on_a_folder_of_photographs(cgh_checkpoint, photo_folder, tmp_path, capsys, monkeypatch):
    """The issue: an exported file evaluated on a folder on a 2-core machine started 8 loader workers (two torch
    warnings) and resized to 224 px a model trained at 16; the checkpoint itself is evaluated at its own size."""
    import os
    import warnings

    from cgh.cli import main

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # a 2-core machine
    exported = tmp_path / "r18.pth"
    assert main(["export", str(cgh_checkpoint), "--format", "torchvision", "--out", str(exported)]) == 0
    capsys.readouterr()
    folder = ["--dataset", "folder", "--data-path", str(photo_folder), "--k", "3", "--json", "--device", "cpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["knn", str(exported), *folder]) == 0
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]
    out, err = capsys.readouterr()
    assert json.loads(out)["protocol"]["image_size"] == 224
    assert err == (f"note: {exported} holds no training config, so it is evaluated at 224 px, the folder default (its "
                   f"3x3 CIFAR stem suggests small images: 32 to 96 px); give the size it was trained at with "
                   f"--image-size\n")
    assert main(["knn", str(exported), *folder, "--image-size", "16"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["protocol"]["image_size"] == 16 and err == ""
    assert main(["knn", str(cgh_checkpoint), *folder]) == 0  # the checkpoint's own size, from its config
    out, err = capsys.readouterr()
    assert json.loads(out)["protocol"]["image_size"] == 16 and err == ""
