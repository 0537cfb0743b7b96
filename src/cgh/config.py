"""Typed configuration: dataclasses with every default, YAML presets, dotted command-line overrides.

A config is built as ``defaults <- preset YAML <- key=value overrides``. Unknown keys are errors that suggest the
nearest valid key; values are checked against the field's type and then against ``validate()``'s rules. The resolved
config is written to every run directory and stored in every checkpoint.

Defaults here are the authors' ImageNet numbers (docs/method.md#imagenet-recipe) unless a comment says otherwise; the
presets in ``configs/`` carry the per-dataset numbers with their provenance.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from cgh.config_sections import AugConfig, DataConfig, MethodConfig, ModelConfig, OptimConfig, TrainConfig
from cgh.errors import ConfigError


@dataclass
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    """Seed of the model initialisation, the data order and the augmentations."""
    out_dir: str = ""
    """Run directory; empty = runs/<preset>-<method>-<timestamp>."""
    preset: str = ""
    """Name of the preset this config started from (informational)."""
    recipe: str = ""
    """Whose numbers these are, with their source: the preset's ``recipe`` line for the method (informational)."""
    sources: ClassVar[tuple[str, ...]] = ()
    """Not a config key: where the values came from, in order (defaults, preset, file and its keys, overrides), set
    on the instance by ``load_config`` and written by ``to_yaml`` as comment lines above the keys, so that a resolved
    config says what came from where and still loads as it is."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, world_size: int = 1) -> None:
        """Check values a type check cannot: ranges, names, divisibility. Raises ConfigError naming the key."""
        check = _Checker()
        m, mo, d, o, t, a = self.method, self.model, self.data, self.optim, self.train, self.aug
        from cgh.backbone import ARCHS, STAGE_NAMES, STEMS  # the tables that define the choices
        from cgh.methods import METHODS
        from cgh.schedule import LR_SCHEDULES
        from cgh.views import aug_problems

        check.choice("method.name", m.name, tuple(METHODS))
        check.choice("model.arch", mo.arch, tuple(ARCHS))
        check.choice("model.stem", mo.stem, STEMS)
        check.choice("model.bn_mode", mo.bn_mode, ("auto", "split", "shuffle", "sync", "plain"))
        check.choice("method.momentum_schedule", m.momentum_schedule, ("constant", "cosine"))
        check.choice("method.hyper_resize", m.hyper_resize, ("bilinear", "avgpool"))
        check.choice("method.hyper_target", m.hyper_target, ("last", "first"))
        check.choice("method.context", m.context, ("cross", "same"))
        check.choice("method.hyper_bn", m.hyper_bn, ("split", "plain"))
        check.choice("aug.teacher_view", a.teacher_view, ("auto", "weak", "strong"))
        own_view = METHODS[m.name].teacher_view if m.name in METHODS else a.teacher_view
        if a.teacher_view not in ("auto", own_view):
            check.fail("aug.teacher_view", a.teacher_view,
                       f"'auto' or {own_view!r}: {m.name}'s teacher view is {own_view} (cgh.methods); set "
                       f"aug.teacher_view=auto")
        check.choice("optim.schedule", o.schedule, LR_SCHEDULES)
        check.choice("train.amp", t.amp, ("auto", "none", "bf16", "fp16"))
        check.choice("train.knn_features", t.knn_features, ("backbone", "projection"))
        check.choice("data.corrupt", d.corrupt, ("skip", "error"))
        for key in ("temperature", "temp_teacher_global", "temp_student_global", "temp_teacher_hyper",
                    "temp_student_hyper"):
            check.positive(f"method.{key}", getattr(m, key))
        check.positive("optim.lr", o.lr)
        check.positive("train.knn_t", t.knn_t)
        for key in ("feat_dim", "hid_dim", "hyper_dim", "queue_size"):
            check.positive(f"method.{key}", getattr(m, key))
        for key in ("epochs", "batch_size", "lr_ref_batch"):
            check.positive(f"optim.{key}", getattr(o, key))
        check.positive("data.image_size", d.image_size)
        check.positive("data.prefetch_factor", d.prefetch_factor)
        check.positive("model.width", mo.width)
        check.positive("model.bn_splits", mo.bn_splits)
        check.positive("train.knn_k", t.knn_k)
        for key in ("num_workers",):
            check.non_negative(f"data.{key}", getattr(d, key))
        for key in ("warmup_epochs",):
            check.non_negative(f"optim.{key}", getattr(o, key))
        check.non_negative("optim.weight_decay", o.weight_decay)
        check.non_negative("method.loss_warmup_epochs", m.loss_warmup_epochs)
        check.non_negative("method.loss_warmup_min_steps", m.loss_warmup_min_steps)
        check.non_negative("method.num_local", m.num_local)
        for key in ("ckpt_every", "ckpt_every_steps", "keep_every", "knn_every", "knn_max_train", "max_steps"):
            check.non_negative(f"train.{key}", getattr(t, key))
        check.positive("train.log_every", t.log_every)
        check.unit_interval("method.momentum", m.momentum)
        check.unit_interval("method.center_momentum", m.center_momentum)
        check.unit_interval("optim.momentum", o.momentum)
        for key, value, expected in aug_problems(**{k: getattr(a, k) for k in (
                "jitter", "jitter_p", "grayscale_p", "blur_p", "blur_sigma", "flip_p", "weak_scale", "strong_scale")}):
            check.fail(f"aug.{key}", value, expected)
        for key in ("mean", "std"):
            v = getattr(d, key)
            if v and (len(v) != 3 or (key == "std" and min(v) <= 0)):
                check.fail(f"data.{key}", v,
                           "empty (the dataset's own) or three numbers" + (" > 0" if key == "std" else ""))
        if not m.hyper_layers or len(set(m.hyper_layers)) != len(m.hyper_layers):
            check.fail("method.hyper_layers", m.hyper_layers,
                       f"a non-empty list of distinct names from {list(STAGE_NAMES)}")
        for s in m.hyper_layers:
            if s not in STAGE_NAMES:
                check.fail("method.hyper_layers", m.hyper_layers,
                           f"names from {list(STAGE_NAMES)}; {s!r} is not a stage" + _suggest(s, STAGE_NAMES))
        if m.num_local and m.name == "mocov2":
            check.fail("method.num_local", m.num_local, "0 for mocov2 (multi-crop is defined for ReSSL and CGH); set "
                                                        "method.num_local=0, or method.name=ressl or cgh")
        if m.num_local > 4:
            check.fail("method.num_local", m.num_local, "at most 4 (docs/method.md#multi-crop-views defines four local "
                                                        "crop sizes); e.g. method.num_local=4")
        if o.milestones != sorted(o.milestones):
            check.fail("optim.milestones", o.milestones,
                       f"increasing epochs; e.g. optim.milestones=[{','.join(str(e) for e in sorted(o.milestones))}]")
        if o.warmup_epochs >= o.epochs and o.schedule == "cosine" and o.epochs > 1:
            # the presets' 5 warm-up epochs meet a short run's optim.epochs first: say which value fits
            check.fail("optim.warmup_epochs", o.warmup_epochs,
                       f"fewer than optim.epochs ({o.epochs}): the lr warm-up must end before the cosine decay; e.g. "
                       f"optim.warmup_epochs={max(1, min(o.epochs // 10, o.epochs - 1))} (0: no warm-up)")
        # Divisibility: the batch splits across processes, then across BN chunks; the queue advances by the global
        # batch each step and wraps exactly (docs/method.md#queues asserts K % B == 0;
        # docs/method.md#quirk-queue-divisibility). A zero size was reported above.
        if o.batch_size % world_size:
            check.fail("optim.batch_size", o.batch_size,
                       f"a multiple of the number of processes ({world_size}); e.g. "
                       f"optim.batch_size={-(-o.batch_size // world_size) * world_size}")
        per_process = o.batch_size // world_size
        mode = resolve_bn_mode(mo.bn_mode, world_size)
        if mode == "split" and mo.bn_splits > 0 and per_process % mo.bn_splits:
            divisor = max(d for d in range(1, min(mo.bn_splits, max(per_process, 1)) + 1) if per_process % d == 0)
            check.fail("model.bn_splits", mo.bn_splits,
                       f"a divisor of the per-process batch ({per_process} = optim.batch_size / processes); e.g. "
                       f"model.bn_splits={divisor}")
        if o.batch_size > 0 and m.queue_size % o.batch_size:
            check.fail("method.queue_size", m.queue_size,
                       f"a multiple of the global batch optim.batch_size ({o.batch_size}); e.g. "
                       f"method.queue_size={max(1, round(m.queue_size / o.batch_size)) * o.batch_size}")
        check.raise_if_any()


def resolve_bn_mode(mode: str, world_size: int) -> str:
    """'auto' -> 'split' on one process (the authors' single-GPU SplitBN), 'shuffle' on several (their DDP mode)."""
    if mode == "auto":
        return "split" if world_size == 1 else "shuffle"
    return mode


class _Checker:
    def __init__(self):
        self.errors: list[str] = []

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{key} = {value!r}: expected {expected}")

    def choice(self, key: str, value: Any, options: tuple) -> None:
        if value not in options:
            self.fail(key, value, f"one of {list(options)}" + _suggest(str(value), options))

    def positive(self, key: str, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            self.fail(key, value, "a positive finite number")

    def non_negative(self, key: str, value: float) -> None:
        if not (value >= 0 and math.isfinite(value)):
            self.fail(key, value, "a finite number >= 0")

    def unit_interval(self, key: str, value: float) -> None:
        if not 0 <= value <= 1:
            self.fail(key, value, "a number in [0, 1]")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.errors))


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------------------------------------------
# Building a config: defaults <- preset/YAML <- overrides
# ----------------------------------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("cgh.configs").iterdir() if p.name.endswith(".yaml"))


