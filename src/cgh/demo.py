"""``cgh demo``: the main job on a fresh machine.

On the built-in synthetic dataset, on the CPU, it pretrains CGH and, with the same budget and the same initial
weights, ReSSL and MoCo-v2 (preset ``demo``); evaluates each (kNN, linear probe on global and on hypercolumn
features, k-means clustering) against the same encoder at random initialisation and against raw pixels; and writes
a report into the run directory:

    report.md / report.html   results table, ranking with margins, kNN-vs-epoch curves, t-SNE panels side by side,
                              the training-cost table relative to supervised training, seed, config and versions
    results.json              every number of the report
    curves.png, tsne.png      the figures
    runs/<method>/            each pretraining run (config.yaml, metrics.jsonl, checkpoints/last.pt)

``--quick`` is the variant the tests run: a smaller dataset and fewer epochs (under a minute on 2 CPU cores),
which shows the pipeline end to end, not a meaningful comparison.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from cgh import __version__
from cgh.augment import dataset_normalization
from cgh.backbone import convert_split_bn
from cgh.config import Config, load_config, to_yaml
from cgh.errors import ConfigError
from cgh.pretrained import PretrainedBackbone, load_backbone

METHOD_LABELS = {"random": "random init", "mocov2": "MoCo-v2", "ressl": "ReSSL", "cgh": "CGH"}

# The quick variant: enough to exercise every step, in under a minute on 2 cores (the tests run it).
QUICK = ["data.synthetic_size=1024", "data.synthetic_test_size=512", "optim.epochs=3", "optim.warmup_epochs=1",
         "method.loss_warmup_epochs=1", "method.queue_size=512", "train.knn_every=1"]


@dataclass
class Encoder:
    name: str  # "random" or a method name
    model: PretrainedBackbone
    run_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def demo_config(quick: bool, seed: int, overrides: list[str]) -> Config:
    cfg = load_config("demo", (QUICK if quick else []) + [f"seed={seed}", *overrides])
    cfg.validate()
    return cfg


def method_config(base: Config, method: str, run_dir: Path) -> Config:
    """The demo config for one method: the same data, model, budget and seed; MoCo-v2 gets its two strong views."""
    cfg = copy.deepcopy(base)
    cfg.method.name = method
    cfg.aug.teacher_view = "strong" if method == "mocov2" else "weak"
    cfg.out_dir = str(run_dir)
    return cfg


def random_init_encoder(cfg: Config) -> PretrainedBackbone:
    """The encoder every method starts from: ``pretrain`` seeds with cfg.seed and builds the student backbone first,
    so this is bit-identical to each run's initial backbone."""
    from cgh.methods import build_method

    torch.manual_seed(cfg.seed)
    method = build_method(cfg)
    backbone = convert_split_bn(method.student.backbone)
    return PretrainedBackbone(backbone, info={"method": "random", "epoch": 0, "path": "(random initialisation)"})


