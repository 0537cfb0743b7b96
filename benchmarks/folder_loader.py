"""Images/s of the pretraining loader on a folder of JPEGs, against the same work done per sample the way
torchvision's ``ImageFolder`` + ``RandomResizedCrop`` + ``PILToTensor`` + the default collate do it (on Pillow).

    python benchmarks/folder_loader.py                            # imagenet preset's views, 7 rounds
    python benchmarks/folder_loader.py --config imagenet_multicrop
    python benchmarks/folder_loader.py --variants pil,cgh --json  # e.g. on an older checkout, for a before figure

The JPEGs are made from scikit-learn's two bundled photographs (640 x 427; nothing is downloaded), re-encoded at
quality 75-95 in three sets (see ``SETS``): ``imagenet``, the sizes most ImageNet training images have (500 x 375,
500 x 333, their portrait forms, ...), cut from the photographs; ``large`` (1-3 MP) and ``camera`` (6-12 MP),
enlarged from them with noise added so that they cost about what photographs of those sizes cost to decode.

Variants, each cutting the preset's views (one RandomResizedCrop per view, uint8 batches):
- ``pil``: per sample, Pillow decode, ``crop`` + ``resize`` (bilinear, antialiased) per view, ``PILToTensor``, the
  default collate: torchvision's pipeline;
- ``cgh``: cgh's loader (``build_pretrain_loader``), with the reduced JPEG decode (``data.jpeg_draft``, the default);
- ``cgh-full``: cgh's loader with ``jpeg_draft=False`` (every JPEG decoded fully).

"Per worker" is the work one loader worker does for a batch, timed in this process with one torch thread (the
loader with ``num_workers=0``: decode, crops, collate; no inter-process transfer). The variants are interleaved
round by round, one pass over the set each, a new epoch (new crops) each round; the figure is the median
over rounds. ``--loader-workers N`` also times whole loaders with N worker processes (persistent, after a warm-up
epoch), the transfer to the main process included. Compare only ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from torch.utils.data import DataLoader, Dataset, default_collate

from bench_env import environment
from cgh.config import load_config
from cgh.config.views import pretrain_views
from cgh.data import build_pretrain_loader, open_source
from cgh.data.decode import random_resized_crop_box
from cgh.methods import teacher_view

# Per set: image sizes (used in turn), number of images, noise added to enlarged images (grey levels, std).
# "imagenet": common ImageNet training-image sizes (most are Flickr images with a 500 px long side), cut from the
# 640 x 427 photographs, so real detail; "large" (1-3 MP) and "camera" (6-12 MP) are enlarged, with Gaussian noise
# added so that decoding them costs about what a photograph of that size costs (an enlarged image without it
# compresses to a fraction of the bits, and most of a JPEG decode is the entropy decoding of those bits).
SETS = {
    "imagenet": ([(500, 375), (500, 333), (375, 500), (333, 500), (500, 400), (500, 500), (640, 427), (400, 300)],
                 96, 0.0),
    "large": ([(1024, 768), (1280, 853), (768, 1024), (1600, 1200), (1024, 1024), (2048, 1365)], 48, 3.0),
    "camera": ([(3000, 2000), (4000, 3000), (2000, 3000)], 12, 3.0),
}
VARIANTS = ("pil", "cgh", "cgh-full")


def make_jpegs(root: str, sizes: list[tuple[int, int]], n: int, noise: float, seed: int) -> None:
    """``n`` JPEGs in ``root/c0`` cut from the two sample photographs at random crops, resized to ``sizes`` in turn,
    with Gaussian ``noise`` added (std in grey levels)."""
    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "c0"), exist_ok=True)
    for i in range(n):
        src, (w, h) = photos[i % 2], sizes[i % len(sizes)]
        frac = rng.uniform(0.6, 1.0)
        cw, ch = int(src.width * frac), int(src.height * frac)
        cw, ch = (int(ch * w / h), ch) if cw / ch > w / h else (cw, int(cw * h / w))
        x, y = int(rng.integers(0, src.width - cw + 1)), int(rng.integers(0, src.height - ch + 1))
        img = src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if noise:
            pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, noise, (h, w, 3)).astype(np.float32)
            img = Image.fromarray(pixels.clip(0, 255).round().astype(np.uint8))
        img.save(os.path.join(root, "c0", f"{i:04d}.jpg"), quality=int(rng.integers(75, 96)))


class PilPerSample(Dataset):
    """torchvision's per-sample pipeline, written on Pillow: ImageFolder's loader (open, convert RGB), then for each
    view RandomResizedCrop (get_params, then ``F.resized_crop``: crop, resize bilinear) and ``PILToTensor``
    (a copy into a (3, H, W) uint8 view)."""

    def __init__(self, paths: list[str], specs):
        self.paths, self.specs = paths, specs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        views = []
        for spec in self.specs:
            top, left, h, w = torchvision_get_params(img.width, img.height, spec.scale, spec.ratio)
            crop = img.crop((left, top, left + w, top + h)).resize((spec.size, spec.size),
                                                                   Image.Resampling.BILINEAR)
            views.append(torch.as_tensor(np.array(crop, copy=True)).permute(2, 0, 1))  # PILToTensor
        return views, 0


def torchvision_get_params(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params`` as torchvision draws it, from torch's global RNG (a loader worker's is seeded
    per worker), so that the baseline pays what torchvision pays for the draw."""
    area, log_ratio = height * width, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return top, left, h, w
    side = min(width, height)  # (the fallback's ratio clamping does not matter for timing)
    return (height - side) // 2, (width - side) // 2, side, side


