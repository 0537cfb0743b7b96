"""Checkpoints: written atomically, read with ``weights_only=True``, checked before use.

A pretraining checkpoint is a dict of tensors and plain Python values only (so it loads with
``torch.load(..., weights_only=True)``, which refuses any object that could run code when unpickled):

    format "cgh-checkpoint", version, cgh_version, config (the resolved config as a dict), method, arch,
    epoch (completed epochs), step (global step), epoch_step (steps done in the current epoch, for mid-epoch
    resume), world_size, model (the method's state dict: student, teacher, queues and pointers, centres),
    optimizer, scaler, rng (per-process RNG states), metrics (last values worth keeping)

Writes go to a temporary file in the same directory, are flushed to disk, and are renamed over the target: a crash,
a SIGKILL or a full disk in the middle of a write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from cgh.errors import CheckpointError

FORMAT = "cgh-checkpoint"
VERSION = 1


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` via a temporary file and a rename; on any failure the old file is untouched."""
    write_atomic(Path(path), lambda f: torch.save(obj, f))


def copy_atomic(src: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy ``src`` to ``path`` via a temporary file and a rename (a plain copy killed halfway leaves a truncated
    file under the final name)."""
    def copy(f):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 24)

    write_atomic(Path(path), copy)


class _WriteErrors:
    """A file wrapper that remembers the OSError of a failed write. torch's zip writer turns it into "unexpected pos
    1090048 vs 1089944", which hides the cause a user can act on ("No space left on device")."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        self.f.flush()


def write_atomic(path: Path, write, what: str = "checkpoint") -> None:
    """Write through ``write(f)`` to a temporary file beside ``path``, fsync, rename over ``path``, fsync the folder.
    A failure raises CheckpointError naming the file and the cause (``what`` says what it is: "checkpoint", "export");
    the file previously at ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    f = None
    try:
        with open(tmp, "wb") as raw:
            f = _WriteErrors(raw)
            write(f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):
            cause = (f.error if f is not None else None) or e
            raise CheckpointError(f"could not write {what} {path}: {cause}; the previous {what}, if any, is "
                                  f"intact") from e
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    d = Path(directory)
    if d.is_dir():
        for p in d.glob(".*.tmp-*"):
            p.unlink(missing_ok=True)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or for a run directory (what ``cgh pretrain --resume`` takes) its ``checkpoints/last.pt``; a
    directory without one is a CheckpointError saying where the file was looked for."""
    path = Path(path)
    if not path.is_dir():
        return path
    last = path / "checkpoints" / "last.pt"
    if not last.is_file():
        raise CheckpointError(f"{path} is a directory without {Path('checkpoints') / 'last.pt'}: give a checkpoint "
                              f"file, or a run directory of `cgh pretrain` (its checkpoint is RUN/checkpoints/last.pt)")
    return last


def load_file(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU, turning every failure into a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"expected a checkpoint file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    what = _detectron2_pickle(path)  # torch.load would call it "not a PyTorch file (Unsupported operand 149)"
    if what:
        raise CheckpointError(
            f"{path} is a detectron2 weight pickle ({what}): detectron2 reads it, cgh does not. Evaluate the cgh "
            f"checkpoint it was exported from (runs/x/checkpoints/last.pt, or the run directory runs/x), or a "
            f"torchvision export of it (cgh export CHECKPOINT --format torchvision --out r.pth; then --dataset)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickling_detail(e)
        if "GLOBAL" in detail:  # a reference to a class or function: how a crafted file runs code
            raise CheckpointError(
                f"refused to load {path}: it contains objects other than tensors and plain values, which could run "
                f"code when unpickled (loaded with weights_only=True). Detail: {detail}"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a PyTorch file ({detail})") from None
    except MemoryError:
        raise
    except Exception as e:  # damaged bytes raise RuntimeError, EOFError, KeyError, ... depending on where they break
        detail = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a PyTorch file "
                              f"({type(e).__name__}: {detail})") from None


def _detectron2_pickle(path: Path) -> str:
    """What a detectron2 weight pickle holds ("written by cgh export --format detectron2, 100 arrays ..."), or ''
    for any other file. Only the pickle's opcodes are read (pickletools), nothing is built: a crafted file can
    neither run code nor allocate here."""
    names: set[str] = set()
    author, previous = None, None
    with open(path, "rb") as f:
        if f.read(1) != b"\x80":  # a pickle of protocol 2 or later (a torch.save file is a zip archive)
            return ""
        f.seek(0)
        try:
            for _, arg, _ in pickletools.genops(f):  # the first pickle: a legacy torch file's is its magic number
                if isinstance(arg, str):
                    author = arg if previous == "__author__" else author
                    if arg.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")):
                        names.add(arg)
                    previous = arg
        except Exception:  # not a pickle after all, or a damaged one: torch.load names the problem
            return ""
    if not names:
        return ""
    from cgh.checkpoints.export import D2_AUTHOR  # cgh.checkpoints.export imports this module

    by = "written by cgh export --format detectron2" if author == D2_AUTHOR else f"__author__ {author!r}"
    return f"{by}, {len(names)} arrays named stem.*, res2.* .. res5.*"


def _unpickling_detail(e: pickle.UnpicklingError) -> str:
    """The informative line of torch's weights_only error ("Trying to load unsupported GLOBAL posix.system ...",
    "Unsupported operand 80"); its first line is boilerplate about the weights_only default."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line
    return lines[0] if lines else type(e).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A pretraining checkpoint written by ``cgh pretrain``, validated."""
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cgh pretraining checkpoint (no format={FORMAT!r} field); for a plain "
                              f"backbone state dict use cgh.load_backbone")
    return check_checkpoint(ckpt, path)


# The fields every reader relies on, with their types.
_FIELDS = {"config": dict, "model": dict, "epoch": int, "step": int, "method": str}


def check_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Check the version and the fields of a dict marked ``format: cgh-checkpoint``; returns it."""
    version = ckpt.get("version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: checkpoint version {version!r} is not an integer")
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer cgh (checkpoint version {ckpt['version']}); upgrade cgh")
    missing = [k for k in _FIELDS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks the field(s) {missing}")
    wrong = [f"{k} ({type(ckpt[k]).__name__}, expected {t.__name__})" for k, t in _FIELDS.items()
             if not isinstance(ckpt[k], t) or isinstance(ckpt[k], bool)]
    if wrong:
        raise CheckpointError(f"{path}: wrong type of field(s) {', '.join(wrong)}")
    return ckpt


def check_compatible(ckpt: dict[str, Any], method: str, arch: str, path: str | os.PathLike) -> None:
    """Refuse, with a clear message, a checkpoint of another method or architecture than the run's."""
    if ckpt["method"] != method:
        raise CheckpointError(f"{path} holds a {ckpt['method']!r} model, but this run's method.name is {method!r}")
    if ckpt.get("arch") != arch:
        raise CheckpointError(f"{path} holds a {ckpt.get('arch')!r} backbone, but this run's model.arch is {arch!r}")


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA, Python), as tensors and plain values."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _python_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
