"""CIFAR-10 and CIFAR-100 from the official "python version" archives (docs/method.md#small-datasets: torchvision's
datasets in the authors' code; we read the same files without torchvision).

Layout: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}``. Each file is a Python-2 pickle (protocol 2) of a dict with bytes keys:
``data`` (N x 3072 uint8, rows = R, G, B planes of 32x32), ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100), and
in the meta file ``label_names`` / ``fine_label_names``.

The pickles are read with :class:`RestrictedUnpickler`, which admits only the few globals those files reference
(numpy array reconstruction and plain builtin types), so a crafted file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import torch

from cgh.data.base import ArraySource, check_split, find_dataset_dir, require_path
from cgh.errors import DataError

# Every global a genuine CIFAR pickle references. numpy < 2 pickles arrays via numpy.core, numpy >= 2 via
# numpy._core; _codecs.encode is how Python 3 writes bytes in protocol 2 (a real Python-2 file stores str instead).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
} | {
    (module, t)  # Python 2 names builtins "__builtin__"; the unpickler maps it to "builtins" after find_class checks
    for module in ("builtins", "__builtin__")
    for t in ("bytes", "bytearray", "str", "int", "float", "bool", "list", "dict", "tuple")
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside :data:`_ALLOWED_GLOBALS` before anything is called."""

    def __init__(self, file: Any, path: str):
        super().__init__(file, encoding="bytes")  # Python-2 str -> bytes, as the CIFAR authors' own loader does
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            if module == "numpy.core.multiarray" and hasattr(np, "_core"):
                module = "numpy._core.multiarray"  # numpy >= 2 renamed it; the old name warns on import
            return super().find_class(module, name)
        raise DataError(f"{self.path}: refusing to unpickle global {module}.{name}; a CIFAR batch file holds only "
                        f"numpy arrays and lists, so this file is not a genuine CIFAR file (it could run code)")


def load_pickle(path: str) -> dict[str, Any]:
    """Load one CIFAR pickle with the restricted unpickler; keys are returned as str."""
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"missing CIFAR file {path}") from e
    except Exception as e:  # truncated (EOFError), not a pickle (UnpicklingError), bad numpy state (ValueError), ...
        raise DataError(f"{path} is not a readable CIFAR pickle (truncated or wrong format): "
                        f"{type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _names(path: str, key: str) -> list[str]:
    meta = load_pickle(path)
    if key not in meta or not isinstance(meta[key], list):
        raise DataError(f"{path}: missing key {key!r} (a list of class names)")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[key]]


def _read_batches(files: list[str], label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in files:
        batch = load_pickle(path)
        for key in ("data", label_key):
            if key not in batch:
                raise DataError(f"{path}: missing key {key!r}; keys present: {sorted(batch)}")
        data, lab = batch["data"], np.asarray(batch[label_key])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: key 'data' must be a uint8 array of shape (N, 3072), got {got}")
        if lab.shape != (data.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
            raise DataError(f"{path}: key {label_key!r} must be {data.shape[0]} integers (one per image row), "
                            f"got {lab.dtype} {lab.shape}")
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}, got {lab.min()}..{lab.max()}")
        images.append(data.reshape(-1, 3, 32, 32))  # (n, 3, 32, 32): each row holds the R, G, B planes
        labels.append(lab.astype(np.int64))
    # np.concatenate copies into a fresh writable array (the unpickled buffers may be read-only).
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))  # (N,3,32,32), (N,)


def open_cifar10(path: str | None, split: str) -> ArraySource:
    """CIFAR-10, splits ``train`` (data_batch_1..5, 50000 images) and ``test`` (test_batch, 10000). ``path`` is the
    ``cifar-10-batches-py`` folder or its parent."""
    check_split("cifar10", split, ("train", "test"))
    root = find_dataset_dir("cifar10", require_path("cifar10", path), "cifar-10-batches-py", "batches.meta")
    classes = _names(os.path.join(root, "batches.meta"), "label_names")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = _read_batches([os.path.join(root, n) for n in names], "labels", len(classes))
    return ArraySource(images, labels, classes, f"cifar10:{split}")


def open_cifar100(path: str | None, split: str) -> ArraySource:
    """CIFAR-100 with its 100 fine labels, splits ``train`` (50000) and ``test`` (10000). ``path`` is the
    ``cifar-100-python`` folder or its parent."""
    check_split("cifar100", split, ("train", "test"))
    root = find_dataset_dir("cifar100", require_path("cifar100", path), "cifar-100-python", "meta")
    classes = _names(os.path.join(root, "meta"), "fine_label_names")
    images, labels = _read_batches([os.path.join(root, split)], "fine_labels", len(classes))
    return ArraySource(images, labels, classes, f"cifar100:{split}")