def read_yaml(source: str) -> tuple[dict[str, Any], str]:
    """The mapping in a preset (by name) or a YAML file (by path), and the preset's name ('' for a file)."""
    if source.endswith((".yaml", ".yml")) or "/" in source or Path(source).is_file():
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text, name = path.read_text(encoding="utf-8"), ""
    else:
        res = resources.files("cgh.configs").joinpath(f"{source}.yaml")
        if not res.is_file():
            raise ConfigError(f"unknown preset {source!r}; presets: {', '.join(preset_names())}"
                              + _suggest(source, preset_names()))
        text, name = res.read_text(encoding="utf-8"), source
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {source} as YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config sections, got {type(data).__name__}")
    return data, name


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "method.hyper_layers=[layer3,layer4]"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.epochs=10")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is a value, not a section")
        node[parts[-1]] = value
    return out


def load_config(source: str | None = None, overrides: list[str] | None = None, origin: str = "overrides") -> Config:
    """Defaults, then the preset or YAML file ``source`` with its recipe for the chosen method, then ``key=value``
    overrides. ``origin`` names the overrides in errors ("overrides: unknown config key ..."); the command line
    passes "command line".

    A YAML file may start from a preset: ``preset: demo`` loads that preset (with its recipe for the method) first and
    the file's other keys override it; only a preset, not another file, so that a config is never a chain of files.
    A preset states one recipe per method: its body is CGH's (with a top-level ``recipe:`` line naming the source)
    and ``recipes: {mocov2: {...}, ressl: {...}}`` holds what each baseline's own paper changes, each with its own
    ``recipe:`` line. The method is the overrides' ``method.name``, else the file's, else the preset's.
    ``cfg.sources`` records the layers in order (``to_yaml`` writes them as the header)."""
    cfg = Config()
    parsed = parse_overrides(overrides) if overrides else {}
    if "preset" in parsed:
        raise ConfigError(f"{origin}: preset={parsed['preset']!r}: a config starts from a preset given as CONFIG "
                          f"(cgh pretrain demo ...) or named in a YAML file (preset: demo), not from an override")
    sources = ["defaults      cgh.config_sections"]
    layers: list[tuple[str, dict[str, Any], str]] = []  # (origin in errors, mapping, line of cfg.sources)
    if source:
        data, name = read_yaml(source)
        base = data.get("preset") if not name else None
        if base:
            if not isinstance(base, str) or base not in preset_names():
                raise ConfigError(f"{source}: preset = {base!r}: expected the name of a preset to start from (not "
                                  f"a file), one of {', '.join(preset_names())}" + _suggest(str(base), preset_names()))
            layers.append((f"preset {base}", read_yaml(base)[0], f"preset        {base}"))
        keys = [k for k in _flat_keys(data) if k not in ("preset", "recipe") and not k.startswith("recipes.")]
        what = f"preset        {name}" if name else (
            f"file          {source}: " + (", ".join(keys) if len(keys) <= 8 else f"{len(keys)} keys"))
        layers.append((source, data, what))
    method = _method_of(parsed, *(data for _, data, _ in reversed(layers)))
    for where, data, what in layers:
        data = dict(data)
        recipes = data.pop("recipes", None) or {}
        if not isinstance(recipes, dict):
            raise ConfigError(f"{where}: recipes must map method names to config sections, got {recipes!r}")
        merge(cfg, data, where)
        if method in recipes:
            merge(cfg, recipes[method], f"{where} (recipes.{method})")
            what += f" with its recipes.{method}"
        sources.append(what)
    if source:
        cfg.preset = cfg.preset or name  # a file's own preset: key, else the preset given as source
    if parsed:
        merge(cfg, parsed, origin)
        sources.append(f"{origin:<13} " + " ".join(overrides or []))
    cfg.sources = tuple(sources)
    return cfg


