"""Tiny-ImageNet (``tiny-imagenet-200``), decoded once into memory (docs/method.md#small-datasets: the authors read the
folder and take validation labels from ``val_annotations.txt``).

Layout of the official archive:
``wnids.txt`` (200 wnids), ``words.txt`` (optional here: ``wnid<TAB>names``), ``train/<wnid>/images/*.JPEG``,
``val/images/*.JPEG`` and ``val/val_annotations.txt`` (``file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1``). The official
``test`` folder has no labels, so ``test`` is accepted as an alias of ``val``.

Class index = position in the sorted wnid list (torchvision ImageFolder convention, what the authors' folder reader
gives for ``train``); ``classes`` are the first name of each wnid in ``words.txt`` (the wnid itself without it).
All 100000 + 10000 images are 64x64 JPEG; decoding them takes about a minute, once: pass ``cache_dir`` (e.g.
``~/.cache/cgh``) to keep the decoded array on disk.
"""

from __future__ import annotations

import os

import torch

from cgh.data.base import ArraySource, check_split, find_dataset_dir, is_image_file, require_path
from cgh.data.decode import decode_all
from cgh.errors import DataError

SPLITS = ("train", "val", "test")
_SIDE = 64


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f if line.strip()]


def open_tinyimagenet(
    path: str | None, split: str, *, num_workers: int | None = None, cache_dir: str | None = None
) -> ArraySource:
    """Tiny-ImageNet ``train`` (100000) or ``val`` (10000; ``test`` is an alias) as a (N, 3, 64, 64) array.
    Grayscale images become RGB and any image not 64x64 is resized (shorter side) and centre-cropped to 64."""
    check_split("tinyimagenet", split, SPLITS)
    root = find_dataset_dir("tinyimagenet", require_path("tinyimagenet", path), "tiny-imagenet-200", "wnids.txt")
    wnids = sorted(set(w.strip() for w in _read_lines(os.path.join(root, "wnids.txt"))))
    if not wnids:
        raise DataError(f"{os.path.join(root, 'wnids.txt')} lists no classes")
    index = {w: i for i, w in enumerate(wnids)}

    words = {}
    if os.path.isfile(os.path.join(root, "words.txt")):
        for line in _read_lines(os.path.join(root, "words.txt")):
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.split(",")[0].strip()
    classes = [words.get(w) or w for w in wnids]

    paths: list[str] = []
    labels: list[int] = []
    if split == "train":
        for wnid in wnids:
            folder = os.path.join(root, "train", wnid, "images")
            if not os.path.isdir(folder):
                raise DataError(f"tinyimagenet: missing class folder {folder} (class listed in wnids.txt)")
            files = sorted(f for f in os.listdir(folder) if is_image_file(f))
            paths += [os.path.join(folder, f) for f in files]
            labels += [index[wnid]] * len(files)
    else:
        annotations = os.path.join(root, "val", "val_annotations.txt")
        if not os.path.isfile(annotations):
            raise DataError(f"tinyimagenet: missing {annotations} (the validation labels)")
        for n, line in enumerate(_read_lines(annotations), 1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(f"{annotations}:{n}: expected 'file<TAB>wnid<TAB>box' with a wnid of wnids.txt, "
                                f"got {line!r}")
            paths.append(os.path.join(root, "val", "images", fields[0]))
            labels.append(index[fields[1]])
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DataError(f"tinyimagenet: {len(missing)} images listed in {annotations} are missing, e.g. "
                            f"{', '.join(missing[:3])}")
    if not paths:
        raise DataError(f"tinyimagenet: no images found for split {split!r} under {root}")

    images = decode_all(paths, _SIDE, num_workers=num_workers, desc=f"tinyimagenet:{split}", cache_dir=cache_dir)
    name = "val" if split == "test" else split
    return ArraySource(images, torch.tensor(labels, dtype=torch.int64), classes, f"tinyimagenet:{name}")
