"""``cgh.data.open_source`` and its table of openers (cgh/data/__init__.py): missing, empty and path-less data paths
are named for every dataset kind, unknown datasets, splits and options too; through ``cgh pretrain`` such a path
leaves no run directory behind."""

from __future__ import annotations

import re

import pytest

from cgh.cli import main
from cgh.data import SOURCES, open_source
from cgh.errors import DataError
from tests.helpers import one_error_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_missing_paths_and_unknown_names(tmp_path):
    missing = tmp_path / "nowhere"
    for name in ("cifar10", "cifar100", "stl10", "tinyimagenet", "imagenet", "imagenet100", "folder", "npz"):
        with pytest.raises(DataError, match=str(missing)):
            SOURCES[name](str(missing), "train")
        with pytest.raises(DataError, match="needs a path"):
            SOURCES[name](None, "train")
    with pytest.raises(DataError, match="batches.meta"):  # a folder that is not CIFAR
        open_source("cifar10", str(tmp_path), "train")
    with pytest.raises(DataError, match="unknown dataset 'mnist'; known datasets: cifar10"):
        open_source("mnist", None, "train")
    with pytest.raises(DataError, match="unknown split 'valid' .*valid splits: train, test"):
        open_source("cifar10", str(tmp_path), "valid")
    with pytest.raises(DataError, match="unknown split 'val'.*train, test, unlabeled, train\\+unlabeled"):
        open_source("stl10", str(tmp_path), "val")
    with pytest.raises(DataError, match="unknown option.*colour.*synthetic"):
        open_source("synthetic", None, "train", colour=True)


KINDS = ["cifar10", "cifar100", "stl10", "tinyimagenet", "imagenet", "imagenet100", "folder", "npz"]


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
