"""A small real dataset of natural photographs, built from the photographs that ship inside installed packages, in
the ``train/`` + ``val/`` folder layout a user keeps (``cgh pretrain demo data.name=folder data.path=ROOT``).

Ten classes, one per photograph: scikit-learn's ``china`` and ``flower``, matplotlib's ``grace_hopper``, and
scikit-image's colour photographs ``astronaut``, ``chelsea``, ``coffee``, ``rocket``, ``motorcycle_left``, ``ihc``
and ``hubble_deep_field`` (scikit-image ships them inside its wheel, so nothing is downloaded; it is an optional
dependency: ``pip install -e '.[photos]'``). The images of a class are 32-px patches of its photograph:

    each photograph is centre-cropped to a square and resized to 320 x 320 (Lanczos), then
    train  patches whose left edge is at x = 0, 24, ..., 192 and top at y = 0, 24, ..., 288: the left 224 columns
    val    patches at x = 256, 272, 288 and y = 0, 16, ..., 288: the right 64 columns

so that no validation patch shares a pixel with a training patch (a 32-column gap lies between the regions). Patches
that are nearly flat (pixel std under 6 of 255: the black sky of the Hubble field, a clear sky) are dropped, as they
say nothing about their photograph. That leaves about 117 training and 57 validation patches per class (printed).

The task is to tell which photograph an unseen region comes from: colour, texture and parts of objects, at a scale
(32 px of a 320-px image) where no patch shows a whole object. It is small enough for a CPU study and, unlike the
synthetic set, made of real pixels.

    python benchmarks/photo_patches.py /tmp/photos        # writes /tmp/photos/{train,val}/<photo>/NNN.png
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE, PATCH = 320, 32
TRAIN_X, TRAIN_Y = range(0, 224 - PATCH + 1, 24), range(0, SIZE - PATCH + 1, 24)
VAL_X, VAL_Y = range(256, SIZE - PATCH + 1, 16), range(0, SIZE - PATCH + 1, 16)
MIN_STD = 6.0  # of 255: flatter patches are dropped

# class -> (package, file inside its data directory)
PHOTOS = {
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "ihc": ("skimage", "data/ihc.png"),
    "hubble": ("skimage", "data/hubble_deep_field.jpg"),
}


def photo_path(package: str, relative: str) -> Path:
    """The file of an installed package, found without importing the package (scikit-image's import is slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        extra = " (pip install -e '.[photos]')" if package == "skimage" else ""
        raise SystemExit(f"photo_patches: the photographs of {package} are needed, but it is not installed{extra}")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise SystemExit(f"photo_patches: {path} is missing from the installed {package}")
    return path


def square(photo: Image.Image) -> np.ndarray:
    """The photograph's centre square at SIZE x SIZE, (H, W, 3) uint8."""
    w, h = photo.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(photo.convert("RGB").crop(box).resize((SIZE, SIZE), Image.Resampling.LANCZOS))


def patches(img: np.ndarray, xs, ys) -> list[np.ndarray]:
    cut = (img[y:y + PATCH, x:x + PATCH] for y in ys for x in xs)
    return [p for p in cut if p.astype(np.float32).std() >= MIN_STD]


def build(root: Path) -> dict:
    """Writes the folder (replacing nothing: an existing complete folder with the same manifest is kept) and returns
    its manifest: classes, counts per split, the source files and a digest of the pixels."""
    manifest_path = root / "manifest.json"
    digest, counts, sources = hashlib.sha256(), {"train": {}, "val": {}}, {}
    arrays = {}
    for name, (package, relative) in PHOTOS.items():
        path = photo_path(package, relative)
        sources[name] = f"{package}/{relative}"
        img = square(Image.open(path))
        for split, (xs, ys) in {"train": (TRAIN_X, TRAIN_Y), "val": (VAL_X, VAL_Y)}.items():
            arrays[split, name] = patches(img, xs, ys)
            counts[split][name] = len(arrays[split, name])
            for p in arrays[split, name]:
                digest.update(p.tobytes())
    manifest = {"classes": list(PHOTOS), "counts": counts, "sources": sources, "size": SIZE, "patch": PATCH,
                "sha256": digest.hexdigest()}
    if manifest_path.exists() and json.loads(manifest_path.read_text()) == manifest:
        return manifest
    for (split, name), items in arrays.items():
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.png"):
            old.unlink()
        for i, p in enumerate(items):
            Image.fromarray(p).save(d / f"{i:03d}.png")
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="where to write train/ and val/")
    m = build(ap.parse_args().root)
    for split in ("train", "val"):
        c = m["counts"][split]
        print(f"{split}: {sum(c.values())} patches, " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print(f"sha256 of the pixels: {m['sha256'][:16]}")


if __name__ == "__main__":
    main()
