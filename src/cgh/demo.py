"""``cgh demo``: the main job on a fresh machine.

On the built-in synthetic dataset (or, with ``--dataset digits``, scikit-learn's handwritten digits), on the CPU,
it pretrains CGH and, with the same budget and the same initial weights, ReSSL and MoCo-v2 (preset ``demo``);
evaluates each (kNN, linear probe on global and on hypercolumn features, k-means clustering) against the same encoder
at random initialisation and against raw pixels; and writes a report into the run directory. With ``--seeds N`` all
of this is repeated for N training seeds and the report gives mean +- std over them:

    report.md / report.html   results table, ranking with margins, kNN-vs-epoch curves, t-SNE panels side by side,
                              the training-cost table relative to supervised training, seeds, config and versions
    results.json              every number of the report, each seed's and the aggregated ones
    curves.png, tsne.png      the figures (of the first seed)
    runs/<method>/            each pretraining run (config.yaml, metrics.jsonl, checkpoints/last.pt);
                              runs/<method>-s<seed>/ with several seeds

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
import statistics
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
METRICS = ("knn_top1", "linear_global", "linear_hypercolumn", "nmi", "cluster_acc")
METRIC_LABELS = {"knn_top1": "kNN", "linear_global": "linear (global)", "linear_hypercolumn": "linear (hypercolumn)",
                 "nmi": "k-means NMI", "cluster_acc": "k-means acc."}

# Overrides of the demo preset for each dataset, applied before QUICK and the user's overrides (other scripts import
# this dict). Digits has 1300 training images: a queue of 512 (the preset's 1024 would hold most of them) and 40
# epochs of 20 steps (800 steps; the synthetic demo runs 1280).
DEMO_DATASETS = {"synthetic": [], "digits": ["data.name=digits", "method.queue_size=512", "optim.epochs=40",
                                             "train.knn_every=5"]}
DATASET_TITLES = {"synthetic": "synthetic data", "digits": "scikit-learn digits"}

# The quick variant: enough to exercise every step, in under a minute on 2 cores (the tests run it). Its warm-up is
# one epoch without the preset's floor of 600 steps, so that its 48 steps reach the relation losses.
QUICK = ["data.synthetic_size=1024", "data.synthetic_test_size=512", "optim.epochs=3", "optim.warmup_epochs=1",
         "method.loss_warmup_epochs=1", "method.loss_warmup_min_steps=0", "method.queue_size=512", "train.knn_every=1"]


@dataclass
class Encoder:
    name: str  # "random" or a method name
    model: PretrainedBackbone
    run_dir: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def demo_config(quick: bool, seed: int, overrides: list[str], dataset: str = "synthetic") -> Config:
    # QUICK after the dataset's overrides, so that the quick variant stays quick on every dataset
    cfg = load_config("demo", DEMO_DATASETS[dataset] + (QUICK if quick else []) + [f"seed={seed}", *overrides])
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


def _pm(mean: float, std: float | None, signed: bool = False) -> str:
    """``mean ± std``, or the bare mean for one seed (where a sample std does not exist)."""
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text if std is None else f"{text} ± {std:.1f}"


def aggregate(by_seed: dict[str, dict[str, dict[str, float]]]) -> tuple[dict, dict]:
    """Per encoder and metric, the mean and the sample std over seeds (None for one seed)."""
    runs = list(by_seed.values())
    mean = {e: {m: statistics.fmean(r[e][m] for r in runs) for m in METRICS} for e in runs[0]}
    std = {e: {m: statistics.stdev(r[e][m] for r in runs) if len(runs) > 1 else None for m in METRICS}
           for e in runs[0]}
    return mean, std


def gains_over_random(by_seed: dict[str, dict[str, dict[str, float]]], methods: list[str]) -> dict:
    """Each method's gain over its own seed's random-init encoder: per seed, mean, std and the worst seed."""
    out: dict[str, dict[str, Any]] = {}
    for name in methods:
        out[name] = {}
        for metric in METRICS:
            g = [r[name][metric] - r["random"][metric] for r in by_seed.values()]
            out[name][metric] = {"mean": statistics.fmean(g), "std": statistics.stdev(g) if len(g) > 1 else None,
                                 "min": min(g), "by_seed": g}
    return out


def _ranking(results: dict[str, dict[str, Any]], methods: list[str], metric: str, label: str,
             by_seed: dict[str, dict[str, dict[str, float]]]) -> str:
    """The ranking on the means over seeds, saying in words each baseline that CGH does not beat."""
    n = len(by_seed)
    order = sorted(methods, key=lambda m: -results[m][metric])
    ranked = ", ".join(f"{METHOD_LABELS[m]} {results[m][metric]:.1f}%" for m in order)
    line = f"**{label}**{f' (mean of {n} seeds)' if n > 1 else ''}: {ranked}"
    if "cgh" in methods and len(methods) > 1:
        others = sorted((m for m in methods if m != "cgh"), key=lambda m: -results[m][metric])
        gap = {m: results["cgh"][metric] - results[m][metric] for m in others}
        behind, ahead = [m for m in others if gap[m] <= 0], [m for m in others if gap[m] > 0]
        if not behind:
            line += f"; CGH leads the best baseline ({METHOD_LABELS[others[0]]}) by {gap[others[0]]:.1f} points"
            line += "".join(f" and {METHOD_LABELS[m]} by {gap[m]:.1f}" for m in others[1:])
        else:
            line += "; CGH does **not** beat " + " or ".join(
                f"{METHOD_LABELS[m]} ({abs(gap[m]):.1f} points behind)" for m in behind) + " on this data"
            if ahead:
                line += "; it is ahead of " + " and ".join(f"{METHOD_LABELS[m]} by {gap[m]:.1f}" for m in ahead)
        if n > 1:  # a mean margin smaller than the spread between seeds is not a ranking: count the seeds
            line += "; seeds where CGH is ahead: " + ", ".join(
                f"{sum(r['cgh'][metric] > r[m][metric] for r in by_seed.values())} of {n} against "
                f"{METHOD_LABELS[m]}" for m in others)
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


def describe_data(cfg: Config, train_src, test_src) -> dict[str, Any]:
    """What the report says about the data, taken from the opened sources (not from the config's synthetic_*)."""
    return {"name": cfg.data.name, "train": len(train_src), "test": len(test_src),
            "classes": len(train_src.classes), "image_size": int(train_src.images.shape[-1])}


def _data_sentence(data: dict[str, Any]) -> str:
    sizes = f"{data['train']} training and {data['test']} test images of {data['image_size']} px"
    if data["name"] == "synthetic":
        return (f"the built-in synthetic dataset ({sizes}, {data['classes']} classes defined by shape and texture; "
                f"colour, position, scale, rotation and background are random nuisances)")
    if data["name"] == "digits":
        return (f"scikit-learn's handwritten digits, a real dataset ({sizes}, enlarged from 8x8 scans, "
                f"{data['classes']} classes, a fixed stratified split)")
    return f"the {data['name']} dataset ({sizes}, {data['classes']} classes)"


def _run_name(method: str, seed: int, n_seeds: int) -> str:
    return method if n_seeds == 1 else f"{method}-s{seed}"


def write_report(out: Path, cfg: Config, methods: list[str], summary: dict[str, Any], cost: dict[str, Any] | None,
                 timings: dict[str, float], quick: bool, command: str) -> Path:
    """``summary``: results (means), std, results_by_seed, gain_over_random, raw_pixel_knn, seeds and data."""
    from cgh.cost import format_table

    results, std, by_seed = summary["results"], summary["std"], summary["results_by_seed"]
    raw, seeds, data = summary["raw_pixel_knn"], summary["seeds"], summary["data"]
    n = len(seeds)
    title = DATASET_TITLES.get(data["name"], data["name"])
    names = ["random"] + methods
    rows = [[METHOD_LABELS[e]] + [_pm(results[e][m], std[e][m]) for m in METRICS] for e in names]
    rows.append(["raw pixels", f"{raw:.1f}", "-", "-", "-", "-"])
    gains = summary["gain_over_random"]

    def gain_cell(g: dict[str, Any]) -> str:
        return _pm(g["mean"], g["std"], signed=True) + (f" (min {g['min']:+.1f})" if n > 1 else "")

    gain_rows = [[METHOD_LABELS[e]] + [gain_cell(gains[e][m]) for m in METRICS] for e in methods]
    o = cfg.optim
    steps = data["train"] // o.batch_size * o.epochs  # the pretraining loader drops the last partial batch
    seed_text = (f"seed {seeds[0]}" if n == 1 else
                 f"{n} seeds ({', '.join(map(str, seeds))}; each seed's runs share that seed's initial weights)")
    blocks: list[tuple] = [
        ("h", 1, f"cgh demo report: {title}" + (" (quick variant)" if quick else "")),
        ("p", f"Written {datetime.now().strftime('%Y-%m-%d %H:%M')} by `{command}` in "
              f"{timings['total'] / 60:.1f} minutes. Every number below was measured in this run."),
        ("p", (f"**Setup.** {', '.join(METHOD_LABELS[x] for x in methods)} "
               f"{'were each' if len(methods) > 1 else 'was'} pretrained for {o.epochs} epochs "
               f"({steps} steps of {o.batch_size} images) on {_data_sentence(data)}, with a {cfg.model.arch} of "
               f"width {cfg.model.width} ({cfg.model.stem} stem), from the same initial weights, {seed_text}. "
               f"Evaluation uses the pooled backbone features (kNN: k={cfg.train.knn_k}, T={cfg.train.knn_t}; "
               f"linear probe: 100 epochs on frozen features; k-means with {data['classes']} clusters on "
               f"the test split) and, for the hypercolumn probe, the pooled stack of layer3 and layer4.")),
    ]
    if quick:
        blocks.append(("p", "**This is the quick variant** (a smaller dataset, a few epochs): it checks that every "
                            "step runs; its numbers say little about the methods. Run `make demo` (or this command "
                            "without `--quick`) for the full one."))
    single_seed = ["**One seed cannot rank these methods**: between training seeds the same method's numbers move "
                   "by several points, more than most margins below. Run `cgh demo --seeds 3` (or more) for "
                   "means and spreads."] if n == 1 else []
    blocks += [
        ("h", 2, "Results (test split, top-1 %" + (f", mean ± sample std over {n} seeds)" if n > 1 else ")")),
        ("table", ["encoder", *METRIC_LABELS.values()], rows),
        ("h", 3, "Gain over the random-init encoder (points" + (", mean ± std, worst seed)" if n > 1 else ")")),
        ("p", "Each method against the random-init encoder of its own seed (the weights it started from)."),
        ("table", ["method", *METRIC_LABELS.values()], gain_rows),
        ("h", 3, "Ranking"),
        ("list", single_seed
         + [_ranking(results, methods, "knn_top1", "kNN", by_seed),
            _ranking(results, methods, "linear_global", "Linear probe, global features", by_seed),
            _ranking(results, methods, "linear_hypercolumn", "Linear probe, hypercolumn features", by_seed)]
         + [f"Hypercolumn vs global linear probe for {METHOD_LABELS[e]}: "
            f"{results[e]['linear_hypercolumn'] - results[e]['linear_global']:+.1f} points "
            f"(the supplementary's Table 1 reports +0.3 for CGH on ImageNet)." for e in methods if e == "cgh"]
         + [_against_raw(results, methods, raw)]),
    ]
    if n > 1:
        blocks.append(("h", 3, "Per seed (top-1 %)"))
        for metric in ("knn_top1", "linear_global", "linear_hypercolumn"):
            blocks += [("p", f"**{METRIC_LABELS[metric]}**"),
                       ("table", ["encoder", *(f"seed {s}" for s in seeds)],
                        [[METHOD_LABELS[e]] + [f"{by_seed[str(s)][e][metric]:.1f}" for s in seeds] for e in names])]
        blocks.append(("p", f"Raw-pixel kNN ({raw:.1f}%) is the same for every seed: the data does not depend on the "
                            f"training seed."))
    first = f"seed {seeds[0]} only" + ("; the other seeds' curves are in `runs/<method>-s<seed>/metrics.jsonl` "
                                       "(`cgh plot` draws them)" if n > 1 else "")
    blocks += [
        ("p", f"These are small, short CPU runs on {title}: a check that the methods learn and a picture of "
              f"their early training, not a reproduction of the paper's ImageNet results (SPEC section 8 lists "
              f"those)."),
        ("h", 2, "kNN accuracy against epoch"),
        ("p", f"The kNN monitor of each run (pooled backbone features, evaluated on the test split), {first}; "
              f"epoch 0 is the shared random initialisation. Compare the supplementary's Fig. 2."),
        ("img", "curves.png", "kNN top-1 and loss against epoch"),
        ("h", 2, "t-SNE of the test features"),
        ("p", f"Pooled backbone features of the test images, one panel per encoder, seed {seeds[0]}"
              f"{' (the first seed) only' if n > 1 else ''} (compare the supplementary's Fig. 3)."),
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
    first_cfg = copy.deepcopy(cfg)
    first_cfg.seed = seeds[0]
    runs = [f"`runs/{_run_name(x, s, n)}`" for s in seeds for x in methods]
    blocks += [
        ("h", 2, "Time spent"),
        ("table", ["step", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]),
        ("h", 2, "Environment"),
        ("list", [f"cgh {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
                  f"{platform.platform()}",
                  f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, device "
                  f"{'cuda' if torch.cuda.is_available() and cfg.train.device != 'cpu' else 'cpu'}"]),
        ("h", 2, "Configuration (CGH run" + (f", seed {seeds[0]}; the other seeds differ only in seed" if n > 1
                                             else "") + "; the baselines differ only in method.name and "
                                                        "aug.teacher_view)"),
        ("code", to_yaml(method_config(first_cfg, "cgh", out / "runs" / _run_name("cgh", seeds[0], n)))),
        ("p", "Reproduce: `" + command + "`. Runs: " + ", ".join(runs) + "."),
    ]
    (out / "report.md").write_text(_md(blocks), encoding="utf-8")
    (out / "report.html").write_text(_html(blocks, "cgh demo report"), encoding="utf-8")
    return out / "report.md"


# ----------------------------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------------------------


def run_demo(out: Path, quick: bool = False, seed: int = 0, methods: list[str] | None = None,
             overrides: list[str] | None = None, cost: bool = True, command: str = "cgh demo",
             log=print, seeds: int = 1, dataset: str = "synthetic") -> dict[str, Any]:
    """Run the whole demo into ``out`` for the training seeds seed, seed+1, ..., seed+seeds-1; returns the results
    written to results.json."""
    from cgh.cost import measure
    from cgh.evaluate.plot import plot_curves
    from cgh.evaluate.tsne import tsne_figure
    from cgh.train import open_split, pretrain

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected at least one seed")
    if dataset not in DEMO_DATASETS:
        raise ConfigError(f"unknown demo dataset {dataset!r}; expected one of {', '.join(DEMO_DATASETS)}")
    methods = methods or ["cgh", "ressl", "mocov2"]
    start = time.time()
    timings: dict[str, float] = {}
    cfg = demo_config(quick, seed, overrides or [], dataset)
    seed_list = [cfg.seed + i for i in range(seeds)]  # from cfg.seed, so that a seed=... override counts too
    configs = {s: copy.deepcopy(cfg) for s in seed_list}
    for s, c in configs.items():
        c.seed = s
    n = len(seed_list)
    out.mkdir(parents=True, exist_ok=True)
    n_steps = 4 + bool(cost)

    # ---- 1. pretraining, same budget and initial weights for every method (of one seed) -----------------------
    encoders: dict[int, list[Encoder]] = {s: [] for s in seed_list}
    for i, (s, name) in enumerate((s, name) for s in seed_list for name in methods):
        where = "" if n == 1 else f", seed {s}"
        log(f"[1/{n_steps}] pretraining {METHOD_LABELS[name]}{where} ({i + 1}/{n * len(methods)})", flush=True)
        t0 = time.time()
        run_dir = out / "runs" / _run_name(name, s, n)
        pretrain(method_config(configs[s], name, run_dir), overwrite=True)
        timings[f"pretrain {_run_name(name, s, n)}"] = time.time() - t0
        encoders[s].append(Encoder(name, load_backbone(run_dir / "checkpoints" / "last.pt"), run_dir))

    # ---- 2. evaluation against each seed's random-init encoder and raw pixels -----------------------------------
    log(f"[2/{n_steps}] evaluating the encoders (kNN, linear probes, k-means)", flush=True)
    t0 = time.time()
    # the data is the same for every seed (the synthetic set has its own data.synthetic_seed)
    train_src, test_src = open_split(cfg, "train"), open_split(cfg, "test")
    data = describe_data(cfg, train_src, test_src)
    num_classes = data["classes"]
    by_seed: dict[str, dict[str, dict[str, Any]]] = {}
    for s in seed_list:
        if n > 1:
            log(f"  seed {s}")
        encoders[s].insert(0, Encoder("random", random_init_encoder(configs[s])))
        by_seed[str(s)] = {e.name: evaluate_encoder(e, train_src, test_src, configs[s], num_classes, log)
                           for e in encoders[s]}
    raw = raw_pixel_knn(train_src, test_src, num_classes, cfg.train.knn_k, cfg.train.knn_t)
    log(f"  {'raw pixels':<12} kNN {raw:5.1f}%")
    timings["evaluation"] = time.time() - t0

    # ---- 3. figures, of the first seed ----------------------------------------------------------------------------
    log(f"[3/{n_steps}] figures: kNN curves and t-SNE", flush=True)
    t0 = time.time()
    s0, title = seed_list[0], DATASET_TITLES.get(data["name"], data["name"])
    first = [e for e in encoders[s0] if e.run_dir]
    plot_curves([e.run_dir for e in first], out / "curves.png", labels=[METHOD_LABELS[e.name] for e in first],
                title=f"{title[0].upper() + title[1:]}, {cfg.model.arch} width {cfg.model.width}: kNN top-1 and "
                      f"loss per epoch" + (f" (seed {s0} of {n})" if n > 1 else ""))
    test_features = {s: {e: r.pop("test_features") for e, r in by_seed[str(s)].items()} for s in seed_list}
    panels = []
    for e in encoders[s0]:
        feats, labels = test_features[s0][e.name]
        epoch = e.model.info.get("epoch", 0)
        panels.append((f"{METHOD_LABELS[e.name]} (epoch {epoch}), global features", feats, labels))
    tsne_figure(panels, train_src.classes, out / "tsne.png", seed=s0,
                title=f"t-SNE of the {title} test split ({len(test_src)} images, {num_classes} classes)"
                      + (f", seed {s0}" if n > 1 else ""))
    timings["figures"] = time.time() - t0

    # ---- 4. training cost relative to supervised (does not depend on the seed) ------------------------------------
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
    results, std = aggregate(by_seed)
    # results keeps its one-seed shape (the means) for old readers; every seed's numbers are in results_by_seed
    summary = {"results": results, "std": std, "results_by_seed": by_seed,
               "gain_over_random": gains_over_random(by_seed, methods), "raw_pixel_knn": raw,
               "cost": cost_result, "timings": timings, "seed": seed_list[0], "seeds": seed_list, "quick": quick,
               "dataset": dataset, "data": data, "methods": methods, "config": cfg.to_dict(),
               "versions": {"cgh": __version__, "torch": torch.__version__, "python": platform.python_version()}}
    summary["report"] = str(write_report(out, cfg, methods, summary, cost_result, timings, quick, command))
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the small variant the tests run (under a minute)")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<date>-<time>)")
    p.add_argument("--seed", type=int, default=0, help="the first training seed (default 0)")
    p.add_argument("--seeds", type=int, default=1,
                   help="number of training seeds: every method is pretrained and evaluated for seeds --seed, "
                        "--seed + 1, ..., and the report gives mean ± std over them (default 1, which cannot "
                        "rank the methods)")
    p.add_argument("--dataset", default="synthetic", choices=list(DEMO_DATASETS),
                   help="synthetic: the built-in generated set (default); digits: scikit-learn's handwritten "
                        "digits at 32 px, a small real dataset (1300 train / 497 test images)")
    p.add_argument("--methods", nargs="+", default=["cgh", "ressl", "mocov2"], choices=["cgh", "ressl", "mocov2"],
                   help="the methods to pretrain (default all three)")
    p.add_argument("--no-cost", action="store_true", help="skip the training-cost measurement")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo preset")


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this demo, for the report."""
    parts = ["cgh demo"] + (["--quick"] if args.quick else []) + ([f"--seed {args.seed}"] if args.seed else [])
    parts += [f"--seeds {args.seeds}"] if args.seeds != 1 else []
    parts += [f"--dataset {args.dataset}"] if args.dataset != "synthetic" else []
    parts += ["--methods " + " ".join(args.methods)] if args.methods != ["cgh", "ressl", "mocov2"] else []
    parts += ["--no-cost"] if args.no_cost else []
    return " ".join(parts + list(args.overrides))


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"demo directory {out} already exists and is not empty; choose another --out")
    summary = run_demo(out, quick=args.quick, seed=args.seed, methods=args.methods, overrides=args.overrides,
                       cost=not args.no_cost, command=_command(args), seeds=args.seeds, dataset=args.dataset)
    r, sd, seeds = summary["results"], summary["std"], summary["seeds"]
    names = ["random", *summary["methods"]]
    print()
    if len(seeds) == 1:
        print(f"{'encoder':<14}{'kNN':>8}{'linear':>9}{'hypercol.':>11}{'NMI':>7}")
        for name in names:
            x = r[name]
            print(f"{METHOD_LABELS[name]:<14}{x['knn_top1']:>7.1f}%{x['linear_global']:>8.1f}%"
                  f"{x['linear_hypercolumn']:>10.1f}%{x['nmi']:>7.1f}")
        print(f"{'raw pixels':<14}{summary['raw_pixel_knn']:>7.1f}%")
        print("(one seed cannot rank the methods: the spread between seeds is several points; use --seeds 3)")
    else:
        shown = ("knn_top1", "linear_global", "linear_hypercolumn", "nmi")
        print(f"mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))})")
        print(f"{'encoder':<14}" + "".join(f"{x:>15}" for x in ("kNN", "linear", "hypercol.", "NMI")))
        for name in names:
            print(f"{METHOD_LABELS[name]:<14}" + "".join(f"{_pm(r[name][m], sd[name][m]):>15}" for m in shown))
        print(f"{'raw pixels':<14}{summary['raw_pixel_knn']:>15.1f}")
        print("\nper seed, kNN top-1 %")
        print(f"{'encoder':<14}" + "".join(f"{f'seed {s}':>9}" for s in seeds))
        for name in names:
            print(f"{METHOD_LABELS[name]:<14}"
                  + "".join(f"{summary['results_by_seed'][str(s)][name]['knn_top1']:>9.1f}" for s in seeds))
        print("\ngain over random init, kNN (mean ± std, worst seed): " + ", ".join(
            f"{METHOD_LABELS[m]} {_pm(g['mean'], g['std'], signed=True)} (min {g['min']:+.1f})"
            for m, g in ((m, summary["gain_over_random"][m]["knn_top1"]) for m in summary["methods"])))
    print(f"\nreport: {summary['report']} (and report.html), {summary['timings']['total'] / 60:.1f} minutes")
    sys.stdout.flush()
    values = [v for run_ in summary["results_by_seed"].values() for x in run_.values() for v in x.values()]
    return 0 if all(math.isfinite(v) for v in values if isinstance(v, float)) else 1