def evaluate_encoder(enc: Encoder, train_src, test_src, cfg: Config, num_classes: int, log) -> dict[str, Any]:
    """kNN, linear probes (global, hypercolumn) and k-means metrics of one encoder, on precomputed features."""
    from cgh.evaluate.cluster import cluster_and_score
    from cgh.evaluate.features import extract_features
    from cgh.evaluate.knn import knn_evaluate
    from cgh.evaluate.linear import train_linear

    mean, std = dataset_normalization(cfg.data)
    size = cfg.data.image_size
    out: dict[str, Any] = {}
    feats = {}
    for kind in ("global", "hypercolumn"):
        feats[kind] = [extract_features(enc.model, src, kind, image_size=size, mean=mean, std=std)
                       for src in (train_src, test_src)]
    (tr, ytr), (te, yte) = feats["global"]
    knn = knn_evaluate(tr, ytr, te, yte, num_classes, ks=(cfg.train.knn_k,), t=cfg.train.knn_t)
    out["knn_top1"] = knn[cfg.train.knn_k]["top1"]
    for kind in ("global", "hypercolumn"):
        (tr_k, _), (te_k, _) = feats[kind]
        # the 'small' protocol of cgh linear: precomputed features, SGD lr 0.3, 100 epochs, cosine, BN before fc
        result = train_linear(tr_k, ytr, te_k, yte, num_classes, epochs=100, lr=0.3, seed=cfg.seed, eval_every=100)
        out[f"linear_{kind}"] = result.final_top1
    clusters = cluster_and_score(te.numpy(), yte.numpy(), num_classes, seed=cfg.seed)
    out["nmi"], out["cluster_acc"] = 100 * clusters["nmi"], 100 * clusters["acc"]
    out["test_features"] = (te, yte)
    log(f"  {METHOD_LABELS[enc.name]:<12} kNN {out['knn_top1']:5.1f}%  linear global {out['linear_global']:5.1f}%  "
        f"hypercolumn {out['linear_hypercolumn']:5.1f}%  NMI {out['nmi']:5.1f}")
    return out


def raw_pixel_knn(train_src, test_src, num_classes: int, k: int, t: float) -> float:
    """kNN on per-pixel standardised raw pixels: how much of the task needs no learning at all."""
    from cgh.evaluate.knn import knn_evaluate

    x, xt = train_src.images.flatten(1).float(), test_src.images.flatten(1).float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    return knn_evaluate((x - mean) / std, train_src.labels, (xt - mean) / std, test_src.labels, num_classes,
                        ks=(k,), t=t)[k]["top1"]


# ----------------------------------------------------------------------------------------------------------------
# The report: a list of blocks rendered to Markdown and to HTML
# ----------------------------------------------------------------------------------------------------------------


