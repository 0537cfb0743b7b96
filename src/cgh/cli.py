"""The ``cgh`` command.

Each subcommand is a module ``cgh.commands.<name>`` exposing ``add_arguments(parser)`` and ``run(args) -> int`` on top
of the library (cgh.train.loop, cgh.evaluate, ...). ``COMMANDS`` names each module and its one-line help; a module is
imported only when its command is parsed or run, so ``cgh --help`` imports none of them and is instant.
Errors caused by the user's input (``cgh.errors.CGHError``: a bad path, key, value or file) are printed as one
``error:`` line and exit with status 2; anything else is a bug and keeps its traceback.

A command's options and positionals may come in any order (``cgh pretrain demo --overwrite out_dir=runs/x
optim.epochs=2``): its own parser parses them intermixed. Plain ``parse_args`` would give every positional to the
first run of them (``demo``) and call the ``key=value`` overrides after an option "unrecognized arguments".
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

# command -> (module, one-line help); every module is cgh.commands.<command>
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("cgh.commands.pretrain", "pretrain CGH, ReSSL or MoCo-v2 from a preset or YAML config"),
    "views": ("cgh.commands.views", "write a PNG grid of the weak, strong and local views the model sees"),
    "knn": ("cgh.commands.knn", "kNN classification with a pretrained backbone"),
    "linear": ("cgh.commands.linear", "linear probe on frozen global or hypercolumn features"),
    "semisup": ("cgh.commands.semisup", "fine-tune with 1%% / 10%% of the labels"),
    "cluster": ("cgh.commands.cluster", "k-means on the features: NMI, AMI, ARI, Hungarian accuracy"),
    "tsne": ("cgh.commands.tsne", "t-SNE picture of chosen classes, one panel per checkpoint"),
    "embed": ("cgh.commands.embed", "write every image's features (.npy) and index, label, path (.csv / .parquet)"),
    "neighbors": ("cgh.commands.neighbors", "PNG grid of test images and their nearest neighbours in the bank"),
    "plot": ("cgh.commands.plot", "kNN accuracy and loss against epoch from runs' metrics.jsonl"),
    "export": ("cgh.commands.export", "export the backbone to torchvision or detectron2 format"),
    "cost": ("cgh.commands.cost", "time one training step of supervised, MoCo-v2, ReSSL and CGH (Table 3)"),
    "demo": ("cgh.commands.demo", "pretrain and evaluate all three methods on built-in data and write a report"),
}


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The parser of every command, with the arguments of command ``only`` (its module imported); without ``only``
    just the command list, which is all the top-level help and an unknown command's error need. Returns the
    top-level parser and the sub-parser of ``only`` (None without it)."""
    from cgh import __version__

    parser = argparse.ArgumentParser(
        prog="cgh",
        description="Self-supervised learning with cross-context learning between global and hypercolumn features.",
    )
    parser.add_argument("--version", action="version", version=f"cgh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    own = None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(module).add_arguments(p)
            own = p
    return parser, own


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """What to blame for arguments the parser did not take: the unknown options when there are any (argparse also
    lists the positionals after one, which are fine), with the nearest option of the command."""
    options = [a for a in extras if a.startswith("-")]
    if not options:
        return " ".join(extras)
    known = [s for action in parser._actions for s in action.option_strings]
    words = []
    for option in options:
        close = difflib.get_close_matches(option.split("=")[0], known, n=1, cutoff=0.6)
        words.append(option + (f" (did you mean {close[0]}?)" if close else ""))
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    from cgh.errors import CGHError

    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser, own = build_parser(only=command)
    if own is None:  # no command, an unknown one, --help or --version
        args = parser.parse_args(argv)
    else:
        args, extras = own.parse_known_intermixed_args(argv[1:])
        if extras:
            own.error("unrecognized arguments: " + _unrecognized(own, extras))
        args.command = command
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    from cgh.data.image_modes import TRANSPARENCY_NOTE

    TRANSPARENCY_NOTE.rearm()  # the note on transparent pixels: once per command, also when called in-process
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
