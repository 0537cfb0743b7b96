"""``cgh embed`` (cgh.evaluate.embed, cgh.commands.embed): every image's features in .npy files equal to
extract_features's, a table of index / label / class / path (csv, parquet with pyarrow), written chunk by chunk into
memory maps, never holding the (N, D) array; the command line on a real checkpoint."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cgh.checkpoints.pretrained import load_backbone
from cgh.config import load_config
from cgh.data.base import ArraySource
from cgh.data.folder import open_folder
from cgh.errors import ConfigError, DataError
from cgh.evaluate import embed as embed_module
from cgh.evaluate.embed import check_table_format, chunk_rows_for, output_paths, write_embeddings
from cgh.evaluate.features import extract_features
from cgh.model.backbone import ResNet
from tests.helpers import break_jpeg, one_error_line, photo_folder, random_hwc, save_png

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "r18.pt"
    torch.save(ResNet("resnet18", stem="cifar", width=8).state_dict(), path)
    return load_backbone(path)


@pytest.fixture(scope="module")
def cgh_checkpoint(tmp_path_factory):
    """A real `cgh pretrain` checkpoint: CGH, ResNet-18 width 8, 2 steps on 64 synthetic 16-px images."""
    from cgh.train import pretrain

    out = tmp_path_factory.mktemp("run")
    pretrain(load_config(None, [
        "data.name=synthetic", "data.synthetic_size=64", "data.synthetic_test_size=24", "data.synthetic_classes=4",
        "data.synthetic_image_size=16", "data.image_size=16", "model.arch=resnet18", "model.stem=cifar",
        "model.width=8", "method.queue_size=64", "method.hid_dim=16", "method.feat_dim=8", "method.hyper_dim=8",
        "optim.batch_size=32", "optim.epochs=1", "optim.warmup_epochs=0", "train.knn_every=0",
        "train.progress=false", f"out_dir={out}",
    ]))
    return out / "checkpoints" / "last.pt"


def array_source(n=11, size=16):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n) % 3
    labels[-1] = -1  # an unlabelled image is embedded too
    return ArraySource(images, labels, ["ant", "bee", "cat"], "toy:test")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_output_names():
    for out in ("d/emb.npy", "d/emb"):
        assert output_paths(out, ["global"]) == ({"global": Path("d/emb.npy")}, Path("d/emb.csv"), Path("d/emb.json"))
    feats, table, manifest = output_paths("d/emb.npy", ["global", "hypercolumn"], "parquet")
    assert [str(p) for p in feats.values()] == ["d/emb.global.npy", "d/emb.hypercolumn.npy"]
    assert (str(table), str(manifest)) == ("d/emb.parquet", "d/emb.json")
    # 256 MiB of features, a whole number of batches, at least one batch
    assert chunk_rows_for(2048, 256) == 32768 and chunk_rows_for(512, 1000) == 131000
    assert chunk_rows_for(10**9, 64) == 64


def test_arrays_and_table_equal_extract_features_chunk_by_chunk(model, tmp_path):
    source = array_source()
    model.train()
    result = write_embeddings(model, source, ["global", "hypercolumn"], tmp_path / "emb.npy", image_size=16,
                              mean=MEAN, std=STD, batch_size=2, chunk_size=4)  # 3 chunks, the last one of 3 images
    assert model.training  # the caller's mode is restored
    assert result.num_images == 11 and result.dims == {"global": 64, "hypercolumn": 96}
    for kind, dim in result.dims.items():
        path = tmp_path / f"emb.{kind}.npy"
        assert result.features[kind] == path
        saved = np.load(path)
        assert saved.dtype == np.float32 and saved.shape == (11, dim)
        expected, labels = extract_features(model, source, kind, image_size=16, mean=MEAN, std=STD, batch_size=2)
        np.testing.assert_array_equal(saved, expected.numpy())  # the same batches: the same values
    rows = read_csv(tmp_path / "emb.csv")
    assert list(rows[0]) == ["index", "label", "class", "path"]
    assert [int(r["index"]) for r in rows] == list(range(11))
    assert [int(r["label"]) for r in rows] == labels.tolist() == source.labels.tolist()
    assert [r["class"] for r in rows] == ["ant", "bee", "cat"] * 3 + ["ant", ""]
    assert all(r["path"] == "" for r in rows)  # array sources have no files
    info = json.loads((tmp_path / "emb.json").read_text())
    assert info["features"]["hypercolumn"] == {"file": "emb.hypercolumn.npy", "shape": [11, 96], "dtype": "float32",
                                               "normalised": False}
    assert info["table"]["file"] == "emb.csv" and info["num_images"] == 11 and info["chunk_rows"] == 4
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_a_folder_source_writes_its_paths(model, tmp_path):
    root = tmp_path / "photos"
    for i in range(5):
        save_png(str(root / ("cats" if i < 3 else "dogs") / f"{i}.png"), random_hwc(20, 24))
    source = open_folder(str(root), "all")
    result = write_embeddings(model, source, ["global"], tmp_path / "out" / "photos", image_size=16, mean=MEAN,
                              std=STD, batch_size=2, chunk_size=2)
    assert result.features["global"] == tmp_path / "out" / "photos.npy"
    rows = read_csv(tmp_path / "out" / "photos.csv")
    assert [r["path"] for r in rows] == [source.path(i) for i in range(5)]
    assert [r["path"].split("/")[-2:] for r in rows] == [["cats", "0.png"], ["cats", "1.png"], ["cats", "2.png"],
                                                         ["dogs", "3.png"], ["dogs", "4.png"]]
    assert [(r["label"], r["class"]) for r in rows] == [("0", "cats")] * 3 + [("1", "dogs")] * 2
    expected, _ = extract_features(model, source, "global", image_size=16, mean=MEAN, std=STD, batch_size=2)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "photos.npy"), expected.numpy())


def test_a_corrupt_file_left_out_has_no_row(model, tmp_path):
    """corrupt="skip": the undecodable file has no row (rows after it move up, ``index`` names each image), across
    chunk boundaries; the manifest lists it; corrupt="error" (the default) stops on it."""
    root = tmp_path / "photos"
    photo_folder(root, splits=("all",), per_split=(2,))  # 10 images, 2 per class
    source = open_folder(str(root / "all"), "all")
    broken = break_jpeg(source.path(3))
    result = write_embeddings(model, source, ["global", "hypercolumn"], tmp_path / "emb", image_size=16, mean=MEAN,
                              std=STD, batch_size=2, chunk_size=4, corrupt="skip")
    assert result.num_images == 9 and result.skipped == [broken]
    rows = read_csv(tmp_path / "emb.csv")
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert [r["path"] for r in rows] == [source.path(i) for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    kept = source.subset([0, 1, 2, 4, 5, 6, 7, 8, 9])
    for kind in ("global", "hypercolumn"):
        expected, _ = extract_features(model, kept, kind, image_size=16, mean=MEAN, std=STD, batch_size=2)
        np.testing.assert_allclose(np.load(tmp_path / f"emb.{kind}.npy"), expected.numpy(), rtol=1e-5, atol=1e-6)
    info = json.loads((tmp_path / "emb.json").read_text())
    assert info["skipped_files"] == [broken] and info["features"]["global"]["shape"] == [9, 64]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.csv", "emb.global.npy", "emb.hypercolumn.npy",
                                                          "emb.json", "photos"]
    with pytest.raises(DataError, match=f"cannot decode image {re.escape(broken)}"):
        write_embeddings(model, source, ["global"], tmp_path / "strict", image_size=16, mean=MEAN, std=STD)


def test_parquet_table(model, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is optional (pip install pyarrow); not installed here")
    write_embeddings(model, array_source(), ["global"], tmp_path / "emb.npy", image_size=16, mean=MEAN, std=STD,
                     batch_size=4, chunk_size=4, table_format="parquet")
    table = pq.read_table(tmp_path / "emb.parquet").to_pydict()
    assert table["index"] == list(range(11)) and table["label"] == array_source().labels.tolist()
    assert table["path"] == [None] * 11 and table["class"][:3] == ["ant", "bee", "cat"]


def test_parquet_without_pyarrow_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(ConfigError, match="pip install pyarrow"):
        check_table_format("parquet")
    with pytest.raises(ConfigError, match="unknown table format"):
        check_table_format("xlsx")
    check_table_format("csv")


def test_memory_is_one_chunk_the_arrays_are_memory_maps(model, tmp_path, monkeypatch):
    """A small chunk: each collect call holds one chunk of features, the .npy files are open_memmap'd at their final
    shape, and no tensor of N rows is ever created (TorchDispatchMode sees every tensor an op creates)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    n, chunk = 40, 8
    collected, maps = [], []
    real_collect, real_memmap = embed_module.collect, np.lib.format.open_memmap

    def spy_collect(*args, **kwargs):
        out = real_collect(*args, **kwargs)
        collected.append(tuple(out[0].shape))
        return out

    def spy_memmap(*args, **kwargs):
        maps.append(kwargs["shape"])
        return real_memmap(*args, **kwargs)

    class Rows(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.is_floating_point():
                    Rows.largest = max(Rows.largest, t.shape[0])
            return out

    monkeypatch.setattr(embed_module, "collect", spy_collect)
    monkeypatch.setattr(np.lib.format, "open_memmap", spy_memmap)
    source = array_source(n)
    with Rows():
        write_embeddings(model, source, ["global", "hypercolumn"], tmp_path / "emb", image_size=16, mean=MEAN,
                         std=STD, batch_size=4, chunk_size=chunk)
    assert collected == [(chunk, 64 + 96)] * (n // chunk)
    assert maps == [(n, 64), (n, 96)]
    assert Rows.largest == chunk  # the chunk's (8, 160) features; never (40, D)
    expected, _ = extract_features(model, source, "global", image_size=16, mean=MEAN, std=STD, batch_size=4)
    np.testing.assert_array_equal(np.load(tmp_path / "emb.global.npy"), expected.numpy())


def test_a_failure_leaves_no_files(model, tmp_path, monkeypatch):
    calls = []

    def failing(x, kind="global"):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return model.global_features(x)

    monkeypatch.setattr(model, "features", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_embeddings(model, array_source(), ["global"], tmp_path / "emb.npy", image_size=16, mean=MEAN, std=STD,
                         batch_size=2, chunk_size=2)
    assert list(tmp_path.iterdir()) == []


def test_cli_embeds_the_checkpoints_test_split(cgh_checkpoint, tmp_path, capsys):
    from cgh.cli import main

    out = tmp_path / "e.npy"
    assert main(["embed", str(cgh_checkpoint), "--out", str(out), "--json", "--device", "cpu", "--features",
                 "global", "hypercolumn_head"]) == 0
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert result["command"] == "embed" and result["metrics"]["num_images"] == 24
    p = result["protocol"]
    assert (p["dataset"], p["split"], p["num_classes"], p["method"], p["features"]) == (
        "synthetic", "test", 4, "cgh", ["global", "hypercolumn_head"])
    files = result["metrics"]["files"]
    assert files["features"] == {"global": str(tmp_path / "e.global.npy"),
                                 "hypercolumn_head": str(tmp_path / "e.hypercolumn_head.npy")}
    assert np.load(files["features"]["hypercolumn_head"]).shape == (24, 64)
    assert len(read_csv(files["table"])) == 24
    assert json.loads((tmp_path / "e.json").read_text())["protocol"]["checkpoint"] == str(cgh_checkpoint)

    assert main(["embed", str(cgh_checkpoint), "--out", str(tmp_path / "train"), "--split", "train",
                 "--device", "cpu", "--batch-size", "16"]) == 0
    assert "wrote" in capsys.readouterr().out and np.load(tmp_path / "train.npy").shape == (64, 64)


@pytest.mark.parametrize("argv, match", [
    (["--features", "global", "global"], "twice"),
    (["--split", "nosuch"], "nosuch"),
    (["--chunk-size", "0"], "--chunk-size"),
])
def test_cli_errors_are_one_line(cgh_checkpoint, tmp_path, capsys, argv, match):
    from cgh.cli import main

    assert main(["embed", str(cgh_checkpoint), "--out", str(tmp_path / "e"), "--device", "cpu", *argv]) == 2
    assert match in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_the_head_of_a_backbone_without_one(model, tmp_path, capsys):
    from cgh.cli import main

    weights = tmp_path / "r18.pt"
    torch.save(ResNet("resnet18", stem="cifar", width=8).state_dict(), weights)
    assert main(["embed", str(weights), "--dataset", "synthetic", "--features", "hypercolumn_head",
                 "--out", str(tmp_path / "e")]) == 2
    assert "no trained hypercolumn head" in one_error_line(capsys.readouterr().err)
    assert main(["embed", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "missing.pt" in one_error_line(capsys.readouterr().err)