def make_loader(variant: str, root: str, specs, batch: int, workers: int):
    """An object with ``run_epoch(epoch) -> images`` for the variant."""
    if variant == "pil":
        paths = sorted(os.path.join(root, "c0", f) for f in os.listdir(os.path.join(root, "c0")))
        ds = PilPerSample(paths, specs)
        loader = DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                            persistent_workers=workers > 0, collate_fn=default_collate,
                            generator=torch.Generator().manual_seed(0))

        def run_epoch(epoch: int) -> int:
            return sum(len(b[1]) for b in loader)
        return run_epoch
    source = open_source("folder", root, "train")
    kw = {"jpeg_draft": False} if variant == "cgh-full" else {}
    loader = build_pretrain_loader(source, specs, batch, seed=0, num_workers=workers, **kw)

    def run_epoch(epoch: int) -> int:
        loader.set_epoch(epoch)
        return sum(len(b.labels) for b in loader)
    return run_epoch


def draft_share(root: str, specs, rounds: int) -> float:
    """The fraction of samples whose crops allow a reduced JPEG decode (over ``rounds`` epochs' draws); 0 for a cgh
    without it (an older checkout, timed for a before figure)."""
    try:
        from cgh.data.decode import draft_scale
    except ImportError:
        return 0.0
    sizes = [Image.open(os.path.join(root, "c0", f)).size for f in sorted(os.listdir(os.path.join(root, "c0")))]
    hits = total = 0
    for epoch in range(rounds):
        for i, (w, h) in enumerate(sizes):
            rng = np.random.default_rng([0, epoch, i])
            boxes = [random_resized_crop_box(w, h, s.scale, s.ratio, rng) for s in specs]
            hits += draft_scale(boxes, [s.size for s in specs]) > 1
            total += 1
    return hits / total


