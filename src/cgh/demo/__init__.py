"""The demo, ``cgh demo`` (cgh.commands.demo): the main job on a fresh machine.

On the built-in synthetic dataset (or, with ``--dataset digits``, scikit-learn's handwritten digits), on the CPU,
it pretrains CGH and, with the same budget and the same initial weights, ReSSL and MoCo-v2 (preset ``demo``);
evaluates each (kNN, linear probe on global and on hypercolumn features, k-means clustering) against the same encoder
at random initialisation and against raw pixels; and writes a report into the run directory. With ``--seeds N`` all
of this is repeated for N training seeds and the report gives mean +- std over them:

    report.md / report.html   results table, ranking with margins, kNN-vs-epoch curves, t-SNE panels side by side,
                              a nearest-neighbour grid per method,
                              the training-cost table relative to supervised training, seeds, config and versions
    results.json              every number of the report, each seed's and the aggregated ones
    curves.png, tsne.png      the figures (of the first seed)
    neighbors_<method>.png    per method, NEIGHBOUR_QUERIES test images and their NEIGHBOUR_K nearest training images
                              (first seed; the same queries for every method)
    runs/<method>/            each pretraining run (config.yaml, metrics.jsonl, checkpoints/last.pt);
                              runs/<method>-s<seed>/ with several seeds

``--quick`` is the variant the tests run: a smaller dataset and fewer epochs (under a minute on 2 CPU cores),
which shows the pipeline end to end, not a meaningful comparison.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cgh import __version__
from cgh.augment import dataset_normalization
from cgh.checkpoints.pretrained import PretrainedBackbone, load_backbone, random_init_backbone
from cgh.config import Config, load_config
from cgh.data import open_split
from cgh.demo.report import METHOD_LABELS, METRICS, describe_data, run_name, write_report
from cgh.errors import ConfigError
from cgh.wording import counted

# Overrides of the demo preset for each dataset, applied before QUICK and the user's overrides (other scripts import
# this dict). Digits has 1300 training images: a queue of 512 (the preset's 1024 would hold most of them) and 40
# epochs of 20 steps (800 steps; the synthetic demo runs 1280).
DEMO_DATASETS = {"synthetic": [], "digits": ["data.name=digits", "method.queue_size=512", "optim.epochs=40",
                                             "train.knn_every=5"]}

DEMO_METHODS = ("cgh", "ressl", "mocov2")  # pretrained in this order, each against the same random init (the default)
ALL_METHODS = (*DEMO_METHODS, "byol", "simsiam", "simclr")  # what --methods may add
# The report's nearest-neighbour grid of each method: this many test images, each with its k nearest training images.
NEIGHBOUR_QUERIES, NEIGHBOUR_K = 6, 8

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


def method_config(base: Config, method: str, run_dir: Path, recipe: Config | None = None) -> Config:
    """The demo config for one method: the same data, model, budget and seed (each method brings its own views,
    ``aug.teacher_view=auto``). ``recipe``: the demo config loaded with ``method.name=method`` (the preset's
    ``recipes:`` entry, then the same overrides), whose method and optimiser sections replace the base's: BYOL, SimSiam
    and SimCLR need their own heads and optimiser (cgh/configs/demo.yaml); the others have no entry and keep the
    base's."""
    cfg = copy.deepcopy(base)
    if recipe is not None:
        cfg.method, cfg.optim, cfg.recipe = copy.deepcopy(recipe.method), copy.deepcopy(recipe.optim), recipe.recipe
    cfg.method.name = method
    cfg.out_dir = str(run_dir)
    return cfg


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
    out["train_features"] = (tr, ytr)
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



def neighbour_grids(out: Path, encoders: list[Encoder], train_features: dict, test_features: dict, train_src,
                    test_src, cfg: Config, seed: int) -> dict[str, Any]:
    """One nearest-neighbour grid per method (``neighbors_<method>.png``) from the features already extracted for the
    evaluation: NEIGHBOUR_QUERIES test images drawn with ``seed`` (the same for every method), their NEIGHBOUR_K
    most cosine-similar training images. Returns what the report and results.json say about them."""
    from cgh.evaluate.neighbors import nearest_neighbours, neighbours_figure, select_queries

    query_index = select_queries(len(test_src), min(NEIGHBOUR_QUERIES, len(test_src)), seed)
    k = min(NEIGHBOUR_K, len(train_src))
    grids: dict[str, Any] = {}
    for e in encoders:
        (bank, bank_labels), (queries, query_labels) = train_features[e.name], test_features[e.name]
        result = nearest_neighbours(bank, bank_labels, queries[query_index], query_labels[query_index], k,
                                    query_index=query_index)
        name = f"neighbors_{e.name}.png"
        neighbours_figure(result, test_src, train_src, out / name, image_size=cfg.data.image_size,
                          title=f"{METHOD_LABELS[e.name]} (epoch {e.model.info.get('epoch', 0)}), global features: "
                                f"test images and their nearest training images")
        found = result.to_dict()
        grids[e.name] = {"file": name, "precision_at_k": found["precision_at_k"], "queries": found["queries"]}
    return {"k": k, "num_queries": len(query_index), "seed": seed, "features": "global",
            "query_index": query_index.tolist(), "methods": grids}


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




