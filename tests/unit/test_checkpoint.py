"""Checkpoint files (cgh.checkpoints.files): a checkpoint crafted to run code is refused WITHOUT running it, by every
loader and every command; a truncated or junk file gets a clear error naming it.

Also covered elsewhere: crafted CIFAR pickles (tests/unit/data/test_cifar.py), crafted detectron2 pickles
(tests/unit/test_export.py::test_load_detectron2_refuses_code), checkpoints of another method or architecture
(tests/unit/test_train.py), damaged bytes fuzzed (tests/system/test_fuzz.py)."""

from __future__ import annotations

import re

import pytest
import torch

from cgh.checkpoints.files import load_checkpoint, load_file
from cgh.checkpoints.pretrained import load_backbone
from cgh.cli import main
from cgh.errors import CheckpointError
from tests.helpers import RunsPython, RunsShell, one_error_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def crafted(tmp_path, kind: str, payload, genuine: dict) -> tuple:
    """A checkpoint file that runs code when unpickled: the payload alone, or hidden inside a genuine checkpoint
    (so that no format check can refuse it before the unpickler sees it). Returns (path, marker)."""
    marker = tmp_path / f"pwned-{kind}-{payload.__name__}"
    obj = payload(marker) if kind == "bare" else {**genuine, "metrics": {"loss": 1.0, "note": payload(marker)}}
    path = tmp_path / "evil" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path, marker


@pytest.mark.parametrize("payload", [RunsShell, RunsPython])
@pytest.mark.parametrize("kind", ["bare", "inside-a-checkpoint"])
def test_code_running_checkpoint_is_refused_everywhere_without_running(tmp_path, one_step_runs, kind, payload, capsys):
    genuine = load_checkpoint(one_step_runs["cgh"] / "checkpoints" / "last.pt")
    path, marker = crafted(tmp_path, kind, payload, genuine)
    # The payload is live: an unrestricted torch.load runs it (on a copy, with its own marker).
    control = tmp_path / "control.pt"
    torch.save(payload(tmp_path / "control-marker") if kind == "bare" else
               {"metrics": {"note": payload(tmp_path / "control-marker")}}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control-marker").exists()

    refused = rf"refused to load {re.escape(str(path))}: it contains objects other than tensors"
    for load in (load_file, load_checkpoint, load_backbone):
        with pytest.raises(CheckpointError, match=refused):
            load(path)
    run_dir = path.parent.parent
    commands = [
        ["pretrain", "--resume", str(run_dir)],  # the run's own config from its (evil) checkpoint
        ["pretrain", "cifar10", "data.name=synthetic", f"out_dir={tmp_path / 'new'}", "--resume", str(path)],
        ["knn", str(path), "--dataset", "synthetic", "--device", "cpu"],
        ["linear", str(path), "--dataset", "synthetic", "--device", "cpu"],
        ["export", str(path), "--format", "torchvision", "--out", str(tmp_path / "exported.pth")],
    ]
    for argv in commands:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert re.match(rf"error: {refused}", err), (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not marker.exists(), "the crafted checkpoint ran code"
    assert not (tmp_path / "exported.pth").exists() and not (tmp_path / "new").exists()


def test_truncated_checkpoint_is_named_at_every_cut(tmp_path, one_step_runs, capsys):
    raw = (one_step_runs["cgh"] / "checkpoints" / "last.pt").read_bytes()
    cuts = sorted({0, 1, 10, 100, 1000, len(raw) // 4, len(raw) // 2, len(raw) - 1000, len(raw) - 22, len(raw) - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}" / "checkpoints" / "last.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(raw[:cut])
        expected = re.escape(str(path)) + (" is empty" if cut == 0 else ": truncated or not a PyTorch file")
        for load in (load_checkpoint, load_backbone):
            with pytest.raises(CheckpointError, match=expected):
                load(path)
    # Not a checkpoint at all: before the fix, b"hello world" escaped torch.load as a bare KeyError(101).
    for junk in (b"hello world", b"P", b"\x80\x02}q\x00.garbage", bytes(range(256)) * 4):
        path_junk = tmp_path / "junk.pt"
        path_junk.write_bytes(junk)
        with pytest.raises(CheckpointError, match=re.escape(str(path_junk)) + ": truncated or not a PyTorch file"):
            load_checkpoint(path_junk)
    # Through the commands: one error line naming the file, exit status 2.
    for argv in (["pretrain", "--resume", str(path.parent.parent)], ["knn", str(path), "--device", "cpu"],
                 ["export", str(path), "--format", "torchvision", "--out", str(tmp_path / "x.pth")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(path) in err and len(err.strip().splitlines()) == 1, err


def test_a_detectron2_export_is_named_for_what_it_is(tmp_path, one_step_runs, capsys):
    """`cgh knn r18.pkl` on cgh's own detectron2 export said "truncated or not a PyTorch file (Unsupported operand
    149)": it names the file a detectron2 weight pickle and says what to evaluate instead."""
    import pickle

    import numpy as np

    run = one_step_runs["cgh"]
    out = tmp_path / "r18.pkl"
    assert main(["export", str(run), "--format", "detectron2", "--out", str(out)]) == 0
    moco = tmp_path / "moco.pkl"  # MoCo's converter: numpy's own array pickling, protocol 2, its own author
    with open(moco, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": np.zeros((8, 3, 3, 3), np.float32),
                               "res2.0.conv1.weight": np.zeros((8, 8, 3, 3), np.float32)},
                     "__author__": "MOCO", "matching_heuristics": True}, f, protocol=2)
    for path, what in ((out, "written by cgh export --format detectron2, 100 arrays"),
                       (moco, "__author__ 'MOCO', 2 arrays")):
        for argv in (["knn", str(path)], ["linear", str(path), "--dataset", "synthetic"],
                     ["pretrain", "--resume", str(path)]):
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = one_error_line(capsys.readouterr().err).strip()
            assert err == (f"error: {path} is a detectron2 weight pickle ({what} named stem.*, res2.* .. res5.*): "
                           f"detectron2 reads it, cgh does not. Evaluate the cgh checkpoint it was exported from "
                           f"(runs/x/checkpoints/last.pt, or the run directory runs/x), or a torchvision export of it "
                           f"(cgh export CHECKPOINT --format torchvision --out r.pth; then --dataset)"), err
    other = tmp_path / "other.pkl"  # a pickle of something else keeps the generic message
    other.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=2))
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch file"):
        load_file(other)
