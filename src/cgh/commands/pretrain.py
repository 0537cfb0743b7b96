"""``cgh pretrain``: pretrain CGH, ReSSL or MoCo-v2 from a preset or YAML config, or resume a run."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from cgh.checkpoints.files import load_checkpoint
from cgh.config import config_from_dict, load_config, merge, parse_overrides, to_yaml
from cgh.errors import ConfigError
from cgh.runtime import dist
from cgh.train.loop import EXIT_COLLAPSED, EXIT_REQUEUE, pretrain
from cgh.train.resume import find_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="preset name (cifar10, cifar100, stl10, tinyimagenet, imagenet, imagenet_multicrop, demo) "
                        "or a YAML file; optional with --resume")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. optim.epochs=5 data.path=/data/cifar out_dir=runs/a")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR|CKPT|auto",
                   help="continue a run exactly from its last checkpoint (the run in out_dir when no path is given); "
                        "'auto': continue when out_dir holds a checkpoint, start otherwise (a job to requeue)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of an existing run directory")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        # `--resume out_dir=RUN`: --resume takes an optional value, and here it took an override
        overrides.insert(0, args.resume)
        args.resume = True
    if args.resume == "auto":  # = train.auto_resume=true: the decision is made where the run directory is known
        overrides.append("train.auto_resume=true")
        args.resume = None
        if args.config is None or "=" in args.config:
            out = parse_overrides([o for o in [args.config or "", *overrides] if "=" in o]).get("out_dir", "")
            if not out or not (Path(out) / "checkpoints" / "last.pt").exists():
                raise ConfigError("--resume auto without a preset or YAML file needs a checkpoint in out_dir to "
                                  "continue; give the config to start from, e.g. `cgh pretrain cifar10 out_dir=RUN "
                                  "--resume auto`")
            args.resume = out
    source = args.config
    if source and "=" in source:  # `cgh pretrain --resume RUN key=value`: no config, only overrides
        overrides.insert(0, source)
        source = None
    if source is None and not args.resume:
        raise ConfigError("give a preset name or YAML file (e.g. `cgh pretrain cifar10`), or --resume RUN_DIR")
    if source is None:  # --resume RUN [key=value ...]: the run's own config, with the overrides applied
        target = args.resume if args.resume is not True else parse_overrides(overrides).get("out_dir", "")
        cfg = config_from_dict(load_checkpoint(find_checkpoint(target))["config"])
        merge(cfg, parse_overrides(overrides), "command line")
    else:
        cfg = load_config(source, overrides, origin="command line")
    if args.print_config:
        cfg.validate(dist.world_size() if dist.launched_by_torchrun() else 1)
        print(to_yaml(cfg), end="")
        return 0
    try:
        result = pretrain(cfg, resume=args.resume, overwrite=args.overwrite)
    finally:
        dist.shutdown()
    if result.status == "stopped" and result.signum == signal.SIGUSR1:
        return EXIT_REQUEUE
    if result.status == "stopped":  # the shell's convention: 128 + the signal (SIGTERM 143, SIGINT 130)
        return 128 + (result.signum or signal.SIGTERM)
    if result.status == "collapsed":
        return EXIT_COLLAPSED
    return 0