def run_demo(out: Path, quick: bool = False, seed: int = 0, methods: list[str] | None = None,
             overrides: list[str] | None = None, cost: bool = True, command: str = "cgh demo",
             log=print, seeds: int = 1, dataset: str = "synthetic") -> dict[str, Any]:
    """Run the whole demo into ``out`` for the training seeds seed, seed+1, ..., seed+seeds-1; returns the results
    written to results.json."""
    from cgh.demo.report import DATASET_TITLES
    from cgh.evaluate.plot import plot_curves
    from cgh.evaluate.tsne import tsne_figure
    from cgh.train import pretrain
    from cgh.train.cost import METHOD_NAMES, measure

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected at least one seed")
    if dataset not in DEMO_DATASETS:
        raise ConfigError(f"unknown demo dataset {dataset!r}; expected one of {', '.join(DEMO_DATASETS)}")
    methods = methods or list(DEMO_METHODS)
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
        run_dir = out / "runs" / run_name(name, s, n)
        recipe = demo_config(quick, seed, [f"method.name={name}", *(overrides or [])], dataset)
        pretrain(method_config(configs[s], name, run_dir, recipe), overwrite=True)
        timings[f"pretrain {run_name(name, s, n)}"] = time.time() - t0
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
        encoders[s].insert(0, Encoder("random", random_init_backbone(configs[s])))  # = each run's start
        by_seed[str(s)] = {e.name: evaluate_encoder(e, train_src, test_src, configs[s], num_classes, log)
                           for e in encoders[s]}
    raw = raw_pixel_knn(train_src, test_src, num_classes, cfg.train.knn_k, cfg.train.knn_t)
    log(f"  {'raw pixels':<12} kNN {raw:5.1f}%")
    timings["evaluation"] = time.time() - t0

    # ---- 3. figures, of the first seed ----------------------------------------------------------------------------
    log(f"[3/{n_steps}] figures: kNN curves, t-SNE and nearest neighbours", flush=True)
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
                title=f"t-SNE of the {title} test split ({counted(len(test_src), 'image')}, "
                      f"{counted(num_classes, 'class')})"
                      + (f", seed {s0}" if n > 1 else ""))
    train_features = {s: {e: r.pop("train_features") for e, r in by_seed[str(s)].items()} for s in seed_list}
    neighbours = neighbour_grids(out, first, train_features[s0], test_features[s0], train_src, test_src, cfg, s0)
    timings["figures"] = time.time() - t0

    # ---- 4. training cost relative to supervised (does not depend on the seed) ------------------------------------
    cost_result = None
    if cost:
        log(f"[4/{n_steps}] training cost per step relative to supervised training", flush=True)
        t0 = time.time()
        cost_result = measure(cfg, ("supervised", *(m for m in METHOD_NAMES if m in methods)),
                              batch_size=cfg.optim.batch_size, warmup=2, repeats=3 if quick else 8,
                              device=cfg.train.device)
        timings["training cost"] = time.time() - t0

    # ---- 5. report -----------------------------------------------------------------------------------------------
    log(f"[{n_steps}/{n_steps}] writing the report", flush=True)
    timings["total"] = time.time() - start
    results, std = aggregate(by_seed)
    # results has the one-seed shape (the means over seeds); every seed's numbers are in results_by_seed
    summary = {"results": results, "std": std, "results_by_seed": by_seed,
               "gain_over_random": gains_over_random(by_seed, methods), "raw_pixel_knn": raw,
               "neighbours": neighbours, "cost": cost_result, "timings": timings, "seed": seed_list[0],
               "seeds": seed_list, "quick": quick,
               "dataset": dataset, "data": data, "methods": methods, "config": cfg.to_dict(),
               "versions": {"cgh": __version__, "torch": torch.__version__, "python": platform.python_version()}}
    run_config = method_config(configs[seed_list[0]], "cgh", out / "runs" / run_name("cgh", seed_list[0], n))
    summary["report"] = str(write_report(out, cfg, methods, summary, cost_result, timings, quick, command,
                                         run_config))
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=float), encoding="utf-8")
    return summary
