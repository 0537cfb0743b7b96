"""The Python half of benchmarks/gpu_check.sh: the environment, the step throughput, checkpoint steps and the summary.

    python benchmarks/gpu_check.py env OUT.json                    GPU, memory, driver / CUDA, torch, bf16
    python benchmarks/gpu_check.py throughput OUT.json [--dry-run] [--deadline UNIX_TIME]
    python benchmarks/gpu_check.py ckpt-step RUN_DIR               prints the step of RUN_DIR/checkpoints/last.pt
    python benchmarks/gpu_check.py summary OUT_DIR [--dry-run]     OUT_DIR/summary.md and OUT_DIR/results.json

The throughput is that of cgh's own training step (as cgh.train runs it): the on-device augmentation
(cgh.augment.build_augment) of a pre-made synthetic uint8 batch already on the device, channels-last views,
cgh.runtime.autocast, the method's forward (teacher, EMA, queue push included), backward and SGD on
cgh.schedule.param_groups; ``train.compile`` compiles the student and teacher as cgh.train does. No data loading.
Supervised is the same backbone with a linear classifier and cross-entropy on one strong view (cgh.cost.Supervised).
Results are written after every method, so a run stopped by its time limit leaves what it measured.
"""

from __future__ import annotations

import argparse
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
PAPER_TABLE3 = {"supervised": 1.00, "mocov2": 1.62, "ressl": 1.62, "cgh": 2.01}
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


