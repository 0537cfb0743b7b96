"""Bad input gets a clear error naming the culprit, and nothing already written is lost (GitHub issue 6, point 3;
DESIGN.md section 5 "safe with bad input").

Already covered elsewhere and extended here rather than repeated:
- missing data paths and path-less datasets, per opener:
  tests/test_data_sources.py::test_missing_paths_and_unknown_names
  (here: EMPTY paths per dataset kind, and both through ``cgh pretrain``, which must then leave no run directory);
- corrupt files in the pretraining loader: tests/test_data_loaders.py::test_corrupt_files_skip_and_error (here: through
  the training loop: the end-of-epoch stderr line, ``bad_files`` in metrics.jsonl, and a fatal error that keeps the
  checkpoint);
- wrong npz arrays: tests/test_data_sources.py::test_npz_errors (here: through the CLI; tests/test_reliability_fuzz.py
  fuzzes them);
- unknown keys, wrong types and invalid values: tests/test_config.py (here: every temperature, non-finite values,
  the queue under several processes, and the CLI's one-line error);
- an existing run directory: tests/test_train.py::test_existing_run_directory_is_refused_unless_asked (here: through
  the CLI, with every file of the old run byte-identical afterwards).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cgh.checkpoint import load_checkpoint
from cgh.cli import main
from cgh.config import load_config
from cgh.data import open_source
from cgh.errors import ConfigError, DataError
from cgh.train import pretrain
from tests.conftest import REPO, TINY, tiny_config

WORKER = REPO / "tests" / "reliability_worker.py"
KINDS = ["cifar10", "cifar100", "stl10", "tinyimagenet", "imagenet", "imagenet100", "folder", "npz"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def one_error_line(err: str) -> str:
    """The CLI's report of a CGHError: one line starting with "error:" (an invalid config lists its problems on
    indented lines below it), never a traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len([x for x in lines if x.startswith("error:")]) == 1 and lines[0].startswith("error: "), err
    assert all(x.startswith("  ") for x in lines[1:]), err
    return err


def files_of(directory) -> dict:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------------
# Data paths
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_bad_data_path_is_named_and_leaves_no_run_directory(tmp_path, kind, state, capsys):
    path = tmp_path / "data"
    if state == "empty":  # an empty folder, or for npz an empty file
        (path.touch() if kind == "npz" else path.mkdir())
    with pytest.raises(DataError, match=re.escape(str(path))):
        open_source(kind, str(path), "train")
    out = tmp_path / "run"
    assert main(["pretrain", "cifar10", f"data.name={kind}", f"data.path={path}", f"out_dir={out}",
                 "train.device=cpu"]) == 2
    assert str(path) in one_error_line(capsys.readouterr().err)
    # Nothing was created, so the corrected command runs without --overwrite.
    assert not out.exists()


def test_npz_with_wrong_arrays_through_the_cli(tmp_path, capsys):
    cases = {
        "float.npz": (np.zeros((8, 32, 32, 3), np.float32), "key 'images' must be uint8, got float32"),
        "gray.npz": (np.zeros((8, 32, 32), np.uint8), r"key 'images' must have rank 4.*\(8, 32, 32\)"),
        "rgba.npz": (np.zeros((8, 32, 32, 4), np.uint8), r"key 'images' must have 3 colour channels.*\(8, 32, 32, 4\)"),
    }
    for name, (images, message) in cases.items():
        np.savez(tmp_path / name, images=images)
        assert main(["pretrain", "cifar10", "data.name=npz", f"data.path={tmp_path / name}",
                     f"out_dir={tmp_path / 'run'}", "train.device=cpu"]) == 2
        err = one_error_line(capsys.readouterr().err)
        assert re.match(rf"error: {re.escape(str(tmp_path / name))}: {message}", err), err


# ---------------------------------------------------------------------------------------------------------------------
# Corrupt images while pretraining
# ---------------------------------------------------------------------------------------------------------------------


