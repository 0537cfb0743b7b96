"""The configured dataset: a split of ``cfg.data`` opened as a source, with the options its opener takes."""

from __future__ import annotations

from typing import Any

from cgh.config import Config


def source_options(cfg: Config, split: str) -> dict[str, Any]:
    """Extra arguments of ``open_source`` for a split of the configured dataset (the synthetic set's generator)."""
    d = cfg.data
    if d.name == "synthetic":
        return {"size": d.synthetic_size if split == "train" else d.synthetic_test_size,
                "image_size": d.synthetic_image_size, "num_classes": d.synthetic_classes, "seed": d.synthetic_seed}
    if d.name == "digits":  # 8x8 originals, enlarged once to the training size
        return {"image_size": d.image_size}
    return {}


def open_split(cfg: Config, split: str):
    """The configured dataset's ``split`` as a source (cgh.data.open_source)."""
    from cgh.data import open_source

    return open_source(cfg.data.name, cfg.data.path, split, **source_options(cfg, split))
