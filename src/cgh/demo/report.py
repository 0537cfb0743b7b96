"""The report of ``cgh demo`` (cgh.demo): a list of blocks rendered to Markdown (report.md) and HTML (report.html).

    write_report(out, cfg, methods, summary, ...)   report.md and report.html from the demo's summary
    describe_data(cfg, train_src, test_src)         what the report says about the data
    METHOD_LABELS, METRICS, METRIC_LABELS           the names the report (and the demo's table) print
"""

from __future__ import annotations

import html
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from cgh import __version__
from cgh.config import Config, to_yaml
from cgh.train.cost import format_table
from cgh.wording import counted

# What the long-budget study measured at this scale (benchmarks/long_budget.md, issue 24), said wherever CGH is shown.
SMALL_SCALE = (" At this scale CGH does not beat ReSSL: on 32-px patches of ten real photographs, 3 seeds, the two are "
               "level at 40 epochs, at 120 epochs ReSSL leads on kNN on every seed (74.3 ± 0.3 against 72.6 ± 0.4 "
               "%) and at 200 by more (72.5 ± 0.8 against 69.4 ± 2.3 %), and no setting of CGH's hypercolumn "
               "context closed the gap (benchmarks/long_budget.md). The paper's claim, CGH ahead of ReSSL (70.5 "
               "against 69.3 % linear top-1), was made with a ResNet-50 trained for 200 epochs on ImageNet at 224 px.")
METHOD_LABELS = {"random": "random init", "mocov2": "MoCo-v2", "ressl": "ReSSL", "cgh": "CGH", "byol": "BYOL",
                 "simsiam": "SimSiam", "simclr": "SimCLR"}
METRICS = ("knn_top1", "linear_global", "linear_hypercolumn", "nmi", "cluster_acc")
METRIC_LABELS = {"knn_top1": "kNN", "linear_global": "linear (global)", "linear_hypercolumn": "linear (hypercolumn)",
                 "nmi": "k-means NMI", "cluster_acc": "k-means acc."}
DATASET_TITLES = {"synthetic": "synthetic data", "digits": "scikit-learn digits"}


def run_name(method: str, seed: int, n_seeds: int) -> str:
    """The run directory name under runs/: the method, with the seed when there are several."""
    return method if n_seeds == 1 else f"{method}-s{seed}"


def pm(mean: float, std: float | None, signed: bool = False) -> str:
    """``mean ± std``, or the bare mean for one seed (where a sample std does not exist)."""
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text if std is None else f"{text} ± {std:.1f}"


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
    """One complete sentence on each method's kNN against raw pixels, whichever side each lies on (it ended in "CGH,
    ReSSL, MoCo-v2 are not, in this budget" when none was above)."""
    above = [METHOD_LABELS[m] for m in methods if results[m]["knn_top1"] > raw]
    below = [METHOD_LABELS[m] for m in methods if results[m]["knn_top1"] <= raw]
    clauses = []
    if above:
        clauses.append(f"{_and(above)} {'is' if len(above) == 1 else 'are'} above it")
    if below:
        clauses.append(f"{_and(below)} {'is' if len(below) == 1 else 'are'} at or below it in this budget")
    return f"**Raw pixels** give {raw:.1f}% with the same kNN: " + "; ".join(clauses) + "."


