"""Shared test helpers that are not reference implementations (those live in tests/reference.py).

Paths, the tiny training configuration, small method configs and views, writers of dataset files in their real
on-disk formats, crafted pickle payloads and checks of the command line's error output. Test modules import from
here (``from tests.helpers import ...``), never from one another or from conftest.py.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cgh.config import Config

# ---------------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]  # this file is tests/helpers.py: whatever the depth of the test module
# torchvision's state-dict keys and shapes (tests/data/torchvision; see its README).
TORCHVISION_SHAPES = REPO / "tests" / "data" / "torchvision"
# A checkpoint written by the pre-redesign cgh and what the same run ended with (see its make_fixture.py).
CHECKPOINT_FIXTURES = REPO / "tests" / "data" / "checkpoints"

# ---------------------------------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------------------------------

# A configuration small enough for a CPU test: an eighth-width ResNet-18 on 256 synthetic 32-px images.
TINY = ["data.name=synthetic", "data.path=", "data.synthetic_size=256", "data.synthetic_test_size=128",
        "data.image_size=32", "data.synthetic_image_size=32", "model.arch=resnet18", "model.stem=cifar",
        "model.width=8", "method.queue_size=128", "method.hid_dim=32", "method.feat_dim=16", "method.hyper_dim=16",
        "optim.batch_size=64", "optim.warmup_epochs=0", "method.loss_warmup_epochs=1", "method.loss_warmup_min_steps=0",
        "train.knn_every=0",
        "train.progress=false", "train.log_every=1", "data.num_workers=0"]


def tiny_config(out_dir, *overrides: str):
    """The cifar10 preset shrunk to TINY, writing into ``out_dir``, with extra ``key=value`` overrides."""
    from cgh.config import load_config

    return load_config("cifar10", [*TINY, f"out_dir={out_dir}", *overrides])


# The seed of the statistical tests (a trained number compared with a threshold; a collapse provoked and detected):
# CGH_TEST_SEED shifts it, so that the suite can be checked on other trajectories without another machine (a one-thread
# run on another CPU is in effect another seed). The suite must pass for seeds 0 to 4 (tests/README.md).
TEST_SEED = int(os.environ.get("CGH_TEST_SEED", "0"))


# The batch and queue size of small_cfg / views (the method tests' B and K).
SMALL_BATCH, SMALL_QUEUE = 8, 32


def small_cfg(name="cgh", **method):
    """A method config for in-memory forward passes: a 16-wide ResNet-18 with plain BN, a queue of SMALL_QUEUE, and
    four distinct temperatures; ``method`` sets further ``cfg.method`` fields."""
    cfg = Config()
    cfg.model.arch, cfg.model.stem, cfg.model.width, cfg.model.bn_mode = "resnet18", "cifar", 16, "plain"
    m = cfg.method
    m.name, m.queue_size, m.feat_dim, m.hyper_dim, m.hid_dim = name, SMALL_QUEUE, 16, 12, 32
    # four distinct temperatures, so a swapped direction or temperature cannot go unnoticed
    m.temp_teacher_global, m.temp_student_global, m.temp_teacher_hyper, m.temp_student_hyper = 0.05, 0.11, 0.09, 0.07
    for k, v in method.items():
        setattr(m, k, v)
    return cfg


def views(n=2, size=16, batch=SMALL_BATCH):
    """``n`` random (already augmented) views of a batch."""
    return [torch.randn(batch, 3, size, size) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------------------
# Dataset files in their real formats
# ---------------------------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)


def save_png(path, hwc: np.ndarray) -> None:
    """Lossless PNG content (whatever the extension says), so that pixels round-trip exactly."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(hwc).save(path, format="PNG")


