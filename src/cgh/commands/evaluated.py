"""Which network an evaluation command evaluates: the one in a checkpoint, or with ``--random-init`` the same
architecture at the weights a ``cgh pretrain`` run of its config starts from.

- ``cgh knn runs/x --random-init``: the architecture (arch, width, stem, hypercolumn layers), the seed and the data
  come from the checkpoint's config; the weights are those ``cgh.checkpoints.pretrained.random_init_backbone`` draws,
  bit for bit the run's initial student backbone: its kNN monitor's epoch-0 value and the demo's "random init" row. The
  trained weights are not used. ``--init-seed N`` draws another initialisation.
- ``cgh knn --random-init --preset demo``: no checkpoint; the preset (or YAML file) gives architecture, seed and data.
- a file without a training config (a torchvision export, a published checkpoint): its architecture is read off its
  weights, the defaults give the rest, and the seed is ``--init-seed`` (0 by default).

The random-init encoder is evaluated like any other: in eval mode, so its BN running statistics stay those of
initialisation (a run with lr near 0 is no substitute, its BN statistics move).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from cgh.checkpoints.files import FORMAT, checkpoint_file
from cgh.checkpoints.formats import read_checkpoint
from cgh.checkpoints.pretrained import PretrainedBackbone, load_backbone, random_init_backbone
from cgh.config import Config, config_from_dict, load_config
from cgh.errors import ConfigError


def add_checkpoint_arguments(parser: argparse.ArgumentParser, random_init: bool = False) -> None:
    """The checkpoint, which network in it, device, precision and output format; ``random_init``: also
    ``--random-init``, ``--preset`` and ``--init-seed`` (the checkpoint is then optional)."""
    parser.add_argument("checkpoint", **({"nargs": "?", "default": None} if random_init else {}),
                        help="a `cgh pretrain` checkpoint (runs/x/checkpoints/last.pt) or its run directory (runs/x), "
                             "a torchvision-format backbone state dict (needs --dataset) or an authors' checkpoint"
                             + ("; optional with --random-init --preset" if random_init else ""))
    parser.add_argument("--which", choices=("student", "teacher"), default="student",
                        help="network of a cgh checkpoint to evaluate (default: the student, as the authors)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=("auto", "none", "bf16"), default="auto",
                        help="autocast for the frozen forward passes: auto = bf16 on a GPU that supports it")
    parser.add_argument("--json", action="store_true", help="print one JSON object (metrics and protocol) on stdout")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")
    if random_init:
        parser.add_argument("--random-init", action="store_true",
                            help="evaluate the same architecture at random initialisation instead of the trained "
                                 "weights: the weights a `cgh pretrain` run of the checkpoint's config starts from "
                                 "(its seed), the baseline a result is read against")
        parser.add_argument("--preset", default=None, metavar="PRESET|YAML",
                            help="with --random-init and no checkpoint: the preset or YAML config whose architecture, "
                                 "seed and data to use")
        parser.add_argument("--init-seed", type=int, default=None, metavar="SEED",
                            help="with --random-init: the seed of the initial weights (default: the config's seed, "
                                 "the training run's; 0 for a file without a config)")


def load_evaluated(args: argparse.Namespace, device: torch.device
                   ) -> tuple[PretrainedBackbone, dict[str, Any] | None, str]:
    """(the network to evaluate, the training config that goes with it or None, the name errors give its source)."""
    random_init = getattr(args, "random_init", False)
    preset, seed = getattr(args, "preset", None), getattr(args, "init_seed", None)
    if not random_init and (preset or seed is not None):
        raise ConfigError(f"{'--preset' if preset else '--init-seed'} chooses the random initialisation that "
                          f"--random-init evaluates; add --random-init, or drop it to evaluate the checkpoint")
    if preset and args.checkpoint:
        raise ConfigError(f"give a checkpoint or --preset, not both: --random-init takes the architecture from "
                          f"{args.checkpoint}'s config, or from --preset {preset} without a checkpoint")
    if preset:
        cfg = load_config(preset, origin="--preset")  # an unknown preset is an error listing them
        return random_init_backbone(cfg, seed, device), cfg.to_dict(), f"preset {preset}"
    if not args.checkpoint:
        raise ConfigError("give a checkpoint (runs/x/checkpoints/last.pt or its run directory runs/x), or "
                          "--random-init --preset NAME to evaluate an untrained encoder of a preset")
    path = checkpoint_file(args.checkpoint)  # a run directory: its checkpoints/last.pt
    obj, _ = read_checkpoint(path)  # CheckpointError for a missing, empty, truncated or unsafe file
    ckpt_config = obj.get("config") if isinstance(obj, dict) and obj.get("format") == FORMAT else None
    del obj
    model = load_backbone(path, which=getattr(args, "which", "student"), map_location=device)
    if random_init:
        cfg = config_from_dict(ckpt_config, origin=str(path)) if ckpt_config is not None else _architecture(model)
        model = random_init_backbone(cfg, seed, device)  # seed None: the config's (the defaults' 0 for a file)
    return model, ckpt_config, str(path)


def _architecture(model: PretrainedBackbone) -> Config:
    """The defaults with the architecture read off a file's weights (it carries no config)."""
    cfg = Config()
    cfg.model.arch, cfg.model.stem, cfg.model.width = (model.info[k] for k in ("arch", "stem", "width"))
    cfg.method.hyper_layers = list(model.hyper_layers)
    return cfg


def random_init_protocol(model: PretrainedBackbone, preset: str | None) -> dict[str, Any]:
    """What the protocol (--json) says about the evaluated weights beyond the checkpoint's fields."""
    if model.info.get("format") != "random-init":
        return {"random_init": False}
    return {"random_init": True, "init_seed": model.info["seed"], **({"preset": preset} if preset else {})}