def stages(root: str, specs, rounds: int) -> dict[str, float]:
    """Milliseconds per image of each stage alone, on the set's files (best of ``rounds`` passes): the decode and
    the crops of the pil pipeline and of cgh's (cgh at full scale, as on the imagenet set)."""
    from cgh.data.decode import open_image, resized_crop

    paths = sorted(os.path.join(root, "c0", f) for f in os.listdir(os.path.join(root, "c0")))
    pil = {p: Image.open(p).convert("RGB") for p in paths}
    full = {p: torch.from_numpy(np.array(pil[p])) for p in paths}
    rng = np.random.default_rng(0)
    boxes = {p: [random_resized_crop_box(*pil[p].size, s.scale, s.ratio, rng) for s in specs] for p in paths}

    def pil_decode(p):
        with open(p, "rb") as f:
            np.asarray(Image.open(f).convert("RGB"))

    def pil_crops(p):
        for (top, left, h, w), spec in zip(boxes[p], specs, strict=True):
            np.array(pil[p].crop((left, top, left + w, top + h)).resize((spec.size, spec.size),
                                                                        Image.Resampling.BILINEAR))

    def cgh_crops(p):
        for box, spec in zip(boxes[p], specs, strict=True):
            resized_crop(full[p], box, spec.size).contiguous()

    out = {}
    for name, f in (("pil decode", pil_decode), ("cgh decode", lambda p: open_image(p).decode()),
                    ("pil crops", pil_crops), ("cgh crops", cgh_crops)):
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for p in paths:
                f(p)
            best = min(best, (time.perf_counter() - t0) / len(paths))
        out[name] = 1e3 * best
    return out


def measure(root: str, specs, variants, batch: int, rounds: int, workers: int) -> dict:
    loaders = {v: make_loader(v, root, specs, batch, workers) for v in variants}
    for v in variants:
        loaders[v](1000)  # warm-up: worker start-up, page cache, lazy imports
    times: dict[str, list[float]] = {v: [] for v in variants}
    images = 0
    for r in range(rounds):
        for v in variants:
            t0 = time.perf_counter()
            images = loaders[v](r)
            times[v].append(time.perf_counter() - t0)
    return {v: {"images_per_s": images / statistics.median(ts), "spread": [images / max(ts), images / min(ts)]}
            for v, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="imagenet")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--images", type=int, default=0, help="JPEGs per set (0: the set's own number)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--loader-workers", type=int, default=0, help="also time loaders with this many worker processes")
    p.add_argument("--stages", action="store_true", help="also time the decode and the crops alone (cgh >= 12/2026)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)  # what a loader worker has
    cfg = load_config(args.config)
    specs = pretrain_views(cfg.data.image_size, teacher=teacher_view(cfg), weak_scale=tuple(cfg.aug.weak_scale),
                           strong_scale=tuple(cfg.aug.strong_scale), num_local=cfg.method.num_local)
    variants = [v for v in args.variants.split(",") if v]
    result = {"config": args.config, "views": [f"{s.size}px scale {s.scale}" for s in specs], "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for k, name in enumerate(args.sets.split(",")):
            root = os.path.join(tmp, name)
            sizes, n, noise = SETS[name]
            n = args.images or n
            make_jpegs(root, sizes, n, noise, seed=k)
            entry = {"images": n, "per_worker": measure(root, specs, variants, min(args.batch_size, n), args.rounds, 0),
                     "reduced_decode_share": draft_share(root, specs, args.rounds)}
            if args.stages:
                entry["stages_ms"] = stages(root, specs, args.rounds)
            if args.loader_workers:
                entry[f"{args.loader_workers}_workers"] = measure(root, specs, variants, min(args.batch_size, n),
                                                                  max(3, args.rounds // 2), args.loader_workers)
            result["sets"][name] = entry
    result["environment"] = environment(f"Pillow {Image.__version__}")
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.config}: views {', '.join(result['views'])}")
    for name, entry in result["sets"].items():
        print(f"\n{name} set ({entry['images']} JPEGs; reduced decode for {100 * entry['reduced_decode_share']:.0f}% "
              f"of samples)")
        if "stages_ms" in entry:
            print("  per image: " + ", ".join(f"{k} {v:.3f} ms" for k, v in entry["stages_ms"].items()))
        for mode in [k for k in entry if k not in ("reduced_decode_share", "images", "stages_ms")]:
            base = entry[mode].get("pil", {}).get("images_per_s")
            print(f"  {mode.replace('_', ' ')}:")
            for v, r in entry[mode].items():
                ratio = f"  {r['images_per_s'] / base:.2f}x pil" if base else ""
                print(f"    {v:9s} {r['images_per_s']:7.1f} images/s  (rounds {r['spread'][0]:.1f}-"
                      f"{r['spread'][1]:.1f}){ratio}")
    print(f"\n{result['environment']}")


if __name__ == "__main__":
    main()
