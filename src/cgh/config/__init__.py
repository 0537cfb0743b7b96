"""Typed configuration: dataclasses with every default, YAML presets, dotted command-line overrides.

A config is built as ``defaults <- preset YAML <- key=value overrides``, a YAML file optionally on a preset of its
own (``preset: demo``: defaults <- preset <- file <- overrides). Unknown keys are errors that suggest the
nearest valid key; values are checked against the field's type and then against ``validate()``'s rules. The resolved
config is written to every run directory and stored in every checkpoint.

Defaults here are the authors' ImageNet numbers (docs/method.md#imagenet-recipe) unless a comment says otherwise; the
presets in ``configs/`` carry the per-dataset numbers with their provenance.

The package: the six sections with every key, its default and its source (``sections``), the checks of
``validate()`` (``checks``), the view recipe (``views``: ``ViewSpec``, ``pretrain_views``, ``AugParams``) and the method
names the checks accept (``names``). It imports no other cgh package but ``cgh.errors`` at module level.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from cgh.config.sections import AugConfig, DataConfig, MethodConfig, ModelConfig, OptimConfig, TrainConfig
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
    """Name of the preset this config started from. In a YAML file, ``preset: NAME`` loads that preset first and the
    file's other keys override it (``load_config``); elsewhere (a checkpoint's config) it is a record."""
    recipe: str = ""
    """Whose numbers these are, with their source: the preset's ``recipe`` line for the method (informational)."""
    sources: ClassVar[tuple[str, ...]] = ()
    """Not a config key: where the values came from, in order (defaults, preset, file and its keys, overrides), set
    on the instance by ``load_config`` and written by ``to_yaml`` as comment lines above the keys, so that a resolved
    config says what came from where and still loads as it is."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, world_size: int = 1) -> None:
        """Check values a type check cannot: ranges, names, divisibility (cgh.config.checks). Raises ConfigError
        naming every invalid key at once."""
        from cgh.config.checks import validate_config

        validate_config(self, world_size)


def resolve_bn_mode(mode: str, world_size: int) -> str:
    """'auto' -> 'split' on one process (the authors' single-GPU SplitBN), 'shuffle' on several (their DDP mode)."""
    if mode == "auto":
        return "split" if world_size == 1 else "shuffle"
    return mode


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
    sources = ["defaults      cgh.config.sections"]
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
