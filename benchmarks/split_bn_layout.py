"""What keeping the memory format in split BN changes, on this machine (issue 19, item 5; results in
split_bn_layout.md beside this file).

Before issue 19, split BN made a channels-last map contiguous (NCHW), normalised it and returned NCHW, so the next
convolution converted back; now a channels-last map is normalised in place in its layout (cgh.model.backbone,
_ChannelsLastSplitBN). This times, in interleaved rounds (each variant once per round, median over rounds, ratios
from one run only):

  layer   one BN of a (B, C, H, W) channels-last map, forward + backward: plain BN, split BN as before (NCHW round
          trip), split BN now
  network ResNet training step (forward + backward of the stage maps) with channels-last weights and input: plain BN,
          split BN as before, split BN now; and the same network contiguous with split BN as the NCHW reference

    python benchmarks/split_bn_layout.py                 # CPU, ResNet-18 CIFAR stem width 32, batch 32, 32 px
    python benchmarks/split_bn_layout.py --device cuda --arch resnet50 --stem imagenet --width 64 --batch 128 --size 224
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch import nn

from bench_env import environment
from cgh.model.backbone import build_backbone
from cgh.model.splitbn import SplitBatchNorm
from gpu_check import nchw_round_trip  # split BN as before issue 19


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict, rounds: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each zero-argument function, one call of each per round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def layer_fns(batch: int, channels: int, side: int, splits: int, device: torch.device) -> dict:
    cl = torch.channels_last
    x = torch.randn(batch, channels, side, side, device=device).contiguous(memory_format=cl).requires_grad_(True)
    dy = torch.randn_like(x)
    plain = nn.BatchNorm2d(channels).to(device).train()
    split = SplitBatchNorm(channels, num_splits=splits).to(device).train()

    def run(bn, legacy=False):
        def fn():
            with nchw_round_trip() if legacy else contextlib.nullcontext():
                y = bn(x)
            y.backward(dy)
            x.grad = None
        return fn

    return {"plain BN": run(plain), "split BN, NCHW round trip (before)": run(split, True),
            "split BN, keeps channels-last (now)": run(split)}


def network_fns(args, device: torch.device) -> dict:
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def net(splits, memory_format):
        m = build_backbone(args.arch, args.stem, args.width, bn_splits=splits).to(device).train()
        return m.to(memory_format=memory_format)

    def run(model, memory_format, legacy=False):
        xin = x.contiguous(memory_format=memory_format)

        def fn():
            with nchw_round_trip() if legacy else contextlib.nullcontext():
                stages = model(xin)
            sum(s.float().square().mean() for s in stages).backward()
            model.zero_grad(set_to_none=True)
        return fn

    split_cl = net(args.splits, cl)
    return {"plain BN, channels-last": run(net(1, cl), cl),
            "split BN, channels-last, NCHW round trip (before)": run(split_cl, cl, True),
            "split BN, channels-last, kept (now)": run(split_cl, cl),
            "split BN, contiguous (NCHW)": run(net(args.splits, torch.contiguous_format), torch.contiguous_format)}


def table(title: str, medians: dict[str, float], base: str) -> str:
    lines = [title, "", f"| variant | ms | relative to {base} |", "|---|---:|---:|"]
    lines += [f"| {k} | {1000 * v:.2f} | {v / medians[base]:.2f} |" for k, v in medians.items()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--stem", default="cifar")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--splits", type=int, default=8)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    device = torch.device(args.device)
    layer = interleaved(layer_fns(args.batch, 64, 16, args.splits, device), args.rounds * 2, args.warmup, device)
    print(table(f"One BN, (B={args.batch}, C=64, 16, 16) channels-last, {args.splits} splits, forward + backward, "
                f"median of {args.rounds * 2} rounds", layer, "plain BN"))
    print()
    net = interleaved(network_fns(args, device), args.rounds, args.warmup, device)
    print(table(f"{args.arch} ({args.stem} stem, width {args.width}), batch {args.batch} x {args.size} px, "
                f"{args.splits} splits, stage maps forward + backward, {args.device}, median of {args.rounds} rounds",
                net, "plain BN, channels-last"))
    before = net["split BN, channels-last, NCHW round trip (before)"]
    now = net["split BN, channels-last, kept (now)"]
    print(f"\nsplit BN channels-last, now / before = {now / before:.3f}")
    print(f"\n{environment()}")


if __name__ == "__main__":
    main()