def _method_of(overrides: dict[str, Any], *layers: dict[str, Any]) -> str:
    """The method whose recipe applies: the overrides' method.name, else the first layer's that names one."""
    for data in (overrides, *layers):
        section = data.get("method")
        if isinstance(section, dict) and isinstance(section.get("name"), str):
            return section["name"]
    return Config().method.name


def _flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in data.items():
        keys += _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return keys


def config_from_dict(data: dict[str, Any], origin: str = "checkpoint") -> Config:
    cfg = Config()
    merge(cfg, data, origin)
    return cfg


def merge(obj: Any, data: dict[str, Any], origin: str, prefix: str = "") -> None:
    """Set the fields of dataclass ``obj`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            candidates = [f"{prefix}{k}" for k in fields] + _all_keys(Config())
            raise ConfigError(f"{origin}: unknown config key {full!r}" + _suggest(full, candidates))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            merge(current, value, origin, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full, origin))


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        keys += _all_keys(v, f"{prefix}{f.name}.") if dataclasses.is_dataclass(v) else [f"{prefix}{f.name}"]
    return keys


def _coerce(value: Any, hint: Any, key: str, origin: str) -> Any:
    def bad(expected: str):
        return ConfigError(f"{origin}: {key} = {value!r}: expected {expected}")

    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if hint is int:
        number = _number(value)
        if isinstance(number, int):
            return number
        if isinstance(number, float) and number.is_integer():
            return int(number)
        raise bad("an integer" + (f" ({value} is {number:g})" if isinstance(number, float) else ""))
    if hint is float:
        number = _number(value)
        if number is None:
            raise bad("a number")
        return float(number)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad("a string")
        return str(value)
    origin_type = typing.get_origin(hint)
    if origin_type is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and item is not str:
            value = [value]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list of {item.__name__}")
        return [_coerce(v, item, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if isinstance(hint, types.UnionType):
        raise bad(str(hint))
    raise bad(str(hint))


# A number as people write it: 1e-4, 3E-2, .5, 5., 1_000, -2e-3, 1.0e-4. YAML 1.1 (PyYAML) reads a float only with a
# dot and a signed exponent (1.0e-4), so 1e-4 arrives as the string '1e-4', from a YAML file and from a key=value
# override alike; these strings are numbers here. Words (nan, inf) are not: YAML spells those .nan and .inf.
_INTEGER = re.compile(r"[+-]?\d(?:_?\d)*")
_DECIMAL = re.compile(r"[+-]?(?:\d(?:_?\d)*)?(?:\.(?:\d(?:_?\d)*)?)?(?:[eE][+-]?\d+)?")


def _number(value: Any) -> int | float | None:
    """``value`` as an int or float when it is one or spells one (see ``_DECIMAL``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _INTEGER.fullmatch(text):
        return int(text.replace("_", ""))
    if _DECIMAL.fullmatch(text) and any(c.isdigit() for c in text.split("e")[0].split("E")[0]):
        return float(text.replace("_", ""))
    return None


def to_yaml(cfg: Config) -> str:
    """The config as YAML, every key, under a comment header listing ``cfg.sources`` (later lines win)."""
    header = "".join(f"#   {line}\n" for line in cfg.sources)
    if header:
        header = "# Resolved config (it loads as it is); built from, later lines overriding earlier ones:\n" + header
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None, width=120)
