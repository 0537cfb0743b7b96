"""Untrusted files (GitHub issue 6, point 2; DESIGN.md section 5): a checkpoint or dataset file crafted to run code
is refused WITHOUT running it, by every entry point; checkpoints of another method or architecture, and truncated
checkpoints, get a clear error naming the file.

Already covered elsewhere, not repeated: a crafted CIFAR pickle opened with ``open_source`` (tests/test_data_sources.py
::test_cifar_crafted_pickle_is_refused_without_running, extended here through ``cgh pretrain`` and ``cgh knn``);
crafted detectron2 pickles (tests/test_export.py::test_load_detectron2_refuses_code); a junk file and a state dict of
the wrong shape given to load_backbone (tests/test_pretrained.py::test_errors_name_the_file).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

from cgh.checkpoint import load_checkpoint, load_file
from cgh.cli import main
from cgh.errors import CheckpointError, ConfigError
from cgh.methods import build_method
from cgh.pretrained import load_backbone
from cgh.train import pretrain
from tests.conftest import tiny_config
from tests.test_data_sources import write_cifar10

pytestmark = pytest.mark.usefixtures("one_torch_thread")



class RunsShell:
    """Unpickled by an unrestricted unpickler, this runs a shell command that creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsPython:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real one-step checkpoints of CGH and MoCo-v2 (TINY config)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("cgh", "mocov2"):
        pretrain(tiny_config(root / method, f"method.name={method}", "train.max_steps=1", "optim.epochs=1",
                             "aug.teacher_view=" + ("strong" if method == "mocov2" else "weak")))
        out[method] = root / method
    return out


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
def test_code_running_checkpoint_is_refused_everywhere_without_running(tmp_path, runs, kind, payload, capsys):
    genuine = load_checkpoint(runs["cgh"] / "checkpoints" / "last.pt")
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


@pytest.mark.parametrize("evil_file", ["batches.meta", "data_batch_1", "test_batch"])
def test_crafted_cifar_pickle_is_refused_through_the_commands(tmp_path, evil_file, capsys):
    """Extends test_data_sources.py::test_cifar_crafted_pickle_is_refused_without_running to the CLI and to every
    file of the set (the meta file is read first)."""
    import pickle

    write_cifar10(tmp_path / "d")
    marker = tmp_path / "pwned"
    evil = tmp_path / "d" / "cifar-10-batches-py" / evil_file
    with open(evil, "wb") as f:
        pickle.dump({b"data": RunsShell(marker), b"labels": [0], b"label_names": [b"x"]}, f, protocol=2)
    if evil_file == "test_batch":  # read by evaluation, not by pretraining
        torch.save(build_method(tiny_config(tmp_path)).student.backbone.state_dict(), tmp_path / "r18.pt")
        argv = ["knn", str(tmp_path / "r18.pt"), "--dataset", "cifar10", "--data-path", str(tmp_path / "d"),
                "--device", "cpu"]
    else:
        argv = ["pretrain", "cifar10", f"data.path={tmp_path / 'd'}", f"out_dir={tmp_path / 'run'}",
                "train.device=cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.match(rf"error: {re.escape(str(evil))}: refusing to unpickle global (posix|os)\.system", err), err
    assert not marker.exists()


def test_checkpoint_of_another_method_or_architecture(tmp_path, runs):
    moco = runs["mocov2"] / "checkpoints" / "last.pt"
    cgh = runs["cgh"] / "checkpoints" / "last.pt"
    # Resuming a CGH run from a MoCo-v2 checkpoint: the checkpoint's config says mocov2, the run's says cgh.
    with pytest.raises(ConfigError, match=rf"cannot change method\.name when resuming \('mocov2' in "
                                          rf"{re.escape(str(moco))}, 'cgh' given\)"):
        pretrain(tiny_config(tmp_path / "a", "method.name=cgh", "optim.epochs=1"), resume=moco)
    with pytest.raises(ConfigError, match=rf"cannot change model\.arch when resuming \('resnet18' in "
                                          rf"{re.escape(str(cgh))}, 'resnet34' given\)"):
        pretrain(tiny_config(tmp_path / "b", "model.arch=resnet34", "optim.epochs=1"), resume=cgh)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written

    # A checkpoint whose fields disagree with its own config (edited, or assembled from two runs).
    ckpt = load_checkpoint(cgh)
    relabelled = tmp_path / "relabelled.pt"
    torch.save({**ckpt, "method": "mocov2"}, relabelled)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(relabelled))} holds a 'mocov2' model, but this "
                                              rf"run's method\.name is 'cgh'"):
        pretrain(tiny_config(tmp_path / "c", "optim.epochs=1"), resume=relabelled)
    wider = build_method(tiny_config(tmp_path, "model.width=16")).state_dict()
    mixed = tmp_path / "mixed.pt"
    torch.save({**ckpt, "model": wider}, mixed)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(mixed))} does not fit the configured model"):
        pretrain(tiny_config(tmp_path / "d", "optim.epochs=1"), resume=mixed)
    # load_backbone reads the architecture off the weights (not the config), so the same file is a valid width-16
    # backbone there; a weight of the wrong shape is refused (tests/test_pretrained.py::test_errors_name_the_file).
    assert load_backbone(mixed).info["width"] == 16
    # A MoCo-v2 checkpoint has no hypercolumn head: asking for its features is a one-line error naming the file.
    assert load_backbone(moco).hyper_head is None


def test_resuming_into_another_runs_directory_is_refused(tmp_path, runs, capsys):
    """`--resume OTHER_CKPT out_dir=RUN`: continuing a MoCo-v2 checkpoint into an existing CGH run directory would
    overwrite that run's config.yaml, metrics and checkpoints; it is refused like any non-empty directory."""
    target = tmp_path / "cgh"
    shutil.copytree(runs["cgh"], target)
    before = {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    moco = runs["mocov2"] / "checkpoints" / "last.pt"
    assert main(["pretrain", "--resume", str(moco), f"out_dir={target}"]) == 2
    err = capsys.readouterr().err
    assert re.match(rf"error: run directory {re.escape(str(target))} already exists and is not the run of the "
                    rf"checkpoint {re.escape(str(moco))}; pass --overwrite", err), err
    assert {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()} == before


def test_truncated_checkpoint_is_named_at_every_cut(tmp_path, runs, capsys):
    raw = (runs["cgh"] / "checkpoints" / "last.pt").read_bytes()
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

