"""Property-based fuzzing of everything that parses user input: the config parser (override
strings, YAML text, nested mappings, validation), the npz and folder sources, and the checkpoint loaders. Property:
any input ends in a result or a clean ``cgh.errors.CGHError`` naming the problem, never another exception type
from deep inside (a ZeroDivisionError, a KeyError, zlib.error ...), and a result is usable.

Example counts are moderate so that the file takes well under a minute; CGH_FUZZ_EXAMPLES=2000 (say) explores more.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cgh.checkpoints.files import load_file
from cgh.checkpoints.pretrained import load_backbone
from cgh.config import Config, _all_keys, load_config, merge, parse_overrides
from cgh.data import IMAGE_EXTENSIONS, ArraySource, FileSource, open_source
from cgh.errors import CGHError
from cgh.model.backbone import ResNet
from tests.helpers import npz_bytes

SCALE = int(os.environ.get("CGH_FUZZ_EXAMPLES", "0"))
# Damaged images and archives legitimately make Pillow, numpy and torch warn (truncated TIFF tags, pickle protocol).
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


def fuzz(n: int):
    """Hypothesis settings: n examples (or CGH_FUZZ_EXAMPLES), no deadline (a loaded CI box is slow)."""
    return settings(max_examples=SCALE or n, deadline=None, derandomize=not SCALE,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------

KEYS = _all_keys(Config())
SECTIONS = sorted({k.split(".")[0] for k in KEYS})

# Values as a user could type them: YAML scalars and flow collections, edge numbers, junk.
scalar_text = st.one_of(
    st.sampled_from(["0", "-1", "1", "1e308", "-1e-320", ".nan", ".inf", "-.inf", "true", "no", "null", "~", "",
                     "[]", "{}", "[1, 2", "{a: 1}", "[layer3, layer4]", "[0.5, 0.5, 0.5]", "!!python/object:os.system",
                     "'quoted'", "2024-01-01", "0x10", "1_000", "&a [*a]", "*b", "? x", "cgh", "auto", "split"]),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=20),
)
override_key = st.one_of(st.sampled_from(KEYS), st.text(max_size=20),
                         st.lists(st.sampled_from(SECTIONS + ["x", "", "0"]), min_size=1, max_size=4).map(".".join))
# Edge numbers for real keys: zero sizes, negative counts, tiny and huge values, NaN (what a typo produces).
edge_number = st.sampled_from(["0", "-1", "1", "2", "3", "7", "0.5", "-0.0", "1e-300", "1e9", ".nan", ".inf", "-.inf"])
override = st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), edge_number),
                     st.builds(lambda k, v: f"{k}={v}", override_key, scalar_text), st.text(max_size=30))


@fuzz(800)
@given(st.lists(override, max_size=6), st.integers(1, 8))
@example(["optim.batch_size=0"], 1)  # was a ZeroDivisionError
@example(["model.bn_splits=0"], 1)  # was a ZeroDivisionError
def test_overrides_end_in_a_config_or_a_config_error(items, world_size):
    try:
        cfg = load_config(None, items)
        cfg.validate(world_size)
    except CGHError:
        return
    assert isinstance(cfg, Config)


yaml_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(SECTIONS + KEYS), st.text(max_size=8)),
                                               children, max_size=4)),
    max_leaves=12,
)


@fuzz(600)
@given(st.dictionaries(st.sampled_from(SECTIONS + ["seed", "out_dir", "junk"]),
                       st.one_of(yaml_value, st.dictionaries(st.sampled_from([k.split(".")[-1] for k in KEYS]),
                                                             yaml_value, max_size=5)), max_size=5),
       st.integers(1, 4))
def test_yaml_mappings_end_in_a_config_or_a_config_error(data, world_size):
    text = yaml.safe_dump(data, allow_unicode=True)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_config(path).validate(world_size)
        except CGHError:
            pass
    try:
        merge(Config(), data, "fuzz")
    except CGHError:
        pass


@fuzz(400)
@given(st.text(max_size=200))
def test_yaml_text_ends_in_a_config_or_a_config_error(text):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_config(path).validate()
        except CGHError:
            pass


@fuzz(400)
@given(st.lists(st.text(max_size=30), max_size=5))
def test_parse_overrides_ends_in_a_mapping_or_a_config_error(items):
    try:
        assert isinstance(parse_overrides(items), dict)
    except CGHError:
        pass


# ---------------------------------------------------------------------------------------------------------------------
# npz arrays
# ---------------------------------------------------------------------------------------------------------------------

dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes(),
                   hnp.complex_number_dtypes(), hnp.byte_string_dtypes(max_len=3), hnp.unicode_string_dtypes(max_len=3),
                   hnp.datetime64_dtypes())
shapes = st.one_of(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4),
                   st.sampled_from([(2, 4, 4, 3), (2, 3, 4, 4), (1, 1, 1, 3), (3, 3, 3, 3), (2, 0, 4, 3),
                                    (0, 4, 4, 3)]))
arrays = st.one_of(hnp.arrays(dtypes, shapes),
                   hnp.arrays(np.uint8, st.sampled_from([(2, 4, 4, 3), (2, 3, 5, 5), (1, 2, 2, 3), (2, 4, 0, 3)])))
labels = st.one_of(hnp.arrays(st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes()),
                              hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)),
                   st.builds(lambda v: np.array(v), st.lists(st.integers(-2**63, 2**64 - 1), max_size=3)))


def check_source(src) -> None:
    """What the loaders rely on in a source that opened."""
    assert isinstance(src, (ArraySource, FileSource))
    n = len(src)
    assert n >= 1 and src.labels.dtype == torch.int64 and src.labels.shape == (n,)
    labelled = src.labels[src.labels >= 0]
    assert bool((src.labels >= -1).all()) and (labelled.numel() == 0 or int(labelled.max()) < len(src.classes))
    if isinstance(src, ArraySource):
        assert src.images.dtype == torch.uint8 and src.images.shape[1] == 3 and min(src.images.shape[2:]) >= 1


@fuzz(600)
@given(st.dictionaries(st.sampled_from(["images", "labels", "classes", "extra"]), st.one_of(arrays, labels),
                       max_size=4),
       st.booleans())
@example({"images": np.zeros((2, 4, 0, 3), np.uint8)}, False)  # opened as images of 4x0 pixels
@example({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0, 10**12])}, False)  # hung
@example({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0, 2**64 - 1], np.uint64)}, False)
def test_npz_arrays_end_in_a_source_or_a_data_error(content, compressed):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.npz")
        (np.savez_compressed if compressed else np.savez)(path, **content)
        try:
            src = open_source("npz", path, "train")
        except CGHError:
            return
        check_source(src)


# npz_bytes (tests/helpers.py): the archive the npz regressions of tests/unit/data/test_npz.py damage too
NPZ = {False: npz_bytes(False), True: npz_bytes(True)}


def mutated(raw: bytes, data) -> bytes:
    """``raw`` with a few bytes overwritten and/or cut short (hypothesis draws where)."""
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 4))):
        out[data.draw(st.integers(0, len(out) - 1))] = data.draw(st.integers(0, 255))
    return bytes(out[: data.draw(st.integers(0, len(out)))] if data.draw(st.booleans()) else out)


@fuzz(600)
@given(st.data(), st.booleans())
def test_damaged_npz_files_end_in_a_source_or_a_data_error(data, compressed):
    raw = mutated(NPZ[compressed], data)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.npz")
        with open(path, "wb") as f:
            f.write(raw)
        try:
            src = open_source("npz", path, "train")
        except CGHError:
            return
        check_source(src)


# ---------------------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------------------


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)).save(buf, format=fmt)
    return buf.getvalue()


ENCODED = [encoded(f) for f in ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "PPM")]
file_bytes = st.one_of(st.binary(max_size=300), st.sampled_from(ENCODED),
                       st.builds(lambda raw, d: mutated(raw, d), st.sampled_from(ENCODED), st.data()))


@fuzz(300)
@given(st.lists(st.tuples(file_bytes, st.sampled_from(IMAGE_EXTENSIONS + (".JPG", ".txt")), st.booleans()),
                min_size=1, max_size=4))
def test_folders_of_arbitrary_bytes_end_in_images_or_data_errors(files):
    with tempfile.TemporaryDirectory() as d:
        for k, (raw, ext, in_class) in enumerate(files):
            folder = os.path.join(d, "cls") if in_class else d
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"f{k}{ext}"), "wb") as f:
                f.write(raw)
        try:
            src = open_source("folder", d, "train")
        except CGHError:
            return
        check_source(src)
        for i in range(len(src)):
            try:
                img = src.load(i)
            except CGHError:
                continue
            assert img.mode == "RGB" and min(img.size) >= 1
        try:
            check_source(open_source("folder", d, "train", in_memory=True, image_size=4, num_workers=0))
        except CGHError:
            pass


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def small_state_dict_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(ResNet("resnet18", stem="cifar", width=2, num_classes=0).state_dict(), buf)
    return buf.getvalue()


STATE = small_state_dict_bytes()
RESNET_KEYS = list(ResNet("resnet18", stem="cifar", width=2, num_classes=0).state_dict())


@fuzz(300)
@given(st.data())
def test_damaged_checkpoint_bytes_end_in_weights_or_a_checkpoint_error(data):
    raw = mutated(STATE, data)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.pt")
        with open(path, "wb") as f:
            f.write(raw)
        for load in (load_file, load_backbone):
            try:
                load(path)
            except CGHError:
                pass


CONFIG = Config().to_dict()
STUDENT_KEYS = [f"student.backbone.{k}" for k in RESNET_KEYS[:6]] + ["student.hyper.reduce.0.weight", "teacher.x"]
AUTHORS_KEYS = [f"module.encoder_q.{k}" for k in RESNET_KEYS[:6]] + ["module.encoder_q.fc.0.weight", "queue"]
tensors = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3),
                    st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.uint8]))


@fuzz(300)
@given(st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(RESNET_KEYS), st.text(max_size=12)), tensors, max_size=8),
    st.dictionaries(st.sampled_from(["format", "net", "model", "config", "method"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just("cgh-checkpoint"),
                              st.dictionaries(st.sampled_from(RESNET_KEYS[:4] + ["module.encoder_q.conv1.weight",
                                                                                 "student.backbone.conv1.weight",
                                                                                 "teacher.hyper.reduce.0.weight"]),
                                              st.one_of(tensors, st.integers(), st.none()), max_size=3)),
                    max_size=5),
    st.builds(lambda model, net: {"format": "cgh-checkpoint", "config": CONFIG, "model": model, "epoch": 0, "step": 0,
                                  "method": "cgh", "net": net},
              st.dictionaries(st.sampled_from(STUDENT_KEYS), st.one_of(tensors, st.integers(), st.none()), max_size=6),
              st.none()),
    st.builds(lambda net: {"net": net},
              st.dictionaries(st.sampled_from(AUTHORS_KEYS), st.one_of(tensors, st.integers(), st.none()),
                              max_size=6)),
    st.lists(tensors, max_size=2), st.integers(), st.none()))
@example({"format": "cgh-checkpoint"})  # was KeyError('config')
@example({"conv1.weight": torch.tensor(0.0)})  # was IndexError
def test_any_weights_file_loads_as_a_backbone_or_a_checkpoint_error(obj):
    assume(not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
                and set(RESNET_KEYS) <= set(obj)))  # the genuine article is tested elsewhere
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.pt")
        torch.save(obj, path)
        try:
            load_backbone(path)
        except CGHError:
            pass


def test_fuzz_seeds_are_valid():
    """The genuine files the mutations start from load (so a mutation test exercises damage, not garbage)."""
    with tempfile.TemporaryDirectory() as d:
        for compressed, raw in NPZ.items():
            path = os.path.join(d, f"x{compressed}.npz")
            with open(path, "wb") as f:
                f.write(raw)
            check_source(open_source("npz", path, "train"))
        for k, raw in enumerate(ENCODED):
            with open(os.path.join(d, f"i{k}.png"), "wb") as f:
                f.write(raw)
        check_source(open_source("folder", d, "train", in_memory=True, image_size=4, num_workers=0))
        path = os.path.join(d, "x.pt")
        with open(path, "wb") as f:
            f.write(STATE)
        assert load_backbone(path).arch == "resnet18"
    assert zipfile.is_zipfile(io.BytesIO(STATE))