def _md(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind == "h":
            level, text = rest
            out.append("#" * level + " " + text)
        elif kind == "p":
            out.append(rest[0])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in rest[0]))
        elif kind == "table":
            header, rows = rest
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(map(str, r)) + " |" for r in rows]))
        elif kind == "img":
            path, alt = rest
            out.append(f"![{alt}]({path})")
        elif kind == "code":
            out.append("```\n" + rest[0].rstrip() + "\n```")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then render the report's own inline Markdown: **bold** and `code`."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _html(blocks: list[tuple], title: str) -> str:
    body = []
    for kind, *rest in blocks:
        if kind == "h":
            body.append(f"<h{rest[0]}>{_inline_html(rest[1])}</h{rest[0]}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(rest[0])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            header, rows = rest
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img":
            body.append(f'<p><img src="{html.escape(rest[0])}" alt="{html.escape(rest[1])}"></p>')
        elif kind == "code":
            body.append(f"<pre>{html.escape(rest[0])}</pre>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:.85em}code{background:#f1f1f1}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _ranking(results: dict[str, dict[str, Any]], methods: list[str], metric: str, label: str) -> str:
    order = sorted(methods, key=lambda m: -results[m][metric])
    ranked = ", ".join(f"{METHOD_LABELS[m]} {results[m][metric]:.1f}%" for m in order)
    line = f"**{label}**: {ranked}"
    if "cgh" in methods and len(methods) > 1:
        others = [m for m in methods if m != "cgh"]
        best_other = max(others, key=lambda m: results[m][metric])
        margin = results["cgh"][metric] - results[best_other][metric]
        if margin > 0:
            line += f"; CGH leads the best baseline ({METHOD_LABELS[best_other]}) by {margin:.1f} points"
        else:
            line += (f"; CGH does **not** beat {METHOD_LABELS[best_other]} on this data "
                     f"({-margin:.1f} points behind)")
        if len(others) > 1:
            line += "; CGH against each baseline: " + ", ".join(
                f"{METHOD_LABELS[m]} {results['cgh'][metric] - results[m][metric]:+.1f}" for m in others)
    gain = results[order[0]][metric] - results["random"][metric]
    return line + f". The best method is {gain:+.1f} points from the random-init encoder."


def _against_raw(results: dict[str, dict[str, Any]], methods: list[str], raw: float) -> str:
    above = [METHOD_LABELS[m] for m in methods if results[m]["knn_top1"] > raw]
    below = [METHOD_LABELS[m] for m in methods if results[m]["knn_top1"] <= raw]
    parts = [f"**Raw pixels** give {raw:.1f}% with the same kNN"]
    if above:
        parts.append(f"{', '.join(above)} {'is' if len(above) == 1 else 'are'} above that")
    if below:
        parts.append(f"{', '.join(below)} {'is' if len(below) == 1 else 'are'} not, in this budget")
    return "; ".join(parts) + "."


def write_report(out: Path, cfg: Config, methods: list[str], results: dict[str, dict[str, Any]], raw: float,
                 cost: dict[str, Any] | None, timings: dict[str, float], quick: bool, command: str) -> Path:
    from cgh.cost import format_table

    names = ["random"] + methods
    rows = [[METHOD_LABELS[n], f"{results[n]['knn_top1']:.1f}", f"{results[n]['linear_global']:.1f}",
             f"{results[n]['linear_hypercolumn']:.1f}", f"{results[n]['nmi']:.1f}", f"{results[n]['cluster_acc']:.1f}"]
            for n in names]
    rows.append(["raw pixels", f"{raw:.1f}", "-", "-", "-", "-"])
    d, o = cfg.data, cfg.optim
    steps = o.epochs * (d.synthetic_size // o.batch_size)
    blocks: list[tuple] = [
        ("h", 1, "cgh demo report" + (" (quick variant)" if quick else "")),
        ("p", f"Written {datetime.now().strftime('%Y-%m-%d %H:%M')} by `{command}` in "
              f"{timings['total'] / 60:.1f} minutes. Every number below was measured in this run."),
        ("p", (f"**Setup.** {', '.join(METHOD_LABELS[x] for x in methods)} were each pretrained for {o.epochs} epochs "
               f"({steps} steps of {o.batch_size} images) on the built-in synthetic dataset "
               f"({d.synthetic_size} training and {d.synthetic_test_size} test images of {d.synthetic_image_size} "
               f"px, {d.synthetic_classes} classes defined by shape and texture; colour, position, scale, "
               f"rotation and background are random nuisances), with a {cfg.model.arch} of width "
               f"{cfg.model.width} ({cfg.model.stem} stem), from the same initial weights, seed {cfg.seed}. "
               f"Evaluation uses the pooled backbone features (kNN: k={cfg.train.knn_k}, T={cfg.train.knn_t}; "
               f"linear probe: 100 epochs on frozen features; k-means with {d.synthetic_classes} clusters on "
               f"the test split) and, for the hypercolumn probe, the pooled stack of layer3 and layer4.")),
    ]
    if quick:
        blocks.append(("p", "**This is the quick variant** (a smaller dataset, a few epochs): it checks that every "
                            "step runs; its numbers say little about the methods. Run `make demo` for the full one."))
    blocks += [
        ("h", 2, "Results (test split, top-1 %)"),
        ("table", ["encoder", "kNN", "linear (global)", "linear (hypercolumn)", "k-means NMI", "k-means acc."],
         rows),
        ("h", 3, "Ranking"),
        ("list", [_ranking(results, methods, "knn_top1", "kNN"),
                  _ranking(results, methods, "linear_global", "Linear probe, global features"),
                  _ranking(results, methods, "linear_hypercolumn", "Linear probe, hypercolumn features")]
         + [f"Hypercolumn vs global linear probe for {METHOD_LABELS[n]}: "
            f"{results[n]['linear_hypercolumn'] - results[n]['linear_global']:+.1f} points "
            f"(the supplementary's Table 1 reports +0.3 for CGH on ImageNet)." for n in methods if n == "cgh"]
         + [_against_raw(results, methods, raw)]),
        ("p", "These are small, short CPU runs on synthetic data: a check that the methods learn and a picture of "
              "their early training, not a reproduction of the paper's ImageNet results (SPEC section 8 lists "
              "those)."),
        ("h", 2, "kNN accuracy against epoch"),
        ("p", "The kNN monitor of each run (pooled backbone features, evaluated on the test split); epoch 0 is the "
              "shared random initialisation. Compare the supplementary's Fig. 2."),
        ("img", "curves.png", "kNN top-1 and loss against epoch"),
        ("h", 2, "t-SNE of the test features"),
        ("p", "Pooled backbone features of the test images, one panel per encoder (compare the supplementary's "
              "Fig. 3)."),
        ("img", "tsne.png", "t-SNE panels"),
    ]
    if cost:
        table = format_table(cost).splitlines()
        header = [c.strip() for c in table[2].strip("|").split("|")]
        body = [[c.strip() for c in line.strip("|").split("|")] for line in table[4:] if line.startswith("|")]
        blocks += [("h", 2, "Training cost relative to supervised training"),
                   ("p", table[0] + ". The paper's figures (Table 3) are per ImageNet epoch on 2 A100 GPUs."),
                   ("table", header, body)]
        if cost.get("cgh_over_ressl"):
            blocks.append(("p", f"CGH / ReSSL = {cost['cgh_over_ressl']:.2f} here; the paper reports 2.01 / 1.62 = "
                                f"1.24."))
    blocks += [
        ("h", 2, "Time spent"),
        ("table", ["step", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]),
        ("h", 2, "Environment"),
        ("list", [f"cgh {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
                  f"{platform.platform()}",
                  f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, device "
                  f"{'cuda' if torch.cuda.is_available() and cfg.train.device != 'cpu' else 'cpu'}"]),
        ("h", 2, "Configuration (CGH run; the baselines differ only in method.name and aug.teacher_view)"),
        ("code", to_yaml(method_config(cfg, "cgh", out / "runs" / "cgh"))),
        ("p", "Reproduce: `" + command + "`. Runs: " + ", ".join(f"`runs/{x}`" for x in methods) + "."),
    ]
    (out / "report.md").write_text(_md(blocks), encoding="utf-8")
    (out / "report.html").write_text(_html(blocks, "cgh demo report"), encoding="utf-8")
    return out / "report.md"


# ----------------------------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------------------------


def run_demo(out: Path, quick: bool = False, seed: int = 0, methods: list[str] | None = None,
             overrides: list[str] | None = None, cost: bool = True, command: str = "cgh demo",
             log=print) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the results written to results.json."""
    from cgh.cost import measure
    from cgh.evaluate.plot import plot_curves
    from cgh.evaluate.tsne import tsne_figure
    from cgh.train import open_split, pretrain

    methods = methods or ["cgh", "ressl", "mocov2"]
    start = time.time()
    timings: dict[str, float] = {}
    cfg = demo_config(quick, seed, overrides or [])
    out.mkdir(parents=True, exist_ok=True)
    n_steps = 4 + bool(cost)

    # ---- 1. pretraining, same budget and initial weights for every method --------------------------------------
    encoders: list[Encoder] = []
    for i, name in enumerate(methods):
        log(f"[1/{n_steps}] pretraining {METHOD_LABELS[name]} ({i + 1}/{len(methods)})", flush=True)
        t0 = time.time()
        run_dir = out / "runs" / name
        pretrain(method_config(cfg, name, run_dir), overwrite=True)
        timings[f"pretrain {name}"] = time.time() - t0
        encoders.append(Encoder(name, load_backbone(run_dir / "checkpoints" / "last.pt"), run_dir))

    # ---- 2. evaluation against the random-init encoder and raw pixels ---------------------------------------------
    log(f"[2/{n_steps}] evaluating the encoders (kNN, linear probes, k-means)", flush=True)
    t0 = time.time()
    train_src, test_src = open_split(cfg, "train"), open_split(cfg, "test")
    num_classes = cfg.data.synthetic_classes
    encoders.insert(0, Encoder("random", random_init_encoder(cfg)))
    results = {e.name: evaluate_encoder(e, train_src, test_src, cfg, num_classes, log) for e in encoders}
    raw = raw_pixel_knn(train_src, test_src, num_classes, cfg.train.knn_k, cfg.train.knn_t)
    log(f"  {'raw pixels':<12} kNN {raw:5.1f}%")
    timings["evaluation"] = time.time() - t0

    # ---- 3. figures ----------------------------------------------------------------------------------------------
    log(f"[3/{n_steps}] figures: kNN curves and t-SNE", flush=True)
    t0 = time.time()
    plot_curves([e.run_dir for e in encoders if e.run_dir], out / "curves.png",
                labels=[METHOD_LABELS[e.name] for e in encoders if e.run_dir],
                title=f"Synthetic data, {cfg.model.arch} width {cfg.model.width}: kNN top-1 and loss per epoch")
    panels = []
    for e in encoders:
        feats, labels = results[e.name].pop("test_features")
        epoch = e.model.info.get("epoch", 0)
        panels.append((f"{METHOD_LABELS[e.name]} (epoch {epoch}), global features", feats, labels))
    tsne_figure(panels, train_src.classes, out / "tsne.png", seed=seed,
                title=f"t-SNE of the synthetic test split ({len(test_src)} images, {num_classes} classes)")
    timings["figures"] = time.time() - t0

    # ---- 4. training cost relative to supervised -------------------------------------------------------------------
    cost_result = None
    if cost:
        log(f"[4/{n_steps}] training cost per step relative to supervised training", flush=True)
        t0 = time.time()
        cost_result = measure(cfg, batch_size=cfg.optim.batch_size, warmup=2, repeats=3 if quick else 8,
                              device=cfg.train.device)
        timings["training cost"] = time.time() - t0

    # ---- 5. report -----------------------------------------------------------------------------------------------
    log(f"[{n_steps}/{n_steps}] writing the report", flush=True)
    timings["total"] = time.time() - start
    report = write_report(out, cfg, methods, results, raw, cost_result, timings, quick, command)
    summary = {"results": results, "raw_pixel_knn": raw, "cost": cost_result, "timings": timings,
               "seed": seed, "quick": quick, "methods": methods, "config": cfg.to_dict(), "report": str(report),
               "versions": {"cgh": __version__, "torch": torch.__version__, "python": platform.python_version()}}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the small variant the tests run (under a minute)")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<date>-<time>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=["cgh", "ressl", "mocov2"], choices=["cgh", "ressl", "mocov2"])
    p.add_argument("--no-cost", action="store_true", help="skip the training-cost measurement")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo preset")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"demo directory {out} already exists and is not empty; choose another --out")
    command = "cgh demo" + (" --quick" if args.quick else "") + (f" --seed {args.seed}" if args.seed else "")
    summary = run_demo(out, quick=args.quick, seed=args.seed, methods=args.methods, overrides=args.overrides,
                       cost=not args.no_cost, command=command)
    r = summary["results"]
    print()
    print(f"{'encoder':<14}{'kNN':>8}{'linear':>9}{'hypercol.':>11}{'NMI':>7}")
    for name in ["random", *summary["methods"]]:
        x = r[name]
        print(f"{METHOD_LABELS[name]:<14}{x['knn_top1']:>7.1f}%{x['linear_global']:>8.1f}%"
              f"{x['linear_hypercolumn']:>10.1f}%{x['nmi']:>7.1f}")
    print(f"{'raw pixels':<14}{summary['raw_pixel_knn']:>7.1f}%")
    print(f"\nreport: {summary['report']} (and report.html), {summary['timings']['total'] / 60:.1f} minutes")
    sys.stdout.flush()
    return 0 if all(math.isfinite(v) for x in r.values() for v in x.values() if isinstance(v, float)) else 1
