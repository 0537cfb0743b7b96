"""The ``cgh`` command.

Each subcommand lives in the module that does the work; that module exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so ``cgh --help`` is instant.
Errors caused by the user's input (``cgh.errors.CGHError``: a bad path, key, value or file) are printed as one
``error:`` line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("cgh.commands.pretrain", "pretrain CGH, ReSSL or MoCo-v2 from a preset or YAML config"),
    "views": ("cgh.viewgrid", "write a PNG grid of the weak, strong and local views the model sees"),
    "knn": ("cgh.evaluate.knn", "kNN classification with a pretrained backbone"),
    "linear": ("cgh.evaluate.linear", "linear probe on frozen global or hypercolumn features"),
    "semisup": ("cgh.evaluate.semisup", "fine-tune with 1%% / 10%% of the labels"),
    "cluster": ("cgh.evaluate.cluster", "k-means on the features: NMI, AMI, ARI, Hungarian accuracy"),
    "tsne": ("cgh.evaluate.tsne", "t-SNE picture of chosen classes, one panel per checkpoint"),
    "plot": ("cgh.evaluate.plot", "kNN accuracy and loss against epoch from runs' metrics.jsonl"),
    "export": ("cgh.export", "export the backbone to torchvision or detectron2 format"),
    "cost": ("cgh.cost", "time one training step of supervised, MoCo-v2, ReSSL and CGH (Table 3)"),
    "demo": ("cgh.demo", "pretrain and evaluate all three methods on built-in data and write a report"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from cgh import __version__

    parser = argparse.ArgumentParser(
        prog="cgh",
        description="Self-supervised learning with cross-context learning between global and hypercolumn features.",
    )
    parser.add_argument("--version", action="version", version=f"cgh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cgh.errors import CGHError

    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except CGHError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
