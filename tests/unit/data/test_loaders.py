"""Sampler and loaders: the exactness properties other code relies on (one process with batch G sees the union of W
processes; resume replays the tail; crops do not depend on workers), corrupt-file handling, shapes and devices."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cgh.augment import ViewSpec
from cgh.data import (
    ArraySource,
    Batch,
    GlobalBatchSampler,
    build_eval_loader,
    build_pretrain_loader,
    open_source,
)
from cgh.data.decode import random_resized_crop_box, resize_center_crop
from cgh.errors import DataError
from tests.reference import torchvision_resized_crop

SPECS = [ViewSpec(12, (0.2, 1.0), False), ViewSpec(8, (0.08, 0.5), True)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def array_source(n=23, side=6) -> ArraySource:
    images = torch.arange(n * 3 * side * side, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ArraySource(images.view(n, 3, side, side).contiguous(), torch.arange(n) % 4, ["a", "b", "c", "d"], "t:x")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A labelled folder of 10 small images of various sizes (a FileSource)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for k in range(10):
        cls = root / ("a" if k % 2 else "b")
        cls.mkdir(exist_ok=True)
        h, w = 16 + 3 * k, 30 - 2 * k
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(cls / f"{k}.png")
    return root


# ----------------------------------------------------------------------------------------------------------------------
# Sampler
# ----------------------------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), per_rank=st.integers(1, 6), world=st.integers(1, 4), seed=st.integers(0, 5),
       epoch=st.integers(0, 3), shuffle=st.booleans(), drop_last=st.booleans(), interleave=st.booleans())
def test_sampler_ranks_partition_the_global_batches(n, per_rank, world, seed, epoch, shuffle, drop_last, interleave):
    g = per_rank * world
    single = GlobalBatchSampler(n, g, seed=seed, shuffle=shuffle, drop_last=drop_last, interleave=interleave)
    ranks = [GlobalBatchSampler(n, g, r, world, seed, shuffle, drop_last, interleave) for r in range(world)]
    for s in [single, *ranks]:
        s.set_epoch(epoch)
    full = list(single)
    per = [list(s) for s in ranks]
    assert all(len(p) == len(full) == len(single) for p in per)  # same number of steps on every rank
    for step, batch in enumerate(full):
        chunks = [p[step] for p in per]
        if interleave:  # rank r holds rows r, r + W, ... of the single process's batch
            assert all(chunks[r] == batch[r::world] for r in range(world))
        else:  # the union, in rank order, is the single process's batch
            assert sum(chunks, []) == batch
        if len(batch) == g:
            assert all(len(c) == per_rank for c in chunks)
        assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
    seen = sum(full, [])
    if drop_last:
        assert len(full) == n // g and len(seen) == (n // g) * g
    else:
        assert len(full) == math.ceil(n / g) and sorted(seen) == list(range(n))  # every sample exactly once
    assert len(set(seen)) == len(seen)
    if not shuffle:
        assert seen == list(range(len(seen)))


def test_sampler_permutation_epochs_and_resume():
    s = GlobalBatchSampler(50, 8, seed=3)
    s.set_epoch(2)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(5))  # seed + epoch
    assert sum(list(s), []) == expected[:48].tolist()
    assert len(s) == 6
    first = list(s)
    s.set_epoch(3)
    assert list(s) != first  # a new order each epoch
    s.set_epoch(2)
    assert list(s) == first and list(GlobalBatchSampler(50, 8, seed=3).iter_from(0)) != first
    assert list(s.iter_from(4)) == first[4:]  # resume = tail of the full epoch
    s.start_step = 2
    assert list(s) == first[2:]
    s.set_epoch(2)  # set_epoch rewinds start_step
    assert list(s) == first
    assert list(s.iter_from(6)) == []


def test_sampler_rejects_bad_arguments():
    with pytest.raises(DataError, match="global batch 10 is not divisible by the world size 4"):
        GlobalBatchSampler(100, 10, 0, 4)
    with pytest.raises(DataError, match="rank must lie in 0..world_size-1, got rank 2 of world size 2"):
        GlobalBatchSampler(100, 10, 2, 2)
    with pytest.raises(DataError, match="global batch size must be >= 1"):
        GlobalBatchSampler(100, 0)


# ----------------------------------------------------------------------------------------------------------------------
# Array sources
# ----------------------------------------------------------------------------------------------------------------------


def test_array_pretrain_loader_batches_and_ranks():
    src = array_source()
    loader = build_pretrain_loader(src, SPECS, 8, seed=1)
    loader.set_epoch(4)
    batches = list(loader)
    assert len(loader) == len(batches) == 2  # 23 // 8, last partial batch dropped
    for b in batches:
        assert isinstance(b, Batch) and len(b.views) == 1 and b.bad_files == [] and not b.cropped
        assert b.views[0].dtype == torch.uint8 and b.views[0].shape == (8, 3, 6, 6)
        assert b.views[0].device.type == "cpu" and b.labels.dtype == b.index.dtype == torch.int64
        assert torch.equal(b.views[0], src.images[b.index]) and torch.equal(b.labels, src.labels[b.index])
    # The same epoch on 2 ranks of 4 each: rank r holds rows r, r + 2, ... of the single-process batches (the rows
    # that split r of a 2-split SplitBatchNorm normalises on one process).
    ranks = [build_pretrain_loader(src, SPECS, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(4)
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert torch.equal(a.index, batches[step].index[0::2]) and torch.equal(b.index, batches[step].index[1::2])
        assert torch.equal(a.views[0], batches[step].views[0][0::2])
    tail = list(loader.iter_from(1))
    assert len(tail) == 1 and torch.equal(tail[0].index, batches[1].index)


def test_array_eval_loader_order_and_ranks():
    src = array_source(n=11)
    out = list(build_eval_loader(src, 32, 4))
    assert [len(x) for x, _ in out] == [4, 4, 3]
    assert torch.equal(torch.cat([x for x, _ in out]), src.images)  # native size, dataset order, all kept
    assert torch.equal(torch.cat([y for _, y in out]), src.labels)
    per_rank = [list(build_eval_loader(src, 32, 2, rank=r, world_size=3)) for r in range(3)]
    assert len({len(p) for p in per_rank}) == 1  # same number of steps on every rank (collectives line up)
    merged = [torch.cat([p[step][1] for p in per_rank]) for step in range(len(per_rank[0]))]
    assert torch.equal(torch.cat(merged), src.labels)
    assert per_rank[2][-1][0].shape == (2, 3, 6, 6) and per_rank[0][-1][0].shape == (1, 3, 6, 6)  # 5 over 3 ranks


def test_loader_argument_errors():
    src = array_source(n=5)
    with pytest.raises(DataError, match="5 images, fewer than one global batch of 8"):
        build_pretrain_loader(src, SPECS, 8)
    with pytest.raises(DataError, match="corrupt must be one of skip, error, got 'ignore'"):
        build_pretrain_loader(src, SPECS, 2, corrupt="ignore")
    with pytest.raises(DataError, match="specs must be a non-empty list of ViewSpec"):
        build_pretrain_loader(src, [], 2)
    with pytest.raises(DataError, match="not divisible"):
        build_pretrain_loader(src, SPECS, 3, world_size=2)


# ----------------------------------------------------------------------------------------------------------------------
# File sources
# ----------------------------------------------------------------------------------------------------------------------


def collect(loader, step=0):
    return [(b.views, b.labels, b.index) for b in loader.iter_from(step)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        all(torch.equal(x, y) for x, y in zip(va, vb, strict=True)) and torch.equal(la, lb) and torch.equal(ia, ib)
        for (va, la, ia), (vb, lb, ib) in zip(a, b, strict=True))


def test_file_pretrain_loader_is_deterministic_across_workers_and_resume(image_folder):
    src = open_source("folder", str(image_folder), "train")
    inline = build_pretrain_loader(src, SPECS, 4, seed=7, num_workers=0)
    workers = build_pretrain_loader(src, SPECS, 4, seed=7, num_workers=2)
    inline.set_epoch(1)
    workers.set_epoch(1)
    a, b = collect(inline), collect(workers)
    assert len(a) == 2 and same(a, b)  # crops depend on (seed, epoch, index) only
    # the loader says its views are cut already: a single-spec linear probe must not crop them a second time
    one = build_pretrain_loader(src, SPECS[:1], 4, seed=7)
    one.set_epoch(1)
    assert all(batch.cropped and len(batch.views) == 1 for batch in one)
    views, labels, index = a[0]
    assert [v.shape for v in views] == [(4, 3, 12, 12), (4, 3, 8, 8)] and all(v.dtype == torch.uint8 for v in views)
    assert torch.equal(labels, src.labels[index])
    assert same(collect(workers, 1), a[1:])  # mid-epoch resume replays the tail exactly
    workers.set_epoch(2)
    c = collect(workers)
    assert not same(a, c)  # a new permutation and new crops
    workers.set_epoch(1)
    assert same(collect(workers), a)  # persistent workers pick up the epoch from the sampler
    partial = workers.iter_from(0)
    next(partial)  # an epoch abandoned after one step (a step limit, an exception caught by the caller)
    partial.close()
    assert same(collect(workers), a)  # the next iteration is not polluted by the prefetched batches


def test_file_crops_use_a_per_sample_rng(image_folder):
    """Crop i of epoch e is RandomResizedCrop drawn from default_rng([seed, e, i]), one box per ViewSpec in order."""
    src = open_source("folder", str(image_folder), "train")
    loader = build_pretrain_loader(src, SPECS, 4, seed=11)
    loader.set_epoch(3)
    batch = next(iter(loader))
    for row, i in enumerate(batch.index.tolist()):
        img, rng = src.load(i), np.random.default_rng([11, 3, i])
        for spec, view in zip(SPECS, batch.views, strict=True):
            top, left, h, w = random_resized_crop_box(*img.size, spec.scale, spec.ratio, rng)
            full = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
            expected = torchvision_resized_crop(full, ([top], [left], [h], [w]), spec.size)[0]
            assert (view[row].float() - expected).abs().max() <= 1  # torch's uint8 kernel: fixed-point, within 1


def test_file_eval_loader(image_folder):
    src = open_source("folder", str(image_folder), "train")
    out = list(build_eval_loader(src, 8, 3, num_workers=0))
    assert [x.shape[0] for x, _ in out] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([y for _, y in out]), src.labels)
    first = resize_center_crop(src.load(0), 8, 8)
    assert np.array_equal(out[0][0][0].permute(1, 2, 0).numpy(), np.asarray(first))
    for batch, world in ((2, 3), (1, 4)):
        ranks = [list(build_eval_loader(src, 8, batch, rank=r, world_size=world)) for r in range(world)]
        assert len({len(r) for r in ranks}) == 1  # same number of steps on every rank
        merged = torch.cat([torch.cat([r[s][1] for r in ranks]) for s in range(len(ranks[0]))])
        assert torch.equal(merged, src.labels)
    # The final global batch of 2 over 4 ranks: [r*2//4, (r+1)*2//4) gives sizes 0, 1, 0, 1.
    assert [r[-1][0].shape[0] for r in ranks] == [0, 1, 0, 1] and ranks[0][-1][0].shape == (0, 3, 8, 8)


def test_corrupt_files_skip_and_error(tmp_path):
    rng = np.random.default_rng(2)
    for k in range(8):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / f"{k}.png")
    (tmp_path / "3.png").write_bytes((tmp_path / "3.png").read_bytes()[:40])  # truncated
    (tmp_path / "6.png").write_bytes(b"this is not an image")
    src = open_source("folder", str(tmp_path), "train")
    bad = {str(tmp_path / "3.png"), str(tmp_path / "6.png")}

    loader = build_pretrain_loader(src, SPECS, 4, seed=0, num_workers=0)
    loader.set_epoch(0)
    batches = list(loader)
    assert all(b.views[0].shape[0] == 4 and b.index.shape == (4,) for b in batches)  # batch size kept
    assert set(loader.bad_files) == bad and len(loader.bad_files) == 2
    assert set(sum((b.bad_files for b in batches), [])) == bad
    assert not ({3, 6} & set(torch.cat([b.index for b in batches]).tolist()))  # replaced by valid samples
    loader.set_epoch(1)
    assert loader.bad_files == []  # per-epoch accounting

    strict = build_pretrain_loader(src, SPECS, 4, seed=0, num_workers=2, corrupt="error")
    strict.set_epoch(0)
    with pytest.raises(DataError, match=r"cannot decode image .*[36]\.png"):
        list(strict)
    with pytest.raises(DataError, match=r"cannot decode image .*3\.png"):
        list(build_eval_loader(src, 8, 4))
    # Evaluation with corrupt="skip" (data.corrupt): the files are left out of their batches, not replaced, and
    # recorded with their index for the caller to report; the same with worker processes, and again on a new pass.
    for workers in (0, 2):
        lenient = build_eval_loader(src, 8, 4, num_workers=workers, corrupt="skip")
        for _ in range(2):
            out = list(lenient)
            assert [x.shape[0] for x, _ in out] == [3, 3]
            assert torch.equal(torch.cat([y for _, y in out]), src.labels[[0, 1, 2, 4, 5, 7]])
            assert lenient.skipped == [(3, str(tmp_path / "3.png")), (6, str(tmp_path / "6.png"))]
    with pytest.raises(DataError, match="corrupt must be one of skip, error, got 'ignore'"):
        build_eval_loader(src, 8, 4, corrupt="ignore")

    for k in (0, 1):
        (tmp_path / f"{k}.png").write_bytes(b"")
    all_bad = open_source("folder", str(tmp_path), "train")
    idx = [i for i, p in enumerate(all_bad.paths) if os.path.basename(p) in {"0.png", "1.png", "3.png", "6.png"}]
    sub = type(all_bad)(all_bad.root, [all_bad.paths[i] for i in idx], all_bad.labels[idx], [], "bad:train")
    with pytest.raises(DataError, match="every image of a batch of 4 failed to decode"):
        list(build_pretrain_loader(sub, SPECS, 4))
