"""The ``cgh`` subcommands, one module per command (``cgh.cli.COMMANDS`` maps each name to its module).

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and does no work of its own beyond reading
flags and printing: the work is the library's (cgh.train.loop, cgh.evaluate, cgh.checkpoints.export, cgh.train.cost,
cgh.demo, cgh.augment.grid). ``common`` holds what the evaluation commands share: the checkpoint and data flags, the
evaluation setup they resolve to, and the ``--json`` output.
"""