def _configs(dry_run: bool) -> list[dict]:
    if dry_run:  # every code path, CPU-sized
        small = {"preset": "cifar10", "overrides": ["model.arch=resnet18", "model.stem=cifar", "model.width=8",
                                                    "method.queue_size=64"],
                 "label": "ResNet-18/8 CIFAR stem 32 px", "image_size": 32, "source_size": 32}
        # no compile: measured here (2 cores), torch.compile of the supervised ResNet-18/8 alone took 90 s, CGH's
        # student and teacher more; the compiled path runs on the GPU (tests/gpu and the compiled configs)
        return [dict(small, batch=16, compile=False, warmup=1, repeats=3)]
    r50 = {"preset": "imagenet", "overrides": ["model.arch=resnet50"], "label": "ResNet-50 224 px",
           "image_size": 224, "source_size": 256, "warmup": 3, "repeats": 10}
    r18 = {"preset": "cifar10", "overrides": ["model.arch=resnet18", "model.stem=cifar", "model.width=64"],
           "label": "ResNet-18 CIFAR stem 32 px", "image_size": 32, "source_size": 32, "warmup": 3, "repeats": 20}
    # eager first (the headline numbers), then the compiled runs, which spend most of their time compiling
    return [dict(r50, batch=256, compile=False), dict(r50, batch=128, compile=False),
            dict(r18, batch=512, compile=False), dict(r50, batch=256, compile=True), dict(r50, batch=128, compile=True)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_step(name: str, spec: dict, device: torch.device, amp):
    """(step(i) -> loss tensor, model) running one cgh training step of ``name`` on pre-made uint8 images."""
    from cgh.augment import build_augment
    from cgh.config import load_config
    from cgh.cost import Supervised
    from cgh.methods import build_method, teacher_view
    from cgh.runtime import autocast
    from cgh.schedule import param_groups
    from cgh.views import pretrain_views

    batch = spec["batch"]
    cfg = load_config(spec["preset"], [*spec["overrides"], f"data.image_size={spec['image_size']}",
                                       f"optim.batch_size={batch}", "train.device=" + device.type])
    cfg.method.name = "cgh" if name == "supervised" else name
    cfg.method.queue_size = max(batch, cfg.method.queue_size // batch * batch)
    m = cfg.method
    specs = pretrain_views(spec["image_size"], teacher=teacher_view(cfg), weak_scale=tuple(cfg.aug.weak_scale),
                           strong_scale=tuple(cfg.aug.strong_scale), num_local=m.num_local)
    if name == "supervised":
        specs = [s for s in specs if s.strong][:1]
        model = Supervised(cfg).to(device)
    else:
        model = build_method(copy.deepcopy(cfg), 1, steps_per_epoch=1).to(device)
    augment = build_augment(cfg, specs).to(device)
    channels_last = device.type == "cuda" and cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    o = cfg.optim
    opt = torch.optim.SGD(param_groups(model.student, o.weight_decay, o.wd_exclude_norm_bias), lr=1e-3,
                          momentum=o.momentum)
    model.train()
    s = spec["source_size"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=gen).to(device)
    labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)

    def forward(i: int) -> torch.Tensor:
        with torch.no_grad():
            views = augment(images)
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with autocast(device, amp):
            if name == "supervised":
                return model([views[0], views[0]], labels)
            return model(views, 0.99, 10 ** 9 + i)[0]  # CGH past its loss warm-up: its steady state

    def step(i: int) -> torch.Tensor:
        loss = forward(i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step, forward, model


def count_flops(forward, model, batch: int) -> float:
    """Model FLOPs per image of one forward + backward (torch.utils.flop_counter), augmentation excluded."""
    from torch.utils.flop_counter import FlopCounterMode

    loss = forward(0)  # the augmentation runs outside the counter: it is not model work
    del loss
    counter = FlopCounterMode(display=False)
    with counter:
        loss = forward(1)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def measure_config(spec: dict, device: torch.device, amp, deadline: float, peak: float | None, log) -> list[dict]:
    rows, cost = [], (90.0 if spec["compile"] else 10.0)  # a guess of one method's seconds until one is measured
    for name in spec.get("methods", METHODS):
        if time.time() + cost > deadline:
            rows.append({"method": name, "status": "not run (time budget)"})
            log(f"  {name}: not run (time budget)")
            continue
        began = time.time()
        torch.manual_seed(0)
        step, forward, model = build_step(name, spec, device, amp)
        flops = count_flops(forward, model, spec["batch"])
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
        row = {"method": name, "status": "ok" if finite else "non-finite loss", "step_ms": 1000 * sec,
               "images_per_s": spec["batch"] / sec, "spread_ms": 1000 * (max(times) - min(times)),
               "warmup_s": warm_s, "gflop_per_image": flops / 1e9,
               "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None,
               "mfu": flops * spec["batch"] / sec / peak if peak else None, "loss": float(loss.detach().float())}
        rows.append(row)
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "unknown"
        log(f"  {name}: {row['step_ms']:.1f} ms/step, {row['images_per_s']:.0f} img/s, warm-up {warm_s:.1f} s, "
            f"{row['gflop_per_image']:.2f} GFLOP/img, MFU {mfu}")
        del step, forward, model
        cost = time.time() - began
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = next((r for r in rows if r["method"] == "supervised" and "step_ms" in r), None)
    for r in rows:
        r["relative"] = r["step_ms"] / base["step_ms"] if base and "step_ms" in r else None
        r["paper"] = PAPER_TABLE3.get(r["method"])
    return rows


def throughput(path: Path, dry_run: bool, deadline: float) -> int:
    from cgh.runtime import resolve_amp

    device = torch.device("cpu" if dry_run else "cuda")
    if not dry_run and not torch.cuda.is_available():
        print("throughput: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    amp = torch.bfloat16 if dry_run else resolve_amp("bf16", device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = peak_bf16(name) if device.type == "cuda" else None
    result = {"device": name, "peak_bf16_flops": peak, "amp": str(amp), "dry_run": dry_run, "configs": []}

    def log(msg: str) -> None:
        print(msg, flush=True)

    failed = False
    for spec in _configs(dry_run):
        entry = {"label": spec["label"], "batch": spec["batch"], "compile": spec["compile"],
                 "image_size": spec["image_size"], "warmup": spec["warmup"], "repeats": spec["repeats"],
                 "channels_last": device.type == "cuda", "rows": []}
        result["configs"].append(entry)
        log(f"{spec['label']}, batch {spec['batch']}, {'compiled' if spec['compile'] else 'eager'}:")
        t0 = time.perf_counter()
        try:
            entry["rows"] = measure_config(spec, device, amp, deadline, peak, log)
        except Exception as e:  # recorded, then re-raised at the end: the run fails loudly
            entry["error"] = f"{type(e).__name__}: {e}"
            log(f"  ERROR {entry['error']}")
            failed = True
        entry["seconds"] = time.perf_counter() - t0
        path.write_text(json.dumps(result, indent=1))
        if device.type == "cuda":
            torch._dynamo.reset()
    bad = [r for c in result["configs"] for r in c["rows"] if r.get("status") == "non-finite loss"]
    skipped = [r for c in result["configs"] for r in c["rows"] if r.get("status", "").startswith("not run")]
    if skipped:
        log(f"INCOMPLETE: {len(skipped)} method run(s) not started for lack of time (listed in the summary)")
    return 1 if failed or bad else 4 if skipped else 0  # 4: incomplete, named as such by gpu_check.sh


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
    """The issue's targets against the ResNet-50 bf16 configs of one run (the best batch-256 config for CGH)."""
    out = []
    if not tp or tp.get("dry_run"):
        return [{"target": t, "result": "not checked (dry run)"} for t in (
            f"CGH ResNet-50 224 px bf16 >= {TARGET_CGH_IMG_S:.0f} img/s",
            f"CGH / ReSSL <= {TARGET_CGH_OVER_RESSL}", f"CGH / supervised <= {TARGET_CGH_OVER_SUPERVISED}")]
    best = None
    for c in tp["configs"]:
        rows = {r["method"]: r for r in c["rows"] if "step_ms" in r}
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
    return out


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
    nccl = _read_json(out_dir / "nccl.json") or {}
    e2e = _read_json(out_dir / "e2e.json") or {}
    tests = _read_json(out_dir / "tests.json") or {}
    ok = all(s["status"] in ("ok", "ok (skipped: dry run)") for s in steps) and bool(steps)
    failed = [s["step"] for s in steps if s["status"] not in ("ok", "ok (skipped: dry run)")]
    lines = ["# cgh GPU check", ""]
    if dry_run:
        lines += ["**DRY RUN (CPU): numbers are not GPU figures.**", ""]
    lines += [f"Overall: **{'PASS' if ok else 'FAIL'}**" + (f" (failed: {', '.join(failed)})" if failed else ""),
              "", "## Steps", "", "| step | status | exit code | seconds | note |", "|---|---|---:|---:|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['rc']} | {s['seconds']:.1f} | {s['note']} |" for s in steps]
    lines += ["", "## Environment", "", "| item | value |", "|---|---|"]
    gpus = env.get("gpus") or []
    lines += [f"| GPU | {', '.join(g['name'] for g in gpus) or 'none'} |",
              f"| GPU memory (GiB) | {', '.join(str(g['memory_gib']) for g in gpus) or '-'} |",
              f"| driver / CUDA (torch's) | {env.get('driver')} / {env.get('torch_cuda')} |",
              f"| torch / Python | {env.get('torch')} / {env.get('python')} |",
              f"| bf16 supported | {env.get('bf16_supported')} |",
              f"| peak dense bf16 (TFLOP/s, from the table) | "
              f"{', '.join(_fmt(g.get('peak_bf16_tflops'), '.0f', 'unknown') for g in gpus) or '-'} |"]
    lines += ["", "## GPU-only tests (tests/gpu, marker `gpu`)", ""]
    if tests:
        lines += ["| passed | failed | skipped | errors |", "|---:|---:|---:|---:|",
                  f"| {tests.get('passed', 0)} | {tests.get('failed', 0)} | {tests.get('skipped', 0)} | "
                  f"{tests.get('errors', 0)} |"]
        if dry_run:
            lines += ["", "In a dry run the gpu-marked tests are skipped (no CUDA device): the one allowed skip."]
    else:
        lines += ["not run"]
    lines += ["", "## Throughput of one training step", ""]
    if tp:
        lines += [f"Device {tp['device']}, autocast {tp['amp']}, channels-last on CUDA; median step after warm-up; "
                  "MFU = model FLOPs (FlopCounterMode, one forward + backward) x images/s / peak dense bf16 "
                  + ("(unknown for this GPU)" if not tp.get("peak_bf16_flops") else
                     f"({tp['peak_bf16_flops'] / 1e12:.0f} TFLOP/s)"), ""]
        for c in tp["configs"]:
            lines += [f"### {c['label']}, batch {c['batch']}, {'compiled' if c['compile'] else 'eager'} "
                      f"(median of {c['repeats']} after {c['warmup']} warm-up)", ""]
            if c.get("error"):
                lines += [f"ERROR: {c['error']}", ""]
            lines += ["| method | step (ms) | images/s | rel. to supervised | paper (Table 3) | GFLOP/img | MFU | "
                      "peak mem (GiB) | warm-up (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in c["rows"]:
                if "step_ms" not in r:
                    lines.append(f"| {r['method']} | {r['status']} | | | | | | | |")
                    continue
                mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "unknown"
                lines.append(f"| {r['method']} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | "
                             f"{_fmt(r.get('relative'))} | {_fmt(r.get('paper'))} | {r['gflop_per_image']:.2f} | "
                             f"{mfu} | {_fmt(r.get('peak_mem_gib'))} | {r['warmup_s']:.1f} |")
            lines.append("")
    else:
        lines += ["not run", ""]
    tg = targets(tp)
    lines += ["## Targets", "", "| target | result |", "|---|---|"]
    lines += [f"| {t['target']} | {t['result']} |" for t in tg]
    lines += ["", "## NCCL / DDP path (torchrun, then --resume)", ""]
    if nccl:
        lines += ["| phase | exit code | checkpoint step | expected |", "|---|---:|---:|---:|"]
        for ph in nccl.get("phases", []):
            lines.append(f"| {ph['phase']} | {ph['rc']} | {ph.get('step')} | {ph['expected']} |")
        lines += ["", f"backend {nccl.get('backend')}, {nccl.get('nproc')} processes"]
    else:
        lines += ["not run"]
    lines += ["", "## End-to-end `cgh pretrain demo` with the kNN monitor", ""]
    if e2e:
        lines += [f"exit code {e2e.get('rc')}, {e2e.get('seconds', 0):.1f} s, {e2e.get('steps')} steps; "
                  f"images/s from the epoch records: {_fmt(e2e.get('img_per_s_median'), '.0f')} (median), "
                  f"last kNN top-1 {_fmt(e2e.get('knn_top1'))}", "", "```", *e2e.get("epoch_lines", []), "```"]
    else:
        lines += ["not run"]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    results = {"dry_run": dry_run, "pass": ok, "failed_steps": failed, "steps": steps, "environment": env,
               "tests": tests, "throughput": tp, "targets": tg, "nccl": nccl, "e2e": e2e}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------------------------
# small helpers the shell script calls


def ckpt_step(run_dir: Path) -> int:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    print(ckpt["step"])
    return 0


def e2e_record(run_dir: Path, log: Path, rc: int, seconds: float, out: Path) -> int:
    """The end-to-end run's epoch lines (from its log) and epoch records (metrics.jsonl) -> out."""
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [ln for ln in text.splitlines() if ln.startswith("epoch ")]
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
    knn = [r["knn_top1"] for r in recs if "knn_top1" in r]
    steps = max((r.get("step", 0) for r in recs), default=0)
    out.write_text(json.dumps({"rc": rc, "seconds": seconds, "steps": steps, "epoch_lines": lines,
                               "img_per_s": ips, "img_per_s_median": statistics.median(ips) if ips else None,
                               "knn_top1": knn[-1] if knn else None}, indent=1))
    return 0


def junit_counts(xml: Path, out: Path) -> int:
    import xml.etree.ElementTree as ET

    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "tests": []}
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        out.write_text(json.dumps(counts))
        return 0
    for case in root.iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure",):
                kind = "failed"
            elif child.tag == "error":
                kind = "errors"
            elif child.tag == "skipped":
                kind = "skipped"
        counts[kind] += 1
        counts["tests"].append({"name": case.get("name"), "result": kind, "seconds": float(case.get("time", 0))})
    out.write_text(json.dumps(counts, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env").add_argument("out", type=Path)
    t = sub.add_parser("throughput")
    t.add_argument("out", type=Path)
    t.add_argument("--dry-run", action="store_true")
    t.add_argument("--deadline", type=float, default=0.0, help="unix time after which no further method starts")
    sub.add_parser("ckpt-step").add_argument("run_dir", type=Path)
    s = sub.add_parser("summary")
    s.add_argument("out_dir", type=Path)
    s.add_argument("--dry-run", action="store_true")
    e = sub.add_parser("e2e-record")
    for a in ("run_dir", "log"):
        e.add_argument(a, type=Path)
    e.add_argument("rc", type=int)
    e.add_argument("seconds", type=float)
    e.add_argument("out", type=Path)
    j = sub.add_parser("junit")
    j.add_argument("xml", type=Path)
    j.add_argument("out", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "env":
        env = environment()
        a.out.write_text(json.dumps(env, indent=1))
        print(json.dumps(env, indent=1))
        return 0
    if a.cmd == "throughput":
        return throughput(a.out, a.dry_run, a.deadline or time.time() + 10 ** 6)
    if a.cmd == "ckpt-step":
        return ckpt_step(a.run_dir)
    if a.cmd == "summary":
        return summary(a.out_dir, a.dry_run)
    if a.cmd == "e2e-record":
        return e2e_record(a.run_dir, a.log, a.rc, a.seconds, a.out)
    if a.cmd == "junit":
        return junit_counts(a.xml, a.out)
    return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
