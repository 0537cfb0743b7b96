"""The environment line the benchmark scripts print under their results (imported from benchmarks/ by them)."""

from __future__ import annotations

import os
import platform

import torch

from cgh import __version__


def cpu_name() -> str:
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        if name:
            return name
    return platform.processor()


def environment(versions: str = "", extra: str = "") -> str:
    """cgh and torch versions (and ``versions``), threads, cores, CPU, the load average at the end (and ``extra``)."""
    parts = [f"cgh {__version__}, torch {torch.__version__}", versions,
             f"{torch.get_num_threads()} threads, {os.cpu_count()} cores ({cpu_name()})",
             f"load average {os.getloadavg()[0]:.2f} at the end", extra]
    return ", ".join(p for p in parts if p)