def image_folder(root, n=48, bad=()) -> list:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{k:02d}.png")
    paths = []
    for k, how in bad:
        p = root / f"{k:02d}.png"
        p.write_bytes(p.read_bytes()[:60] if how == "truncated" else b"<html>not an image</html>")
        paths.append(str(p))
    return paths


FOLDER = ["data.name=folder", "optim.batch_size=16", "optim.epochs=1"]


def test_corrupt_images_are_skipped_counted_and_reported(tmp_path, capsys):
    data = tmp_path / "images"
    bad = image_folder(data, bad=[(5, "truncated"), (17, "text")])
    out = tmp_path / "run"
    result = pretrain(tiny_config(out, *FOLDER, f"data.path={data}"))
    assert result.status == "finished" and result.step == 3  # 48 images / 16: every step ran, batch size kept
    err = capsys.readouterr().err
    line = re.search(r"epoch 1: skipped 2 corrupt image\(s\), e\.g\. .*", err)
    assert line and all(p in line.group(0) for p in bad), err
    import json

    epochs = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert epochs[-1]["bad_files"] == 2


def test_corrupt_image_is_fatal_on_request_and_keeps_the_checkpoint(tmp_path, capsys):
    data = tmp_path / "images"
    image_folder(data)
    out = tmp_path / "run"
    pretrain(tiny_config(out, *FOLDER, f"data.path={data}", "data.corrupt=error"))
    before = files_of(out / "checkpoints")
    bad = image_folder(data, bad=[(9, "truncated")])[0]
    # One more epoch: the corrupt file stops the run with its name; the epoch-1 checkpoint is kept.
    argv = ["pretrain", "--resume", str(out), "optim.epochs=2", "train.device=cpu"]
    assert main(argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert re.match(rf"error: cannot decode image {re.escape(bad)}: ", err), err
    assert files_of(out / "checkpoints") == before
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
    # The user can then continue, skipping the file (data.corrupt may change on resume).
    assert main([*argv, "data.corrupt=skip"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 6


# ---------------------------------------------------------------------------------------------------------------------
# Config keys and values
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_key_through_the_cli_process(tmp_path):
    """The real process: exit status 2, one error line on stderr suggesting the nearest key, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "cgh.cli", "pretrain", "cifar10", "optim.lrr=0.1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: command line: unknown config key 'optim.lrr' (did you mean 'optim.lr'?)\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["method.temprature=0.1"], r"unknown config key 'method\.temprature' \(did you mean 'method\.temperature'\?\)"),
    (["optim.batchsize=64"], r"unknown config key 'optim\.batchsize' \(did you mean 'optim\.batch_size'\?\)"),
    (["trian.device=cpu"], r"unknown config key 'trian' \(did you mean 'train'\?\)"),
    (["optim.epochs=ten"], r"optim\.epochs = 'ten': expected an integer"),
])
def test_config_key_errors_through_the_cli(tmp_path, capsys, argv, message):
    assert main(["pretrain", "cifar10", *argv, f"out_dir={tmp_path / 'run'}"]) == 2
    assert re.match(f"error: command line: {message}", one_error_line(capsys.readouterr().err))
    # the same in a YAML file names the file
    path = tmp_path / "my.yaml"
    key, value = argv[0].split("=")
    section, leaf = key.split(".")
    path.write_text(f"{section}:\n  {leaf}: {value}\n")
    assert main(["pretrain", str(path), f"out_dir={tmp_path / 'run'}"]) == 2
    assert re.match(f"error: {re.escape(str(path))}: {message}", one_error_line(capsys.readouterr().err))
    assert not (tmp_path / "run").exists()


TEMPERATURES = ["temperature", "temp_teacher_global", "temp_student_global", "temp_teacher_hyper",
                "temp_student_hyper"]


@pytest.mark.parametrize("override, message", [
    *[(f"method.{k}={v}", rf"method\.{k} = {shown}: expected a positive finite number")
      for k in TEMPERATURES for v, shown in (("0", "0.0"), ("-0.1", "-0.1"), (".nan", "nan"))],
    ("optim.lr=-0.1", r"optim\.lr = -0\.1: expected a positive finite number"),
    ("optim.lr=0", r"optim\.lr = 0\.0: expected a positive finite number"),
    ("optim.lr=.nan", r"optim\.lr = nan: expected a positive finite number"),
    ("train.knn_t=0", r"train\.knn_t = 0\.0: expected a positive finite number"),
    ("method.queue_size=1000", r"method\.queue_size = 1000: expected a multiple of the global batch "
                               r"optim\.batch_size \(256\); e\.g\. 1024"),
    ("method.hyper_layers=[layer3,layer6]", r"'layer6' is not a stage"),
    ("method.hyper_layers=[]", r"method\.hyper_layers = \[\]: expected a non-empty list"),
    ("method.hyper_layers=[layer4,layer4]", r"a non-empty list of distinct names"),
])
def test_invalid_values_are_named_in_one_cli_error(tmp_path, capsys, override, message):
    """Extends tests/test_config.py::test_invalid_values_are_named: every temperature, zero/negative/NaN, the CLI."""
    with pytest.raises(ConfigError, match=message):
        load_config("cifar10", [override]).validate()
    assert main(["pretrain", "cifar10", override, f"out_dir={tmp_path / 'run'}", "train.device=cpu"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err.startswith("error: invalid config:\n  ") and re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_every_invalid_value_is_listed_at_once():
    cfg = load_config("cifar10", ["optim.lr=0", "method.temp_teacher_global=-1", "method.queue_size=100"])
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    listed = str(info.value).splitlines()[1:]
    assert [x.split(" = ")[0].strip() for x in listed] == ["method.temp_teacher_global", "optim.lr",
                                                            "method.queue_size"]


def test_queue_must_divide_by_the_global_batch_of_any_process_count():
    cfg = load_config("cifar10", ["optim.batch_size=96", "method.queue_size=4096", "model.bn_mode=shuffle"])
    with pytest.raises(ConfigError, match=r"method\.queue_size = 4096: expected a multiple of the global batch "
                                          r"optim\.batch_size \(96\); e\.g\. 4128"):
        cfg.validate(world_size=3)


# ---------------------------------------------------------------------------------------------------------------------
# Run directories
# ---------------------------------------------------------------------------------------------------------------------


def test_existing_run_directory_through_the_cli_keeps_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "train.max_steps=1"))
    before = files_of(out)
    assert main(["pretrain", "cifar10", *TINY, f"out_dir={out}", "train.device=cpu"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert re.match(rf"error: run directory {re.escape(str(out))} already exists and is not empty; pass --resume "
                    rf"to continue it, --overwrite to replace it", err), err
    assert files_of(out) == before  # config.yaml, metrics.jsonl and the checkpoint, byte for byte


# ---------------------------------------------------------------------------------------------------------------------
# A full disk while writing a checkpoint
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    """For real: after the first checkpoint the process may write no file larger than half a checkpoint
    (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG as they fail with ENOSPC on a full disk), so the second
    checkpoint write fails partway."""
    out = tmp_path / "run"
    env = dict(os.environ, CGH_TEST_FSIZE_AFTER_SAVE="1", CGH_TEST_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(WORKER), "pretrain", "cifar10", *TINY, "optim.epochs=1",
                           "train.ckpt_every_steps=1", "train.device=cpu", f"out_dir={out}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    last = out / "checkpoints" / "last.pt"
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc.stderr).strip() == (f"error: could not write checkpoint {last}: [Errno 27] File too "
                                                   f"large; the previous checkpoint, if any, is intact")
    assert load_checkpoint(last)["step"] == 1  # the first checkpoint, intact
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]  # no temporary left behind
    # Once there is room again, the run continues from it.
    result = pretrain(tiny_config(out, "optim.epochs=1", "train.ckpt_every_steps=1", "train.device=cpu",
                                  "train.max_steps=2"), resume=True)
    assert (result.status, result.step) == ("max_steps", 2)
