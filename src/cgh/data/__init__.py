"""Dataset sources (real on-disk formats and the built-in synthetic set) and the loaders that batch them.

    source = open_source("cifar10", "/data", "train")          # ArraySource: one uint8 (N, 3, H, W) tensor
    source = open_source("imagenet", "/data/imagenet", "val")  # FileSource: files decoded in loader workers
    source = open_source("synthetic", None, "train", size=2000)
    loader = build_pretrain_loader(source, specs, global_batch=256, seed=0)

Datasets (``SOURCES``) and their splits:
    cifar10, cifar100     train, test                                (cifar.py)
    stl10                 train, test, unlabeled, train+unlabeled    (stl10.py)
    tinyimagenet          train, val (test = val)                    (tinyimagenet.py)
    imagenet, imagenet100 train, val, train_1pct, train_10pct        (imagenet.py)
    folder                any: "{split}" in the path is replaced     (folder.py)
    npz                   any: "{split}" in the path is replaced     (npz.py)
    digits                train, test; no path (scikit-learn's)      (digits.py)
    synthetic             train, test; no path                       (synthetic.py)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from cgh.data.base import IMAGE_EXTENSIONS, ArraySource, FileSource, Source
from cgh.data.cifar import open_cifar10, open_cifar100
from cgh.data.configured import open_split, source_options
from cgh.data.digits import open_digits
from cgh.data.eval_loader import EvalLoader, build_eval_loader
from cgh.data.folder import open_folder
from cgh.data.imagenet import open_imagenet, open_imagenet100
from cgh.data.loaders import Batch, PretrainLoader, build_pretrain_loader
from cgh.data.npz import open_npz
from cgh.data.sampler import GlobalBatchSampler
from cgh.data.stl10 import open_stl10
from cgh.data.synthetic import make_synthetic, open_synthetic, save_sample_sheet
from cgh.data.tinyimagenet import open_tinyimagenet
from cgh.errors import DataError

# name -> opener(path, split, **options)
SOURCES: dict[str, Callable[..., Source]] = {
    "cifar10": open_cifar10,
    "cifar100": open_cifar100,
    "stl10": open_stl10,
    "tinyimagenet": open_tinyimagenet,
    "imagenet": open_imagenet,
    "imagenet100": open_imagenet100,
    "folder": open_folder,
    "npz": open_npz,
    "synthetic": open_synthetic,
    "digits": open_digits,
}


def _option_names(opener: Callable[..., Source]) -> list[str]:
    if opener is open_synthetic:  # its options are make_synthetic's keyword arguments
        opener = make_synthetic
    return [p.name for p in inspect.signature(opener).parameters.values() if p.kind is p.KEYWORD_ONLY]


def open_source(name: str, path: str | None, split: str, **options) -> Source:
    """Open dataset ``name`` (a key of ``SOURCES``) at ``path`` for ``split``. ``options`` are the dataset's own
    keyword arguments (e.g. ``cache_dir`` for tinyimagenet, ``in_memory``/``image_size`` for folder, ``size``/
    ``image_size``/``num_classes``/``seed`` for synthetic); an unknown name, split or option is a DataError."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(SOURCES)}")
    opener = SOURCES[name]
    allowed = _option_names(opener)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; its options: "
                        f"{', '.join(allowed) or 'none'}")
    return opener(path, split, **options)


__all__ = [
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "ArraySource",
    "Batch",
    "EvalLoader",
    "FileSource",
    "GlobalBatchSampler",
    "PretrainLoader",
    "Source",
    "build_eval_loader",
    "build_pretrain_loader",
    "make_synthetic",
    "open_source",
    "open_split",
    "save_sample_sheet",
    "source_options",
]