def _and(names: list[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe_data(cfg: Config, train_src, test_src) -> dict[str, Any]:
    """What the report says about the data, taken from the opened sources (not from the config's synthetic_*)."""
    return {"name": cfg.data.name, "train": len(train_src), "test": len(test_src),
            "classes": len(train_src.classes), "image_size": int(train_src.images.shape[-1])}


def _data_sentence(data: dict[str, Any]) -> str:
    sizes = (f"{counted(data['train'], 'training image')} and {counted(data['test'], 'test image')} of "
             f"{data['image_size']} px")
    if data["name"] == "synthetic":
        return (f"the built-in synthetic dataset ({sizes}, {counted(data['classes'], 'class')} defined by shape and "
                f"texture; colour, position, scale, rotation and background are random nuisances)")
    if data["name"] == "digits":
        return (f"scikit-learn's handwritten digits, a real dataset ({sizes}, enlarged from 8x8 scans, "
                f"{counted(data['classes'], 'class')}, a fixed stratified split)")
    return f"the {data['name']} dataset ({sizes}, {counted(data['classes'], 'class')})"




def _neighbour_blocks(neighbours: dict[str, Any] | None, methods: list[str], seed: int, n_seeds: int) -> list[tuple]:
    """The nearest-neighbour section: one grid per method (cgh.demo.neighbour_grids), with its precision@k."""
    if not neighbours or not neighbours.get("methods"):
        return []
    k, grids = neighbours["k"], neighbours["methods"]
    shown = [m for m in methods if m in grids]
    precision = ", ".join(f"{METHOD_LABELS[m]} {grids[m]['precision_at_k']:.1f}%" for m in shown)
    blocks: list[tuple] = [
        ("h", 2, "Nearest neighbours"),
        ("p", f"{neighbours['num_queries']} test images (left; the same for every method, drawn with seed "
              f"{neighbours['seed']}) and the {k} training images nearest to each in the method's pooled backbone "
              f"features (cosine, the similarity the kNN classifier votes with)"
              f"{f', runs of seed {seed} (the first seed) only' if n_seeds > 1 else ''}. A green frame marks a "
              f"neighbour of the query's "
              f"class, a red one another class. **Precision@{k}** (the share of green frames): {precision}. "
              f"`cgh neighbors CHECKPOINT` draws the same grid for any run."),
    ]
    for m in shown:
        blocks.append(("img", grids[m]["file"], f"{METHOD_LABELS[m]}: nearest neighbours"))
    return blocks


def write_report(out: Path, cfg: Config, methods: list[str], summary: dict[str, Any], cost: dict[str, Any] | None,
                 timings: dict[str, float], quick: bool, command: str, run_config: Config) -> Path:
    """``summary``: results (means), std, results_by_seed, gain_over_random, raw_pixel_knn, seeds and data.
    ``run_config``: the config of the first seed's CGH run, printed in full."""
    results, std, by_seed = summary["results"], summary["std"], summary["results_by_seed"]
    raw, seeds, data = summary["raw_pixel_knn"], summary["seeds"], summary["data"]
    n = len(seeds)
    title = DATASET_TITLES.get(data["name"], data["name"])
    names = ["random"] + methods
    rows = [[METHOD_LABELS[e]] + [pm(results[e][m], std[e][m]) for m in METRICS] for e in names]
    rows.append(["raw pixels", f"{raw:.1f}", "-", "-", "-", "-"])
    gains = summary["gain_over_random"]

    def gain_cell(g: dict[str, Any]) -> str:
        return pm(g["mean"], g["std"], signed=True) + (f" (min {g['min']:+.1f})" if n > 1 else "")

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
               f"{'were each' if len(methods) > 1 else 'was'} pretrained for {counted(o.epochs, 'epoch')} "
               f"({counted(steps, 'step')} of {counted(o.batch_size, 'image')}) on {_data_sentence(data)}, with a "
               f"{cfg.model.arch} of "
               f"width {cfg.model.width} ({cfg.model.stem} stem), from the same initial weights, {seed_text}. "
               f"Evaluation uses the pooled backbone features (kNN: k={cfg.train.knn_k}, T={cfg.train.knn_t}; "
               f"linear probe: 100 epochs on frozen features; k-means with {counted(data['classes'], 'cluster')} on "
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
              f"their early training, not a reproduction of the paper's ImageNet results "
              "(docs/method.md#headline-numbers lists "
              f"those)." + (SMALL_SCALE if "cgh" in methods else "")),
        ("h", 2, "kNN accuracy against epoch"),
        ("p", f"The kNN monitor of each run (pooled backbone features, evaluated on the test split), {first}; "
              f"epoch 0 is the shared random initialisation. Compare the supplementary's Fig. 2."),
        ("img", "curves.png", "kNN top-1 and loss against epoch"),
        ("h", 2, "t-SNE of the test features"),
        ("p", f"Pooled backbone features of the test images, one panel per encoder, seed {seeds[0]}"
              f"{' (the first seed) only' if n > 1 else ''} (compare the supplementary's Fig. 3)."),
        ("img", "tsne.png", "t-SNE panels"),
    ]
    blocks += _neighbour_blocks(summary.get("neighbours"), methods, seeds[0], n)
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
    runs = [f"`runs/{run_name(x, s, n)}`" for s in seeds for x in methods]
    blocks += [
        ("h", 2, "Time spent"),
        ("table", ["step", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]),
        ("h", 2, "Environment"),
        ("list", [f"cgh {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
                  f"{platform.platform()}",
                  f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, device "
                  f"{'cuda' if torch.cuda.is_available() and cfg.train.device != 'cpu' else 'cpu'}"]),
        ("h", 2, "Configuration (CGH run" + (f", seed {seeds[0]}; the other seeds differ only in seed" if n > 1
                                             else "") + "; the baselines differ only in method.name)"),
        ("code", to_yaml(run_config)),
        ("p", "Reproduce: `" + command + "`. Runs: " + ", ".join(runs) + "."),
    ]
    (out / "report.md").write_text(_md(blocks), encoding="utf-8")
    (out / "report.html").write_text(_html(blocks, "cgh demo report"), encoding="utf-8")
    return out / "report.md"
