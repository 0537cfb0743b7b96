"""The Python half of benchmarks/gpu_check.sh: the environment, the step throughput, test results, the pretraining
run's record and the summary.

    python benchmarks/gpu_check.py env OUT.json                    GPU, memory, driver / CUDA, torch, bf16
    python benchmarks/gpu_check.py throughput OUT.json [--dry-run] [--compiled] [--deadline UNIX_TIME]
    python benchmarks/gpu_check.py tests-record RESULTS.jsonl OUT.json PHASE [--dry-run]
    python benchmarks/gpu_check.py pretrain-record RUN_DIR LOG PHASES.json WHAT OUT.json
    python benchmarks/gpu_check.py ckpt-step RUN_DIR               prints the step of RUN_DIR/checkpoints/last.pt
    python benchmarks/gpu_check.py summary OUT_DIR [--dry-run]     OUT_DIR/summary.md and OUT_DIR/results.json

The throughput is that of cgh's own training step (as cgh.train.loop runs it): the on-device augmentation
(cgh.augment.build_augment) of a pre-made synthetic uint8 batch already on the device, channels-last views,
cgh.runtime.device.autocast, the method's forward (teacher, EMA, queue push included), backward and SGD
(cgh.optim.schedule.build_optimizer); ``train.compile`` compiles the student and teacher as cgh.train.loop does. No data
loading. Each method runs with its own recipe from the preset (method.name among load_config's overrides, as `cgh
pretrain` does). Supervised is the same backbone with plain BN, a linear classifier and cross-entropy on one strong view
(cgh.train.cost.Supervised). Every row is written (atomically) as soon as it is measured, and an exception loses only
its row, so a run stopped by its time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = ("supervised", "mocov2", "ressl", "cgh")
# the symmetric two-backprop methods (issue 20), timed where the supplementary's Table 3 was: ResNet-50, batch 256
SYMMETRIC = ("byol", "simsiam", "simclr")
# supplementary Table 3, per-epoch time relative to supervised (R50, 2 A100s, batch 256); no SimSiam or SimCLR row
PAPER_TABLE3 = {"supervised": 1.00, "mocov2": 1.62, "ressl": 1.62, "byol": 2.90, "cgh": 2.01}
# Dense bf16 peak FLOP/s by GPU name (datasheet figures; the H200 SXM has the H100 SXM's compute). Other GPUs: unknown.
PEAK_BF16 = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
             "NVIDIA H100 PCIe": 756e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12}
TARGET_CGH_IMG_S = 2500.0  # CGH, ResNet-50 224 px, bf16, one H100/H200-class GPU
TARGET_CGH_OVER_RESSL = 1.10
TARGET_CGH_OVER_SUPERVISED = 1.8


def peak_bf16(name: str) -> float | None:
    if name in PEAK_BF16:
        return PEAK_BF16[name]
    for key in ("H100 SXM", "H200"):  # e.g. 'NVIDIA H200 NVL' is not the SXM part: unknown
        if name.endswith(key):
            return PEAK_BF16.get("NVIDIA " + key.split()[0])
    return None


# ---------------------------------------------------------------------------------------------------------------------
# env


def environment() -> dict:
    env = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "python": platform.python_version(),
           "host": platform.node(), "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "gpus": [], "bf16_supported": False, "driver": None}
    if torch.cuda.is_available():
        env["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            env["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1),
                                "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                                "peak_bf16_tflops": (peak_bf16(p.name) or 0) / 1e12 or None})
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            env["driver"] = None
    return env


# ---------------------------------------------------------------------------------------------------------------------
# throughput

# The rows of a configuration: (method, variant). "default" is the method as `cgh pretrain` runs it on one GPU (its own
# recipe from the preset, split BN with the preset's splits, channels-last on CUDA); the variants time CGH with one
# thing changed, so that what split BN and the memory format cost is seen (issue 19).
DEFAULT_ROWS = [(m, "default") for m in METHODS]
VARIANT_ROWS = [("cgh", "plain_bn"), ("cgh", "nchw"), ("cgh", "split_bn_nchw_round_trip")]
VARIANTS = {
    "default": "as cgh pretrain runs it",
    "plain_bn": "plain BN (model.bn_mode=plain) instead of split BN",
    "nchw": "channels-last off (NCHW)",
    "split_bn_nchw_round_trip": "split BN as before issue 19 (each channels-last map through NCHW)",
}


def _configs(dry_run: bool, compiled: bool = False) -> list[dict]:
    if dry_run:  # every code path, CPU-sized; channels-last on, as on CUDA, so that its split BN path runs too. The
        # imagenet preset's heads and queues, whose recipes differ by method (CGH 512/4096, K 131072; MoCo-v2 128/2048,
        # K 65536), on a ResNet-18 of width 8 at 32 px
        small = {"preset": "imagenet", "overrides": ["model.arch=resnet18", "model.stem=cifar", "model.width=8"],
                 "label": "ResNet-18/8 CIFAR stem 32 px, imagenet heads", "image_size": 32, "source_size": 32,
                 "batch": 16, "warmup": 1, "repeats": 3, "channels_last": True}
        # no compile here: measured on 2 cores, torch.compile of the supervised ResNet-18/8 alone took 90 s
        rows = DEFAULT_ROWS + [(m, "default") for m in SYMMETRIC] + VARIANT_ROWS
        return [] if compiled else [dict(small, compile=False, rows=rows)]
    r50 = {"preset": "imagenet", "overrides": ["model.arch=resnet50"], "label": "ResNet-50 224 px",
           "image_size": 224, "source_size": 256, "warmup": 3, "repeats": 10}
    r18 = {"preset": "cifar10", "overrides": ["model.arch=resnet18", "model.stem=cifar", "model.width=64"],
           "label": "ResNet-18 CIFAR stem 32 px", "image_size": 32, "source_size": 32, "warmup": 3, "repeats": 20}
    if compiled:  # after everything else, only if time is left: compiling is 1-3 minutes per method
        return [dict(r50, batch=256, compile=True, rows=[("cgh", "default")])]
    table3 = DEFAULT_ROWS + [(m, "default") for m in SYMMETRIC]
    return [dict(r50, batch=256, compile=False, rows=table3 + VARIANT_ROWS),
            dict(r50, batch=128, compile=False, rows=DEFAULT_ROWS),
            dict(r18, batch=512, compile=False, rows=DEFAULT_ROWS)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def nchw_round_trip():
    """Split BN as it was before issue 19: every input made contiguous first, so a channels-last map leaves NCHW."""
    import cgh.model.splitbn as splitbn

    real = splitbn._split_batch_norm
    splitbn._split_batch_norm = lambda bn, x, s: real(bn, x.contiguous(), s)
    try:
        yield
    finally:
        splitbn._split_batch_norm = real


def method_config(name: str, spec: dict, device: torch.device, variant: str = "default"):
    """The config `cgh pretrain PRESET method.name=NAME ...` would run: the preset's recipe for the method is applied
    by load_config when method.name is among the overrides (setting cfg.method.name afterwards skipped it, and
    MoCo-v2 ran with CGH's head and queue sizes). Supervised is built on CGH's config (only the backbone is used)."""
    from cgh.train.cost import method_configs

    batch = spec["batch"]
    overrides = [*spec["overrides"], f"data.image_size={spec['image_size']}", f"optim.batch_size={batch}",
                 "train.device=" + device.type]
    if variant == "plain_bn":
        overrides.append("model.bn_mode=plain")
    cfg = method_configs(spec["preset"], overrides, (name,))[name]
    cfg.method.queue_size = max(batch, cfg.method.queue_size // batch * batch)  # a whole number of batches
    return cfg


def build_step(name: str, spec: dict, device: torch.device, amp, variant: str = "default"):
    """(step(i) -> loss tensor, forward(i, views=None) -> loss tensor, model, make_views() -> views, recipe) of one cgh
    training step of ``name`` on pre-made uint8 images. The first three as before; tests/gpu uses them."""
    from cgh.augment import build_augment
    from cgh.config import resolve_bn_mode
    from cgh.config.views import pretrain_views
    from cgh.methods import build_method, teacher_view
    from cgh.optim.schedule import build_optimizer
    from cgh.runtime.device import autocast
    from cgh.train.cost import Supervised

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    batch = spec["batch"]
    cfg = method_config(name, spec, device, variant)
    m = cfg.method
    specs = pretrain_views(spec["image_size"], teacher=teacher_view(cfg), weak_scale=tuple(cfg.aug.weak_scale),
                           strong_scale=tuple(cfg.aug.strong_scale), num_local=m.num_local)
    if name == "supervised":
        specs = [s for s in specs if s.strong][:1]
        model = Supervised(cfg).to(device)
    else:
        model = build_method(copy.deepcopy(cfg), 1, steps_per_epoch=1).to(device)
    augment = build_augment(cfg, specs).to(device)
    channels_last = spec.get("channels_last", device.type == "cuda") and cfg.train.channels_last
    channels_last = channels_last and variant != "nchw"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    bn = "plain" if name == "supervised" else resolve_bn_mode(cfg.model.bn_mode, 1)
    recipe = {"bn": bn, "bn_splits": cfg.model.bn_splits if bn == "split" else 1, "channels_last": channels_last}
    if name != "supervised":
        recipe.update(feat_dim=m.feat_dim, hid_dim=m.hid_dim, recipe=cfg.recipe)
        if name == "cgh":
            recipe["hyper_dim"] = m.hyper_dim
        if name not in SYMMETRIC:  # BYOL, SimSiam and SimCLR keep no queue (the config's queue_size is unused)
            recipe["queue_size"] = m.queue_size
    o = copy.deepcopy(cfg.optim)
    o.algorithm = "sgd"  # one optimiser for every method, as cgh cost times them (LARS's norms add their own cost)
    opt = build_optimizer(model, o, 1e-3)  # the student and, for BYOL and SimSiam, the predictor
    model.train()
    s = spec["source_size"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=gen).to(device)
    labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    legacy = variant == "split_bn_nchw_round_trip"

    def make_views() -> list[torch.Tensor]:
        with torch.no_grad():
            views = augment(images)
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views

    def forward(i: int, views: list[torch.Tensor] | None = None) -> torch.Tensor:
        views = make_views() if views is None else views
        with autocast(device, amp), nchw_round_trip() if legacy else contextlib.nullcontext():
            if name == "supervised":
                return model([views[0], views[0]], labels)
            return model(views, 0.99, 10 ** 9 + i)[0]  # CGH past its loss warm-up: its steady state

    def step(i: int) -> torch.Tensor:
        loss = forward(i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    step.make_views, step.recipe = make_views, recipe
    return step, forward, model


def count_flops(step, forward, model, batch: int) -> float:
    """Model FLOPs per image of one forward + backward (torch.utils.flop_counter); the views are made before the
    counter starts, so the augmentation (not model work) is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    views = step.make_views()
    counter = FlopCounterMode(display=False)
    with counter:
        loss = forward(1, views)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def matmul_peak(device: torch.device, dry_run: bool) -> float | None:
    """Measured dense bf16 FLOP/s of one large matrix product on ``device`` (random data, median of 10 after 3)."""
    n = 512 if dry_run else 8192
    try:
        a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
        times = []
        for i in range(13):
            _sync(device)
            t0 = time.perf_counter()
            (a @ b).sum()
            _sync(device)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        return 2 * n ** 3 / statistics.median(times)
    except RuntimeError as e:
        print(f"bf16 matmul peak not measured: {e}", flush=True)
        return None


def _dynamo_counters() -> dict:
    from torch._dynamo.utils import counters

    keep = ("stats", "frames", "recompiles")
    out = {k: {str(kk): vv for kk, vv in v.items()} for k, v in counters.items() if k in keep}
    out["graph_breaks"] = sum(counters["graph_break"].values())
    return out


def measure_row(name: str, variant: str, spec: dict, device: torch.device, amp, peaks: dict, log) -> dict:
    """One timed row: build, count FLOPs, warm up, time the median step."""
    if spec["compile"]:
        torch._dynamo.reset()  # every compiled row starts from nothing: no accumulated graphs, no recompile limit
        from torch._dynamo.utils import counters
        counters.clear()
    torch.manual_seed(0)
    step, forward, model = build_step(name, spec, device, amp, variant)
    row = {"method": name, "variant": variant, "recipe": step.recipe}
    flops = count_flops(step, forward, model, spec["batch"])
    if spec["compile"]:
        model.student.compile()
        if hasattr(model, "teacher"):
            model.teacher.compile()
        if name == "supervised":  # its forward calls student.classify, which Module.compile does not cover
            model.compile()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    loss = None
    for i in range(spec["warmup"]):
        loss = step(i)
    _sync(device)
    warm_s = time.perf_counter() - t0
    times = []
    for i in range(spec["repeats"]):
        _sync(device)
        start = time.perf_counter()
        loss = step(spec["warmup"] + i)
        _sync(device)
        times.append(time.perf_counter() - start)
    sec = statistics.median(times)
    finite = bool(torch.isfinite(loss.detach().float()).item())
    ips = spec["batch"] / sec
    row.update(status="ok" if finite else "non-finite loss", step_ms=1000 * sec, images_per_s=ips,
               spread_ms=1000 * (max(times) - min(times)), warmup_s=warm_s, gflop_per_image=flops / 1e9,
               peak_mem_gib=torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None,
               mfu=flops * ips / peaks["datasheet"] if peaks.get("datasheet") else None,
               mfu_measured_peak=flops * ips / peaks["measured"] if peaks.get("measured") else None,
               loss=float(loss.detach().float()))
    if spec["compile"]:
        row["dynamo"] = c = _dynamo_counters()
        if not c.get("stats", {}).get("unique_graphs"):
            row["status"] = "not compiled (dynamo captured no graph)"
    mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "unknown"
    log(f"  {name} [{variant}]: {row['step_ms']:.1f} ms/step, {ips:.0f} img/s, warm-up {warm_s:.1f} s, "
        f"{row['gflop_per_image']:.2f} GFLOP/img, MFU {mfu} (datasheet)")
    return row


def _relatives(rows: list[dict]) -> None:
    """Ratios within one configuration: each default row to supervised, each variant row to CGH's default row."""
    ok = {(r["method"], r["variant"]): r for r in rows if "step_ms" in r}
    for r in rows:
        if "step_ms" not in r:
            continue
        base = ok.get(("supervised", "default")) if r["variant"] == "default" else ok.get(("cgh", "default"))
        r["relative"] = r["step_ms"] / base["step_ms"] if base else None
        r["paper"] = PAPER_TABLE3.get(r["method"]) if r["variant"] == "default" else None


def _write_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _is_cuda_error(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}"
    return "CUDA" in text or "cuda" in text or "cuDNN" in text or "CUBLAS" in text or "NCCL" in text


def throughput(path: Path, dry_run: bool, deadline: float, compiled: bool = False) -> int:
    """Every row of _configs written to ``path`` as soon as it is measured; ``compiled`` appends the compiled rows to
    the file the eager run wrote. Exit status 0 (every row measured or skipped for time), 1 (an error or a non-finite
    loss in some row)."""
    from cgh.runtime.device import resolve_amp

    device = torch.device("cpu" if dry_run else "cuda")
    if not dry_run and not torch.cuda.is_available():
        print("throughput: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    amp = torch.bfloat16 if dry_run else resolve_amp("bf16", device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    old = _read_json(path) if compiled else None
    if old:
        result = old
    else:
        peaks = {"datasheet": peak_bf16(name) if device.type == "cuda" else None,
                 "measured": matmul_peak(device, dry_run)}
        result = {"device": name, "peak_bf16_flops": peaks["datasheet"], "peak_bf16_measured": peaks["measured"],
                  "amp": str(amp), "dry_run": dry_run, "configs": []}
    peaks = {"datasheet": result.get("peak_bf16_flops"), "measured": result.get("peak_bf16_measured")}

    def log(msg: str) -> None:
        print(msg, flush=True)

    if result["peak_bf16_measured"] and not compiled:
        log(f"bf16 matmul: {result['peak_bf16_measured'] / 1e12:.1f} TFLOP/s measured"
            + (f", {peaks['datasheet'] / 1e12:.0f} datasheet" if peaks["datasheet"] else ""))
    failed = False
    configs = _configs(dry_run, compiled)
    if compiled and dry_run:
        log("compiled throughput: skipped in a dry run (compiling takes minutes on the CPU; the GPU run does it)")
    for spec in configs:
        entry = {"label": spec["label"], "batch": spec["batch"], "compile": spec["compile"],
                 "image_size": spec["image_size"], "warmup": spec["warmup"], "repeats": spec["repeats"], "rows": []}
        result["configs"].append(entry)
        log(f"{spec['label']}, batch {spec['batch']}, {'compiled' if spec['compile'] else 'eager'}:")
        cost = 200.0 if spec["compile"] else 15.0  # a guess of one row's seconds until one is measured
        for method, variant in spec["rows"]:
            if time.time() + cost > deadline:
                entry["rows"].append({"method": method, "variant": variant, "status": "skipped (time budget)"})
                log(f"  {method} [{variant}]: skipped (time budget)")
                _write_atomic(path, result)
                continue
            # a row the step's time limit kills stays in the file as such
            entry["rows"].append({"method": method, "variant": variant, "status": "started, not finished"})
            _write_atomic(path, result)
            began = time.time()
            try:
                row = measure_row(method, variant, spec, device, amp, peaks, log)
            except Exception as e:  # this row only: the others are still measured
                row = {"method": method, "variant": variant, "status": "error", "cuda_error": _is_cuda_error(e),
                       "error": f"{type(e).__name__}: {str(e)[:400]}"}
                log(f"  {method} [{variant}]: ERROR {row['error']}")
            if row["status"] != "ok":
                failed = True
            entry["rows"][-1] = row
            _relatives(entry["rows"])
            _write_atomic(path, result)
            cost = max(time.time() - began, 1.0) if not spec["compile"] else cost
            if device.type == "cuda":
                torch.cuda.empty_cache()
    skipped = [r for c in result["configs"] for r in c["rows"] if r.get("status") == "skipped (time budget)"]
    if skipped:
        log(f"{len(skipped)} row(s) skipped for lack of time (listed as such in the summary)")
    if compiled and dry_run:
        print("SKIPPED-DRY-RUN")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------------------------
# summary


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def targets(tp: dict | None) -> list[dict]:
    """The issue's targets against the ResNet-50 bf16 default rows of one run (the best CGH configuration)."""
    out = []
    if not tp or tp.get("dry_run"):
        return [{"target": t, "result": "not checked (dry run)"} for t in (
            f"CGH ResNet-50 224 px bf16 >= {TARGET_CGH_IMG_S:.0f} img/s",
            f"CGH / ReSSL <= {TARGET_CGH_OVER_RESSL}", f"CGH / supervised <= {TARGET_CGH_OVER_SUPERVISED}")]
    best = None
    for c in tp["configs"]:
        rows = {r["method"]: r for r in c["rows"] if "step_ms" in r and r.get("variant", "default") == "default"}
        if c["label"].startswith("ResNet-50") and "cgh" in rows:
            if best is None or rows["cgh"]["images_per_s"] > best[1]["cgh"]["images_per_s"]:
                best = (c, rows)
    if best is None:
        return [{"target": "CGH ResNet-50 throughput", "result": "not measured"}]
    c, rows = best
    where = f"batch {c['batch']}, {'compiled' if c['compile'] else 'eager'}"
    ips = rows["cgh"]["images_per_s"]
    out.append({"target": f"CGH ResNet-50 224 px bf16 >= {TARGET_CGH_IMG_S:.0f} img/s", "value": ips,
                "result": ("MET" if ips >= TARGET_CGH_IMG_S else "MISSED") + f" ({ips:.0f}, {where})"})
    for other, limit in (("ressl", TARGET_CGH_OVER_RESSL), ("supervised", TARGET_CGH_OVER_SUPERVISED)):
        if other in rows:
            ratio = rows["cgh"]["step_ms"] / rows[other]["step_ms"]
            out.append({"target": f"CGH / {other} <= {limit}", "value": ratio,
                        "result": ("MET" if ratio <= limit else "MISSED") + f" ({ratio:.3f}, {where})"})
        else:
            out.append({"target": f"CGH / {other} <= {limit}", "result": f"not measured ({where})"})
    return out


# step statuses that do not fail the check: skipped for time is reported as skipped, not as a failure
NOT_FAILING = ("ok", "ok (skipped: dry run)", "skipped (time budget)", "skipped (dry run)")


def _recipe(r: dict) -> str:
    rc = r.get("recipe") or {}
    head = ("/".join(str(rc[k]) for k in ("feat_dim", "hid_dim", "hyper_dim") if k in rc) or "classifier") + (
        f", K {rc['queue_size']}" if "queue_size" in rc else "")
    return f"{head}; {rc.get('bn', '?')} BN" + (f" x{rc['bn_splits']}" if rc.get("bn") == "split" else "") + (
        ", CL" if rc.get("channels_last") else ", NCHW")


def _throughput_lines(tp: dict) -> list[str]:
    lines = [f"Device {tp['device']}, autocast {tp['amp']}; median step after warm-up; model FLOPs by FlopCounterMode "
             "(one forward + backward, augmentation excluded). MFU against the datasheet dense bf16 peak "
             + (f"({tp['peak_bf16_flops'] / 1e12:.0f} TFLOP/s)" if tp.get("peak_bf16_flops") else "(unknown here)")
             + " and against a bf16 matrix product measured on this device "
             + (f"({tp['peak_bf16_measured'] / 1e12:.0f} TFLOP/s)" if tp.get("peak_bf16_measured")
                else "(not measured)")
             + ". Default rows: relative to supervised (paper: Table 3); variant rows: relative to CGH's default row.",
             ""]
    for c in tp["configs"]:
        lines += [f"### {c['label']}, batch {c['batch']}, {'compiled' if c['compile'] else 'eager'} "
                  f"(median of {c['repeats']} after {c['warmup']} warm-up)", "",
                  "| method | variant | heads feat/hid/hyper, queue; BN; layout | step (ms) | images/s | relative | "
                  "paper | GFLOP/img | MFU (datasheet) | MFU (measured peak) | peak mem (GiB) | warm-up (s) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in c["rows"]:
            if "step_ms" not in r:
                lines.append(f"| {r['method']} | {r.get('variant', 'default')} | | {r['status']} "
                             f"{r.get('error', '')} | | | | | | | | |")
                continue
            pct = lambda v: f"{100 * v:.1f}%" if v is not None else "unknown"  # noqa: E731
            lines.append(f"| {r['method']} | {r.get('variant', 'default')} | {_recipe(r)} | {r['step_ms']:.1f} | "
                         f"{r['images_per_s']:.0f} | {_fmt(r.get('relative'))} | {_fmt(r.get('paper'))} | "
                         f"{r['gflop_per_image']:.2f} | {pct(r.get('mfu'))} | {pct(r.get('mfu_measured_peak'))} | "
                         f"{_fmt(r.get('peak_mem_gib'))} | {r['warmup_s']:.1f} |")
            if r.get("dynamo"):
                d = r["dynamo"]
                lines.append(f"| | | dynamo: {d.get('stats', {})}, graph breaks {d.get('graph_breaks')}, "
                             f"recompiles {d.get('recompiles', {})} | | | | | | | | | |")
            if r["status"] != "ok":
                lines.append(f"| | | **{r['status']}** | | | | | | | | | |")
        lines.append("")
    lines += ["Variants: " + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items()) + ".", ""]
    return lines


def summary(out_dir: Path, dry_run: bool) -> int:
    steps = []
    tsv = out_dir / "steps.tsv"
    if tsv.exists():
        for line in tsv.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                steps.append({"step": parts[0], "status": parts[1], "rc": int(parts[2]), "seconds": float(parts[3]),
                              "note": parts[4] if len(parts) > 4 else ""})
    env = _read_json(out_dir / "env.json") or {}
    tp = _read_json(out_dir / "throughput.json")
    pre = _read_json(out_dir / "pretrain.json") or {}
    tests = _read_json(out_dir / "tests.json") or {}
    failed = [s["step"] for s in steps if s["status"] not in NOT_FAILING]
    skipped = [s["step"] for s in steps if s["status"].startswith("skipped")]
    ok = bool(steps) and not failed
    verdict = "PASS" if ok else "FAIL"
    lines = ["# cgh GPU check", ""]
    if dry_run:
        lines += ["**DRY RUN (CPU): numbers are not GPU figures.**", ""]
    lines += [f"Overall: **{verdict}**" + (f" (failed: {', '.join(failed)})" if failed else "")
              + (f" (skipped: {', '.join(skipped)})" if skipped else ""),
              "", "## Steps", "", "| step | status | exit code | seconds | note |", "|---|---|---:|---:|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['rc']} | {s['seconds']:.1f} | {s['note']} |" for s in steps]
    lines += ["", "## Environment", "", "| item | value |", "|---|---|"]
    gpus = env.get("gpus") or []
    lines += [f"| GPU | {', '.join(g['name'] for g in gpus) or 'none'} |",
              f"| GPU memory (GiB) | {', '.join(str(g['memory_gib']) for g in gpus) or '-'} |",
              f"| driver / CUDA (torch's) | {env.get('driver')} / {env.get('torch_cuda')} |",
              f"| torch / Python | {env.get('torch')} / {env.get('python')} |",
              f"| bf16 supported | {env.get('bf16_supported')} |",
              f"| peak dense bf16 (TFLOP/s, datasheet) | "
              f"{', '.join(_fmt(g.get('peak_bf16_tflops'), '.0f', 'unknown') for g in gpus) or '-'} |",
              f"| bf16 matrix product measured (TFLOP/s) | "
              f"{_fmt((tp or {}).get('peak_bf16_measured') and tp['peak_bf16_measured'] / 1e12, '.1f')} |"]
    lines += ["", "## Throughput of one training step", ""]
    lines += _throughput_lines(tp) if tp else ["not run", ""]
    tg = targets(tp)
    lines += ["## Targets", "", "| target | result |", "|---|---|"]
    lines += [f"| {t['target']} | {t['result']} |" for t in tg]
    lines += ["", "## GPU-only tests (tests/gpu, marker `gpu`)", ""]
    for phase, t in (tests.get("phases") or {}).items():
        lines += [f"{phase}: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped, "
                  f"{t['not_run']} not run (time limit)", ""]
        bad = [x for x in t["tests"] if x["result"] not in ("passed",) and not (dry_run and x["result"] == "skipped")]
        lines += [f"- {x['test']}: {x['result']} {x.get('message', '')[-300:]}".rstrip() for x in bad]
        lines += [""] if bad else []
    if dry_run and tests:
        lines += ["In a dry run the gpu-marked tests are skipped (no CUDA device): the one allowed skip.", ""]
    if not tests:
        lines += ["not run", ""]
    lines += ["## Short pretraining run and its resume (torchrun)", ""]
    if pre:
        lines += [f"{pre.get('what', '')}", "", "| phase | exit code | checkpoint step | expected |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {ph['phase']} | {ph['rc']} | {ph.get('step')} | {ph['expected']} |"
                  for ph in pre.get("phases", [])]
        lines += ["", f"images/s from the epoch records: {_fmt(pre.get('img_per_s_median'), '.0f')} (median), "
                  f"kNN top-1 by epoch: {pre.get('knn_top1_by_epoch')}", "", "```", *pre.get("epoch_lines", []), "```"]
    else:
        lines += ["not run"]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    results = {"dry_run": dry_run, "pass": ok, "failed_steps": failed, "skipped_steps": skipped, "steps": steps,
               "environment": env, "tests": tests, "throughput": tp, "targets": tg, "pretrain_resume": pre}
    _write_atomic(out_dir / "results.json", results)
    print("\n".join(lines))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------------------------
# small helpers the shell script calls


def ckpt_step(run_dir: Path) -> int:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    print(ckpt["step"])
    return 0


def pretrain_record(run_dir: Path, log: Path, phases: Path, what: str, out: Path) -> int:
    """The pretraining run's phases (written by the shell), epoch lines (its log) and records (metrics.jsonl) -> out."""
    text = log.read_text(errors="replace") if log.exists() else ""
    recs = []
    mpath = run_dir / "metrics.jsonl"
    if mpath.exists():
        for ln in mpath.read_text().splitlines():
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            if r.get("kind") == "epoch":
                recs.append(r)
    ips = [r["img_per_s"] for r in recs if "img_per_s" in r]
    _write_atomic(out, {"what": what, "phases": _read_json(phases) or [],
                        "epoch_lines": [ln for ln in text.splitlines() if ln.startswith("epoch ")],
                        "img_per_s": ips, "img_per_s_median": statistics.median(ips) if ips else None,
                        "knn_top1_by_epoch": [r.get("knn_top1") for r in recs]})
    return 0


def tests_record(results: Path, out: Path, phase: str, dry_run: bool) -> int:
    """Merge one pytest run's results (gpu_check_pytest.py's JSON lines) into ``out`` under ``phase``. Exit status:
    0 when the phase is what it must be (GPU: every collected test passed; dry run: every one skipped), else 5."""
    collected, by_test = [], {}
    text = results.read_text() if results.exists() else ""
    for ln in text.splitlines():
        try:
            r = json.loads(ln)
        except ValueError:
            continue
        if "collected" in r:
            collected.append(r["collected"])
        elif "test" in r:
            by_test[r["test"]] = r
    tests = [by_test.get(t, {"test": t, "result": "not run", "seconds": 0.0}) for t in collected]
    tests += [r for t, r in by_test.items() if t not in collected]
    counts = {k: sum(x["result"] == k for x in tests) for k in ("passed", "failed", "skipped", "errors", "not run")}
    data = _read_json(out) or {"phases": {}}
    data["phases"][phase] = {"passed": counts["passed"], "failed": counts["failed"], "skipped": counts["skipped"],
                             "errors": counts["errors"], "not_run": counts["not run"], "tests": tests}
    _write_atomic(out, data)
    if not tests:
        print(f"{phase}: no gpu-marked test was collected")
        return 5
    good = counts["skipped"] == len(tests) if dry_run else counts["passed"] == len(tests)
    print(f"{phase}: {counts}")
    return 0 if good else 5


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env").add_argument("out", type=Path)
    t = sub.add_parser("throughput")
    t.add_argument("out", type=Path)
    t.add_argument("--dry-run", action="store_true")
    t.add_argument("--compiled", action="store_true", help="the compiled rows, appended to OUT")
    t.add_argument("--deadline", type=float, default=0.0, help="unix time after which no further row starts")
    sub.add_parser("ckpt-step").add_argument("run_dir", type=Path)
    s = sub.add_parser("summary")
    s.add_argument("out_dir", type=Path)
    s.add_argument("--dry-run", action="store_true")
    e = sub.add_parser("pretrain-record")
    for a in ("run_dir", "log", "phases"):
        e.add_argument(a, type=Path)
    e.add_argument("what")
    e.add_argument("out", type=Path)
    j = sub.add_parser("tests-record")
    j.add_argument("results", type=Path)
    j.add_argument("out", type=Path)
    j.add_argument("phase")
    j.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "env":
        env = environment()
        _write_atomic(a.out, env)
        print(json.dumps(env, indent=1))
        return 0
    if a.cmd == "throughput":
        return throughput(a.out, a.dry_run, a.deadline or time.time() + 10 ** 6, a.compiled)
    if a.cmd == "ckpt-step":
        return ckpt_step(a.run_dir)
    if a.cmd == "summary":
        return summary(a.out_dir, a.dry_run)
    if a.cmd == "pretrain-record":
        return pretrain_record(a.run_dir, a.log, a.phases, a.what, a.out)
    if a.cmd == "tests-record":
        return tests_record(a.results, a.out, a.phase, a.dry_run)
    return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
