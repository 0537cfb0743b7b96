"""``cgh export``: the backbone of a checkpoint in torchvision or detectron2 format (cgh.checkpoints.export)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cgh.checkpoints.export import FORMATS, default_output, export_backbone
from cgh.checkpoints.files import FORMAT, checkpoint_file
from cgh.checkpoints.pretrained import load_backbone
from cgh.errors import CGHError
from cgh.wording import counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a cgh checkpoint or its run directory, a torchvision state dict or an "
                        "authors' checkpoint")
    parser.add_argument("--format", choices=FORMATS, required=True, help="output format")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="output file (default: beside the input, <name>_torchvision.pth or "
                        "<name>_detectron2.pkl; detectron2 needs .pkl)")
    parser.add_argument("--which", choices=("student", "teacher"), default="student",
                        help="for cgh checkpoints: the student's backbone or the EMA teacher's (default: student)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text line")


def run(args: argparse.Namespace) -> int:
    args.checkpoint = checkpoint_file(args.checkpoint)  # a run directory: its checkpoints/last.pt
    model = load_backbone(args.checkpoint, which=args.which)
    out = Path(args.out) if args.out else default_output(args.checkpoint, args.format)
    if out.resolve() == Path(args.checkpoint).resolve():
        raise CGHError(f"refusing to overwrite the input checkpoint {out}; choose another --out")
    summary = export_backbone(model.backbone, args.format, out)
    info = model.info
    result = {
        "command": "export",
        **summary,
        "checkpoint": str(args.checkpoint),
        "source_format": info.get("format"),
        "method": info.get("method"),
        "epoch": info.get("epoch"),
        "step": info.get("step"),
        "which": args.which if info.get("format") == FORMAT else None,
        "arch": info.get("arch"),
        "stem": info.get("stem"),
        "width": info.get("width"),
    }
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        who = f"{result['which']} of " if result["which"] else ""
        epoch = f", epoch {result['epoch']}" if result["epoch"] is not None else ""
        print(f"exported the {result['arch']} backbone ({who}{info.get('method') or info.get('format')}{epoch}) "
              f"to {out}: {args.format} format, {counted(summary['num_tensors'], 'tensor')}, "
              f"{summary['num_parameters'] / 1e6:.2f}M parameters")
    return 0