def save_png16(path, samples: np.ndarray) -> None:
    """A 16-bit PNG written byte by byte (Pillow writes 16-bit greyscale only): ``samples`` uint16 (H, W) grey,
    (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA."""
    import zlib

    hw = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = samples.astype(">u2").reshape(hw[0], -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", hw[1], hw[0], 16, color_type, 0, 0, 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def png_bit_depth(path) -> int:
    """The bit depth a PNG file's header declares."""
    with open(path, "rb") as f:
        return f.read(25)[24]


def random_hwc(h=8, w=8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python-2 ``str`` opcodes (BINSTRING), like the genuine CIFAR files, instead of Python 3's
    ``_codecs.encode`` call."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<I", len(obj)) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def dump(obj, path, py2: bool) -> None:
    """Pickles ``obj`` as the CIFAR files are: protocol 2, with Python-2 strings if ``py2``."""
    with open(path, "wb") as f:
        if not py2:
            pickle.dump(obj, f, protocol=2)
            return
        Py2Pickler(f, protocol=2).dump(obj)
    if py2:  # numpy 1.x (what the files were written with) names the module numpy.core
        data = open(path, "rb").read().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        open(path, "wb").write(data)


def write_cifar10(root, n=3, py2=False) -> dict:
    """A CIFAR-10 python folder (``root/cifar-10-batches-py``) of ``n`` images per batch; returns what each batch
    file holds, ``{name: (data, labels)}``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump({b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072}, folder / "batches.meta", py2)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
        dump(batch, folder / name, py2)
        written[name] = (data, labels)
    return written


def npz_bytes(compressed: bool) -> bytes:
    """A small valid npz archive (two 4x4 RGB images, labels 0 and 1), as bytes."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(
        buf, images=np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3), labels=np.array([0, 1]))
    return buf.getvalue()


PHOTO_CLASSES = ("china_left", "china_right", "flower_left", "flower_right", "hopper")


def _photographs() -> dict[str, np.ndarray]:
    """Five (H, W, 3) uint8 regions of the real photographs that ship with installed packages (scikit-learn's china
    and flower, matplotlib's grace_hopper), one per class of ``photo_folder``."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images  # (427, 640, 3) each
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        hopper = np.asarray(im.convert("RGB"))  # (600, 512, 3)
    regions = (china[:, :320], china[:, 320:], flower[:, :320], flower[:, 320:], hopper)
    return dict(zip(PHOTO_CLASSES, regions, strict=True))


def photo_folder(root, splits=("train", "val"), per_split=(6, 3), size=40, seed=0) -> dict[str, int]:
    """A folder of real JPEG photographs as people keep them: ``root/<split>/<class>/NN.jpg``, five classes
    (``PHOTO_CLASSES``), ``per_split[i]`` images per class in ``splits[i]``. Split i's crops are cut from band i of
    its class's region (horizontal bands that do not overlap), so no split holds pixels of another. Returns the
    number of images per split."""
    rng = np.random.default_rng(seed)
    counts = {}
    for cls, region in _photographs().items():
        band = region.shape[0] // len(splits)
        for i, (split, n) in enumerate(zip(splits, per_split, strict=True)):
            folder = Path(root) / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                side = int(rng.integers(band // 2, min(band, region.shape[1]) + 1))
                top = i * band + int(rng.integers(0, band - side + 1))
                left = int(rng.integers(0, region.shape[1] - side + 1))
                crop = Image.fromarray(region[top : top + side, left : left + side]).resize((size, size))
                crop.save(folder / f"{k:02d}.jpg", format="JPEG", quality=90)
            counts[split] = counts.get(split, 0) + n
    return counts


def break_jpeg(path) -> str:
    """Cut a JPEG file to half its bytes (a download that stopped): it no longer decodes. Returns its path."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# Crafted pickle payloads
# ---------------------------------------------------------------------------------------------------------------------


class RunsShell:
    """Unpickled by an unrestricted unpickler, this runs a shell command that creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsPython:
    """Unpickled by an unrestricted unpickler, this runs Python code that creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


# ---------------------------------------------------------------------------------------------------------------------
# Files and command-line output
# ---------------------------------------------------------------------------------------------------------------------


def one_error_line(err: str) -> str:
    """The CLI's report of a CGHError: one line starting with "error:" (an invalid config lists its problems on
    indented lines below it), never a traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len([x for x in lines if x.startswith("error:")]) == 1 and lines[0].startswith("error: "), err
    assert all(x.startswith("  ") for x in lines[1:]), err
    return err


def files_of(directory) -> dict:
    """Every file under ``directory`` with its bytes."""
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def png_size(path) -> tuple[int, int]:
    """The size of a PNG file, after decoding all of it (a truncated PNG fails here)."""
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.size


# ---------------------------------------------------------------------------------------------------------------------
# Run directories: what an interrupted and resumed run is compared by
# ---------------------------------------------------------------------------------------------------------------------


def read_records(run) -> list[dict]:
    """RUN/metrics.jsonl (none without one), skipping a line cut short by a kill."""
    import json

    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def assert_same_training(a: dict, b: dict, what: str) -> None:
    """Two checkpoints at the same position with bit-identical model and optimizer state."""
    assert (a["epoch"], a["epoch_step"], a["step"]) == (b["epoch"], b["epoch_step"], b["step"]), what
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{what}: {key}"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]), f"{what}: optimizer state {i}"
