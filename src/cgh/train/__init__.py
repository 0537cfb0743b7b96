"""The training run: ``prepare_run`` (``prepare``) builds a ``Run`` (``run``), ``pretrain`` (``loop``) trains it.
Around the loop: the run directory and its metrics log (``rundir``), one writer per run directory (``runlock``),
checkpoints and exact resume (``resume``), the kNN monitor (``monitor``), the online probe (``online_probe``), what a
run prints (``console``), TensorBoard and W&B (``loggers``), and what a step costs (``cost``).

``cgh.train.pretrain`` and ``cgh.train.prepare_run`` are the public API (README); they are imported on first use, so
importing one module of this package does not import the whole loop."""

from __future__ import annotations

import importlib

_PUBLIC = {"pretrain": "cgh.train.loop", "train_one_epoch": "cgh.train.loop", "prepare_run": "cgh.train.prepare",
           "Run": "cgh.train.run", "RunResult": "cgh.train.run"}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'cgh.train' has no attribute {name!r}")
