"""``cgh neighbors`` (cgh.evaluate.neighbors, cgh.commands.neighbors): the k nearest bank images of seeded queries
and their precision against a brute-force search, the images as the evaluation transform crops them, the PNG grid
(its size, its green and red frames), and the command line with its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cgh.checkpoints.pretrained import load_backbone
from cgh.data import build_eval_loader
from cgh.data.base import ArraySource
from cgh.data.folder import open_folder
from cgh.evaluate.features import extract_features
from cgh.evaluate.neighbors import (
    CORRECT_COLOUR,
    QUERY_COLOUR,
    WRONG_COLOUR,
    display_images,
    grid_pixels,
    nearest_neighbours,
    neighbours_figure,
    select_queries,
)
from cgh.model.backbone import ResNet
from tests.helpers import one_error_line, png_size, random_hwc, save_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SYNTHETIC = ["--dataset", "synthetic", "--data-option", "synthetic_size=40", "--data-option",
             "synthetic_test_size=12", "--data-option", "synthetic_classes=3", "--data-option",
             "synthetic_image_size=16", "--device", "cpu"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "r18.pt"
    torch.manual_seed(0)
    torch.save(ResNet("resnet18", stem="cifar", width=8).state_dict(), path)
    return path


def brute_force(bank, bank_labels, queries, query_labels, k):
    """Cosine similarities of every pair in NumPy float64, the k largest per query, and precision@k in percent."""
    b = bank.numpy().astype(np.float64)
    q = queries.numpy().astype(np.float64)
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    hits = bank_labels.numpy()[top] == query_labels.numpy()[:, None]
    return top, np.take_along_axis(sim, top, 1), 100.0 * hits.sum() / hits.size


def colour_pixels(path, colour, tol=3) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    want = np.array([round(c * 255) for c in colour])
    return int((np.abs(rgb - want).max(axis=-1) <= tol).sum())


def gray_source(n, labels, classes, size=16, seed=0):
    """Gray images (R = G = B), so that no pixel of an image can pass for a green or red frame."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=gen).expand(n, 3, size, size)
    return ArraySource(images.contiguous(), torch.as_tensor(labels, dtype=torch.int64), classes, "gray:test")


def test_neighbours_and_precision_equal_a_brute_force_search():
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(50, 6, generator=gen) * torch.rand(50, 1, generator=gen) * 5  # norms far from 1
    bank_labels = torch.randint(0, 4, (50,), generator=gen)
    queries = torch.randn(7, 6, generator=gen)
    query_labels = torch.randint(0, 4, (7,), generator=gen)
    for k in (1, 5, 50):
        top, sims, precision = brute_force(bank, bank_labels, queries, query_labels, k)
        for chunk in (2, 256):
            result = nearest_neighbours(bank, bank_labels, queries, query_labels, k, chunk_size=chunk)
            assert result.k == k and result.index.shape == (7, k)
            np.testing.assert_array_equal(result.index, top)
            np.testing.assert_allclose(result.similarity, sims, rtol=0, atol=1e-5)
            assert result.precision == pytest.approx(precision)
            np.testing.assert_array_equal(result.labels, bank_labels.numpy()[top])
    # rows reported as their indices in the sources (e.g. a bank with its unlabelled rows removed)
    result = nearest_neighbours(bank, bank_labels, queries, query_labels, 3, bank_index=np.arange(50) * 2 + 1,
                                query_index=[10, 11, 12, 13, 14, 15, 16])
    top, _, precision = brute_force(bank, bank_labels, queries, query_labels, 3)
    np.testing.assert_array_equal(result.index, top * 2 + 1)
    d = result.to_dict()
    assert d["k"] == 3 and d["precision_at_k"] == pytest.approx(precision)
    assert [q["index"] for q in d["queries"]] == list(range(10, 17))
    assert d["queries"][0]["neighbours"] == (top[0] * 2 + 1).tolist()
    assert d["queries"][0]["neighbour_labels"] == bank_labels[top[0]].tolist()


def test_k_must_fit_the_bank():
    bank, labels = torch.randn(5, 3), torch.zeros(5, dtype=torch.int64)
    for k in (0, 6):
        with pytest.raises(ValueError, match="the bank has 5 images"):
            nearest_neighbours(bank, labels, bank[:2], labels[:2], k)
    with pytest.raises(ValueError, match=r"queries \(Q, D\)"):
        nearest_neighbours(bank, labels, torch.randn(2, 4), labels[:2], 2)


