"""Embeddings out: the features of every image of a split, written to ``.npy`` files chunk by chunk, with a table
saying what each row is (``cgh embed``, in cgh.commands.embed).

Files, for ``out = "emb.npy"`` (or ``"emb"``: a trailing ``.npy`` is dropped to give the stem ``emb``):

    emb.npy                 (N, D) float32, the features when ONE kind is asked for
    emb.<kind>.npy          one (N, D_kind) file per kind when several are (emb.global.npy, emb.hypercolumn.npy)
    emb.csv / emb.parquet   one row per image: index, label (-1: unlabelled), class (its name, empty when the dataset
                            names none), path (the image file of a file source; empty / null for array sources)
    emb.json                what was written: the files and shapes, the transform, and the caller's ``meta`` (the
                            command puts the checkpoint, dataset and split there)

Row i of every file is image i of the split, in dataset order (``index`` = i), except that an image left out as
undecodable (``corrupt="skip"``) has no row: the rows after it move up, ``index`` still names the image, and the
manifest lists the files left out under ``skipped_files``. The features are those of
``cgh.evaluate.features.extract_features`` (same kinds, test transform, device and precision; NOT normalised): with a
chunk size that is a multiple of the batch size the batches, and so the values, are the same.

Bounded memory: each ``.npy`` is a ``numpy.lib.format.open_memmap`` file of the final shape, filled one chunk of
rows at a time; each chunk is ``features.collect`` (the one evaluation loop) over ``source.subset(chunk)``, and its
table rows are written before the next chunk starts. So a folder of a million images holds one chunk of features
(``DEFAULT_CHUNK_BYTES`` by default) and its list of paths, never the (N, D) array. Each file is written under a
temporary name and renamed when complete: an interrupted run leaves no truncated file under the final name.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgh.augment import EvalTransform
from cgh.checkpoints.pretrained import FEATURE_KINDS, PretrainedBackbone
from cgh.data import FileSource, build_eval_loader
from cgh.errors import ConfigError, DataError
from cgh.evaluate.features import collect

TABLE_FORMATS = ("csv", "parquet")
TABLE_COLUMNS = ("index", "label", "class", "path")
DEFAULT_CHUNK_BYTES = 256 * 2**20  # features of one chunk (all kinds): 32768 rows of ResNet-50 global features


@dataclass
class Embeddings:
    """What ``write_embeddings`` wrote."""

    features: dict[str, Path]  # kind -> .npy file of (num_images, dims[kind]) float32
    table: Path
    manifest: Path
    num_images: int
    dims: dict[str, int]
    chunk_rows: int
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # undecodable files left out (corrupt="skip")


def output_stem(out: str | os.PathLike) -> Path:
    """``emb.npy`` and ``emb`` -> ``emb``: the prefix every output file name starts with."""
    path = Path(os.path.expanduser(str(out)))
    return path.with_suffix("") if path.suffix.lower() == ".npy" else path


def output_paths(out: str | os.PathLike, kinds: list[str] | tuple[str, ...], table_format: str = "csv"
                 ) -> tuple[dict[str, Path], Path, Path]:
    """(features {kind: path}, table path, manifest path) for ``out`` (the module docstring's naming rule)."""
    stem = output_stem(out)
    if len(kinds) == 1:
        features = {kinds[0]: stem.parent / f"{stem.name}.npy"}
    else:
        features = {k: stem.parent / f"{stem.name}.{k}.npy" for k in kinds}
    return features, stem.parent / f"{stem.name}.{table_format}", stem.parent / f"{stem.name}.json"


def check_table_format(table_format: str) -> None:
    """ConfigError for an unknown table format, or for parquet without pyarrow (an optional dependency)."""
    if table_format not in TABLE_FORMATS:
        raise ConfigError(f"unknown table format {table_format!r}; expected one of {', '.join(TABLE_FORMATS)}")
    if table_format == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ConfigError("the parquet table needs pyarrow, which is not installed: pip install pyarrow "
                              "(or write the table as csv)") from None


def chunk_rows_for(dim: int, batch_size: int, max_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk: as many as fit ``max_bytes`` of float32 features of width ``dim``, a multiple of the batch
    size (so the batches are those of one pass over the whole source), at least one batch."""
    rows = max(1, max_bytes // (4 * max(1, dim)))
    return max(batch_size, rows // batch_size * batch_size)


def _class_name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else ""


def _table_rows(source, rows: list[int]) -> dict[str, list]:
    """The table's columns for images ``rows`` of ``source``."""
    labels = source.labels[rows].tolist()
    paths = [source.path(i) for i in rows] if isinstance(source, FileSource) else [None] * len(rows)
    return {"index": list(rows), "label": labels, "class": [_class_name(source.classes, y) for y in labels],
            "path": paths}


def _shrink(path: Path, rows: int, batch_rows: int) -> None:
    """Rewrite the .npy file ``path`` with its first ``rows`` rows (images left out made it shorter than
    allocated), ``batch_rows`` rows at a time."""
    full = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.name + ".shrink")
    try:
        short = np.lib.format.open_memmap(tmp, mode="w+", dtype=full.dtype, shape=(rows, full.shape[1]))
        for start in range(0, rows, batch_rows):
            stop = min(rows, start + batch_rows)
            short[start:stop] = full[start:stop]
        short.flush()
        del short, full
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _CsvTable:
    def __init__(self, path: Path):
        self.file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.writer = csv.writer(self.file)
        self.writer.writerow(TABLE_COLUMNS)

    def write(self, rows: dict[str, list]) -> None:
        self.writer.writerows(zip(*(rows[c] for c in TABLE_COLUMNS), strict=True))  # None is written as ""

    def close(self) -> None:
        self.file.close()


class _ParquetTable:
    """One row group per chunk."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([("index", pa.int64()), ("label", pa.int64()), ("class", pa.string()),
                                 ("path", pa.string())])
        self.writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, rows: dict[str, list]) -> None:
        self.writer.write_table(self.pa.table({c: rows[c] for c in TABLE_COLUMNS}, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def _partial(path: Path) -> Path:
    return path.parent / f".{path.name}.partial-{os.getpid()}"


@torch.no_grad()
def write_embeddings(
    model: PretrainedBackbone,
    source,
    kinds: list[str] | tuple[str, ...] = ("global",),
    out: str | os.PathLike = "embeddings.npy",
    *,
    image_size: int,
    mean,
    std,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    amp: torch.dtype | str | None = None,
    resize: int | None = None,
    table_format: str = "csv",
    chunk_size: int | None = None,
    progress: bool = False,
    desc: str = "embedding",
    meta: dict[str, Any] | None = None,
    corrupt: str = "error",
) -> Embeddings:
    """Write the ``kinds`` features of every image of ``source`` (an ArraySource or FileSource) and its table to the
    files the module docstring names for ``out``; returns what was written.

    kinds: distinct ``FEATURE_KINDS``; each is computed on the same batch (one pass over the data, one forward pass
    of the batch per kind). chunk_size: images per chunk (default: ``chunk_rows_for`` the kinds' summed width).
    image_size, mean, std, resize, batch_size, device, num_workers, amp: as ``extract_features``. progress: one tqdm
    bar on stderr counting images. meta: JSON-able values stored in the manifest under ``"protocol"``. corrupt: an
    undecodable file is a DataError ('error') or left out ('skip'; the module docstring says how).
    The model's train/eval mode is restored afterwards.
    """
    kinds = list(kinds)
    if not kinds or len(set(kinds)) != len(kinds) or any(k not in FEATURE_KINDS for k in kinds):
        raise ValueError(f"kinds must be distinct feature kinds of {list(FEATURE_KINDS)}, got {kinds}")
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"batch_size and chunk_size must be positive integers, got {batch_size}, {chunk_size}")
    check_table_format(table_format)
    dims = {k: model.feature_dim(k) for k in kinds}
    total_dim = sum(dims.values())
    n = len(source)
    if n == 0:
        raise ValueError(f"{source.name}: no images to embed")
    rows = chunk_size or chunk_rows_for(total_dim, batch_size)
    feature_paths, table_path, manifest_path = output_paths(out, kinds, table_format)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    partials = {p: _partial(p) for p in [*feature_paths.values(), table_path, manifest_path]}

    device = torch.device(device)
    transform = EvalTransform(image_size, mean, std, resize=resize or None).to(device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=desc, unit="img", leave=False, dynamic_ncols=True, file=sys.stderr)

    def fn(x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, sum D), the kinds side by side
        feats = [model.features(x, k) for k in kinds]
        out = feats[0] if len(feats) == 1 else torch.cat([f.float() for f in feats], dim=1)
        if bar is not None:
            bar.update(x.shape[0])
        return out

    was_training = model.training
    model.eval()
    arrays: dict[str, np.memmap] = {}
    table = None
    try:
        for kind, path in feature_paths.items():  # (N, D) float32 on disk, the final shape
            arrays[kind] = np.lib.format.open_memmap(partials[path], mode="w+", dtype=np.float32, shape=(n, dims[kind]))
        table = (_ParquetTable if table_format == "parquet" else _CsvTable)(partials[table_path])
        filled, skipped = 0, []  # rows written; undecodable files left out
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            chunk = source.subset(range(start, stop))
            loader = build_eval_loader(chunk, image_size, batch_size, num_workers=num_workers, device=device,
                                       corrupt=corrupt)
            feats, _ = collect(fn, loader, transform, device=device, amp=amp, total=stop - start, dim=total_dim)
            missing = {i for i, _ in loader.skipped}
            kept = [start + i for i in range(stop - start) if i not in missing]
            if feats.shape[0] != len(kept):
                raise RuntimeError(f"the evaluation loader yielded {feats.shape[0]} of {len(kept)} images")
            skipped += [path for _, path in loader.skipped]
            offset = 0
            for kind in kinds:  # (chunk, D_kind) slices of the chunk's (chunk, sum D)
                arrays[kind][filled : filled + len(kept)] = feats[:, offset : offset + dims[kind]].numpy()
                offset += dims[kind]
            del feats
            filled += len(kept)
            table.write(_table_rows(source, kept))
        if filled == 0:
            raise DataError(f"{source.name}: none of its {n} images decodes, e.g. {', '.join(skipped[:3])}")
        for array in arrays.values():
            array.flush()
        arrays.clear()  # closes the memory maps
        if filled < n:
            for path in feature_paths.values():
                _shrink(partials[path], filled, rows)
        table.close()
        table = None
        result = Embeddings(feature_paths, table_path, manifest_path, filled, dims, rows, dict(meta or {}),
                            skipped)
        partials[manifest_path].write_text(json.dumps(manifest(result, table_format, image_size, mean, std),
                                                      indent=1, allow_nan=True) + "\n", encoding="utf-8")
        for final, partial in partials.items():
            os.replace(partial, final)
    except BaseException:
        arrays.clear()
        if table is not None:
            table.close()
        for partial in partials.values():
            partial.unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return result


def manifest(result: Embeddings, table_format: str, image_size: int, mean, std) -> dict[str, Any]:
    """The JSON written next to the arrays (file names relative to it, so the folder can move)."""
    return {
        "num_images": result.num_images,
        "features": {k: {"file": p.name, "shape": [result.num_images, result.dims[k]], "dtype": "float32",
                         "normalised": False} for k, p in result.features.items()},
        "table": {"file": result.table.name, "format": table_format, "columns": list(TABLE_COLUMNS)},
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "chunk_rows": result.chunk_rows,
        "skipped_files": result.skipped,
        "protocol": result.meta,
    }
