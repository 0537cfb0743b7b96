"""CIFAR-10/100 python pickles (cgh.data.cifar): written small in tmp_path in the real format (protocol 2, Python-2
strings), read back exactly; bad and crafted files are a DataError naming the file, and a crafted pickle never
runs (neither through ``open_source`` nor through the commands)."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch

from cgh.cli import main
from cgh.data import ArraySource, open_source
from cgh.errors import DataError
from cgh.methods import build_method
from tests.helpers import RNG, RunsShell, dump, tiny_config, write_cifar10

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("py2", [False, True], ids=["py3-protocol2", "py2-strings"])
def test_cifar10_round_trip(tmp_path, py2):
    written = write_cifar10(tmp_path, py2=py2)
    train = open_source("cifar10", str(tmp_path), "train")  # parent folder accepted
    test = open_source("cifar10", str(tmp_path / "cifar-10-batches-py"), "test")  # the folder itself too
    assert isinstance(train, ArraySource) and train.name == "cifar10:train" and len(train) == 15
    assert train.images.dtype == torch.uint8 and train.images.shape == (15, 3, 32, 32)
    assert train.images.is_contiguous() and train.labels.dtype == torch.int64
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and len(train.classes) == 10
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32.
    assert train.images[7, 1, 5, 9].item() == data[7, 1024 + 5 * 32 + 9]
    assert np.array_equal(train.images.numpy().reshape(15, 3072), data)
    assert train.labels.tolist() == labels
    assert np.array_equal(test.images.numpy().reshape(3, 3072), written["test_batch"][0])


def test_cifar100_round_trip(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"class_{i}".encode() for i in range(100)]
    dump({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, folder / "meta", py2=True)
    data = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
    dump({b"data": data, b"fine_labels": [0, 99, 5, 42], b"coarse_labels": [0, 1, 2, 3]}, folder / "test", True)
    src = open_source("cifar100", str(tmp_path), "test")
    assert src.labels.tolist() == [0, 99, 5, 42] and src.classes[99] == "class_99"
    assert np.array_equal(src.images.numpy().reshape(4, 3072), data)
    with pytest.raises(DataError, match="train"):  # the train file is missing: named
        open_source("cifar100", str(tmp_path), "train")


class RunsCode:
    """A pickle payload that would create a marker file when unpickled by an unrestricted unpickler."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsEval:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [RunsCode, RunsEval])
def test_cifar_crafted_pickle_is_refused_without_running(tmp_path, payload):
    write_cifar10(tmp_path / "d")
    marker = tmp_path / "pwned"
    evil = tmp_path / "d" / "cifar-10-batches-py" / "data_batch_3"
    with open(evil, "wb") as f:
        pickle.dump({b"data": payload(marker), b"labels": [0]}, f, protocol=2)
    # The payload is live: an unrestricted unpickler runs it (on another marker).
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(payload(control), protocol=2))
    assert control.exists()
    refused = r"data_batch_3.*refusing to unpickle global (posix|os|nt|__builtin__|builtins)\."
    with pytest.raises(DataError, match=refused):
        open_source("cifar10", str(tmp_path / "d"), "train")
    assert not marker.exists()


def test_cifar_bad_files(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(DataError, match="data_batch_2.*truncated or wrong format"):
        open_source("cifar10", str(tmp_path), "train")
    (folder / "test_batch").write_text("not a pickle at all")
    with pytest.raises(DataError, match="test_batch"):
        open_source("cifar10", str(tmp_path), "test")
    dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, folder / "test_batch", py2=False)
    with pytest.raises(DataError, match=r"test_batch.*\(N, 3072\)"):
        open_source("cifar10", str(tmp_path), "test")
    dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, folder / "test_batch", py2=False)
    with pytest.raises(DataError, match="test_batch.*2 integers"):
        open_source("cifar10", str(tmp_path), "test")
    dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, folder / "test_batch", py2=False)
    with pytest.raises(DataError, match=r"test_batch.*0\.\.9"):
        open_source("cifar10", str(tmp_path), "test")
    dump([1, 2], folder / "test_batch", py2=False)
    with pytest.raises(DataError, match="test_batch.*dict"):
        open_source("cifar10", str(tmp_path), "test")


@pytest.mark.parametrize("evil_file", ["batches.meta", "data_batch_1", "test_batch"])
def test_crafted_cifar_pickle_is_refused_through_the_commands(tmp_path, evil_file, capsys):
    """Extends test_cifar_crafted_pickle_is_refused_without_running to the CLI and to every
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