def test_queries_are_seeded_distinct_and_sorted():
    a = select_queries(100, 10, seed=3)
    assert a.tolist() == select_queries(100, 10, seed=3).tolist() != select_queries(100, 10, seed=4).tolist()
    assert len(set(a.tolist())) == 10 and a.tolist() == sorted(a.tolist()) and a.max() < 100
    assert sorted(select_queries(5, 5).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot draw 6 queries from 5"):
        select_queries(5, 6)


def test_display_images_are_the_evaluation_crops(tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        save_png(str(root / "a" / f"{i}.png"), random_hwc(20, 28))
    files = open_folder(str(root), "all")
    shown = display_images(files, [2, 0], 16)
    images, _ = next(iter(build_eval_loader(files, 16, 3)))  # what the network sees, before normalisation
    assert shown.dtype == torch.uint8 and torch.equal(shown, images[[2, 0]])
    source = gray_source(4, [0, 1, 0, 1], [], size=16)
    assert torch.equal(display_images(source, [3, 1], 16), source.images[[3, 1]])  # already the eval size
    big = gray_source(2, [0, 1], [], size=24)
    assert display_images(big, [0, 1], 16).shape == (2, 3, 16, 16)


def test_figure_size_and_frames(tmp_path):
    # Class 0 at angles near 0, class 1 near 90 degrees, and two class-1 impostors near 0: queries of class 0 find
    # correct and wrong neighbours, the class-1 query only correct ones.
    angles = [0, 3, 6, 9, 2, 5, 90, 93, 96, 99]
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    bank = torch.tensor([[np.cos(np.radians(a)), np.sin(np.radians(a))] for a in angles], dtype=torch.float32)
    source = gray_source(10, labels, ["zero", "one"])
    queries = torch.tensor([[1.0, 0.05], [0.99, 0.1], [0.0, 1.0]])
    result = nearest_neighbours(bank, source.labels, queries, torch.tensor([0, 0, 1]), 4, query_index=[0, 1, 7])
    correct = result.correct
    assert correct[2].all() and 0 < correct[:2].sum() < 8
    path = neighbours_figure(result, source, source, tmp_path / "sub" / "grid.png", image_size=16, title="toy")
    assert png_size(path) == grid_pixels(3, 4)
    green, red = colour_pixels(path, CORRECT_COLOUR), colour_pixels(path, WRONG_COLOUR)
    # every frame is a ring of about 4 x 100 x 3 pixels of its colour (text adds a few more)
    assert 800 * correct.sum() <= green <= 2000 * correct.sum()
    assert 800 * (~correct).sum() <= red <= 2000 * (~correct).sum()
    assert colour_pixels(path, QUERY_COLOUR) >= 800 * 3

    only_right = nearest_neighbours(bank, source.labels, queries[2:], torch.tensor([1]), 4, query_index=[7])
    path = neighbours_figure(only_right, source, source, tmp_path / "right.png", image_size=16)
    assert png_size(path) == grid_pixels(1, 4) and colour_pixels(path, WRONG_COLOUR) == 0
    assert colour_pixels(path, CORRECT_COLOUR) >= 800 * 4
    assert grid_pixels(6, 8) == (1275, 1000)


def test_cli_neighbors_json_and_png(weights, tmp_path, capsys):
    from cgh.cli import main

    out = tmp_path / "grid.png"
    assert main(["neighbors", str(weights), *SYNTHETIC, "--queries", "3", "--k", "4", "--seed", "1", "--json",
                 "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    m, p = result["metrics"], result["protocol"]
    assert result["command"] == "neighbors" and m["k"] == 4 and m["out"] == str(out)
    assert (p["train_split"], p["test_split"], p["bank_size"], p["num_queries"], p["seed"]) == ("train", "test", 40,
                                                                                               3, 1)
    assert png_size(out) == grid_pixels(3, 4)
    # the same search, independently: features of the whole splits, brute-force cosine
    from cgh.commands.common import dataset_config
    from cgh.data import open_split

    cfg = dataset_config("synthetic")
    d = cfg.data
    d.synthetic_size, d.synthetic_test_size, d.synthetic_classes, d.synthetic_image_size = 40, 12, 3, 16
    d.image_size = 16
    train, test = open_split(cfg, "train"), open_split(cfg, "test")
    model = load_backbone(weights)
    kw = dict(image_size=16, mean=p["mean"], std=p["std"])
    bank, bank_labels = extract_features(model, train, **kw)
    feats, labels = extract_features(model, test, **kw)
    index = select_queries(12, 3, seed=1)
    assert [q["index"] for q in m["queries"]] == index.tolist()
    assert [q["label"] for q in m["queries"]] == labels[index].tolist()
    # a random-init encoder's cosines are all near 1: compare the similarities found, not the order of near-ties
    _, top_sims, _ = brute_force(bank, bank_labels, feats[index], labels[index], 4)
    found = np.array([q["neighbours"] for q in m["queries"]])
    b = torch.nn.functional.normalize(bank.double(), dim=1)
    sims = (torch.nn.functional.normalize(feats[index].double(), dim=1) @ b.T).numpy()
    np.testing.assert_allclose(np.take_along_axis(sims, found, 1), top_sims, rtol=0, atol=1e-5)
    np.testing.assert_allclose([q["similarity"] for q in m["queries"]], top_sims, rtol=0, atol=1e-5)
    hits = bank_labels.numpy()[found] == labels[index].numpy()[:, None]
    assert [q["neighbour_labels"] for q in m["queries"]] == bank_labels.numpy()[found].tolist()
    assert m["precision_at_k"] == pytest.approx(100.0 * hits.mean())

    assert main(["neighbors", str(weights), *SYNTHETIC, "--queries", "2", "--k", "3", "--out",
                 str(tmp_path / "h.png"), "--features", "hypercolumn"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {tmp_path / 'h.png'}: 2 synthetic test queries x 3 nearest")
    assert "precision@3" in line


@pytest.mark.parametrize("argv, match", [
    (["--k", "41"], "--k 41 is larger than the bank: synthetic:train has 40 labelled images"),
    (["--queries", "13"], "more than the 12 images"),
    (["--k", "0"], "must be >= 1"),
    (["--features", "hypercolumn_head"], "no trained hypercolumn head"),
])
def test_cli_errors_are_one_line(weights, tmp_path, capsys, argv, match):
    from cgh.cli import main

    assert main(["neighbors", str(weights), *SYNTHETIC, "--out", str(tmp_path / "g.png"), *argv]) == 2
    assert match in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "g.png").exists()


def test_cli_bad_paths(weights, tmp_path, capsys):
    from cgh.cli import main

    assert main(["neighbors", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "g.png")]) == 2
    assert "missing.pt" in one_error_line(capsys.readouterr().err)
    assert main(["neighbors", str(weights), "--dataset", "folder", "--data-path", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "g.png")]) == 2
    assert "nowhere does not exist" in one_error_line(capsys.readouterr().err)
