"""The configured dataset: a split of ``cfg.data`` opened as a source, with the options its opener takes; the test
split ``auto`` resolved; and where a split's images are, so that a test split that is the training split is seen."""

from __future__ import annotations

import os
from typing import Any

from cgh.config import Config
from cgh.data.folder import auto_test_split, split_dir
from cgh.errors import DataError

# data.eval_test_split=auto: the held-out split of each dataset with fixed splits (the others: "test")
AUTO_TEST_SPLIT = {"imagenet": "val", "imagenet100": "val", "tinyimagenet": "val"}


def source_options(cfg: Config, split: str) -> dict[str, Any]:
    """Extra arguments of ``open_source`` for a split of the configured dataset (the synthetic set's generator)."""
    d = cfg.data
    if d.name == "synthetic":
        return {"size": d.synthetic_size if split == "train" else d.synthetic_test_size,
                "image_size": d.synthetic_image_size, "num_classes": d.synthetic_classes, "seed": d.synthetic_seed}
    if d.name == "digits":  # 8x8 originals, enlarged once to the training size
        return {"image_size": d.image_size}
    if d.name == "folder":
        return {"folder_splits": d.folder_splits}
    return {}


def resolve_split(cfg: Config, split: str) -> str | None:
    """``split`` itself, or for ``auto`` the dataset's held-out split: ``AUTO_TEST_SPLIT`` or test; for a folder of
    splits or a ``{split}`` folder / npz pattern, test where it exists, else val, else None (it has neither)."""
    if split != "auto":
        return split
    d = cfg.data
    if d.name == "folder":
        return auto_test_split(d.path, d.folder_splits)
    if d.name == "npz" and "{split}" in d.path:
        found = [s for s in ("test", "val") if os.path.isfile(os.path.expanduser(d.path.replace("{split}", s)))]
        return found[0] if found else None
    return AUTO_TEST_SPLIT.get(d.name, "test")


def open_split(cfg: Config, split: str):
    """The configured dataset's ``split`` (``auto``: ``resolve_split``) as a source (cgh.data.open_source)."""
    from cgh.data import open_source

    d = cfg.data
    resolved = resolve_split(cfg, split)
    if resolved is None:
        example = d.path.replace("{split}", "val") if "{split}" in d.path else os.path.join(d.path, "val")
        raise DataError(f"{d.name}: {d.path} has no test nor val split for the evaluation test split 'auto'; add one "
                        f"({example}{os.sep + '<class>' + os.sep if d.name == 'folder' else ''}) or name a split "
                        f"(data.eval_test_split, --test-split)")
    return open_source(d.name, d.path, resolved, **source_options(cfg, resolved))


def split_location(cfg: Config, split: str) -> str:
    """Where the images of ``split`` are, as a string equal for two splits exactly when they are the same images:
    the real path of a folder's directory or an npz file, else the dataset, its real path and the split name."""
    d = cfg.data
    split = resolve_split(cfg, split) or split
    path = os.path.expanduser(d.path or "")
    if d.name == "folder":
        try:
            return os.path.realpath(split_dir(d.path, split, d.folder_splits))
        except DataError:  # not there (any more): the path as given
            return os.path.realpath(path.replace("{split}", split))
    if d.name == "npz":
        return os.path.realpath(path.replace("{split}", split))
    if d.name == "tinyimagenet" and split == "test":  # its test split is val (cgh.data.tinyimagenet)
        split = "val"
    return f"{d.name}:{os.path.realpath(path) if path else ''}:{split}"


def check_same_classes(train, test) -> None:
    """DataError unless two labelled sources name the same classes: a label is a class's position in each split's
    own sorted list, so a class folder missing from one split would shift the meaning of the others' labels."""
    if train.classes and test.classes and list(train.classes) != list(test.classes):
        only = {s.name: sorted(set(s.classes) - set(o.classes)) for s, o in ((train, test), (test, train))}
        said = "; ".join(f"only in {name}: {', '.join(c[:10]) + (' ...' if len(c) > 10 else '')}"
                         for name, c in only.items() if c)
        raise DataError(f"{train.name} and {test.name} have different classes ({said or 'in another order'}); give "
                        f"both splits the same class folders")


def saved_folder_splits(saved: dict[str, Any]) -> bool:
    """data.folder_splits of a config saved in a checkpoint: one saved before the key existed (cgh 0.1) read every
    sub-folder of a folder as a class, so a resumed run (and the split it was pretrained on) keep that reading."""
    data = saved.get("data") if isinstance(saved, dict) else None
    return bool(data.get("folder_splits", False)) if isinstance(data, dict) else False
