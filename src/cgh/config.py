"""Typed configuration: dataclasses with every default, YAML presets, dotted command-line overrides.

A config is built as ``defaults <- preset YAML <- key=value overrides``. Unknown keys are errors that suggest the
nearest valid key; values are checked against the field's type and then against ``validate()``'s rules. The resolved
config is written to every run directory and stored in every checkpoint.

Defaults here are the authors' ImageNet numbers (docs/method.md#imagenet-recipe) unless a comment says otherwise; the
presets in ``configs/`` carry the per-dataset numbers with their provenance.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cgh.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "synthetic"
    """Dataset: cifar10, cifar100, stl10, tinyimagenet, imagenet, imagenet100, folder, npz, synthetic or digits
    (scikit-learn's handwritten digits, a small real dataset that needs no download)."""
    path: str = ""
    """Dataset root or file (unused for synthetic). folder/npz paths may contain {split}."""
    split: str = "train"
    """Pretraining split (STL-10: train+unlabeled, as the authors do, docs/method.md#small-datasets)."""
    image_size: int = 224
    """Side of the global crops in pixels (docs/method.md#imagenet-recipe: 224; 32 for CIFAR, 64 for STL-10 and
    Tiny-ImageNet, docs/method.md#small-datasets)."""
    mean: list[float] = field(default_factory=list)
    """Normalisation mean; empty = the dataset's own (cgh.augment.NORMALIZATION)."""
    std: list[float] = field(default_factory=list)
    """Normalisation std; empty = the dataset's own."""
    num_workers: int = 8
    """Decoding workers per process for file datasets (in-memory datasets need none)."""
    corrupt: str = "skip"
    """Undecodable images: 'skip' (replace in the batch, count, report at epoch end) or 'error' (stop)."""
    eval_train_split: str = "train"
    """Labelled split used as the kNN memory bank and the probe's training set (STL-10: train,
    docs/method.md#quirk-knn-monitor)."""
    eval_test_split: str = "test"
    """Labelled split on which kNN / probe accuracy is measured (ImageNet, Tiny-ImageNet: val)."""
    synthetic_size: int = 10000
    """Synthetic data: images in the train split."""
    synthetic_test_size: int = 2000
    """Synthetic data: images in the test split."""
    synthetic_classes: int = 10
    """Synthetic data: number of classes."""
    synthetic_image_size: int = 32
    """Synthetic data: side of the generated images in pixels."""
    synthetic_seed: int = 0
    """Synthetic data: generator seed (independent of the training seed)."""


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    """resnet18, resnet34, resnet50 or resnet101 (docs/method.md#backbone)."""
    stem: str = "imagenet"
    """'imagenet' (7x7/2 + max-pool) or 'cifar' (3x3/1, no max-pool; the authors use it for CIFAR only)."""
    width: int = 64
    """Base width (torchvision: 64). Narrower networks train faster on a CPU; only 64 exports to torchvision."""
    bn_mode: str = "auto"
    """BatchNorm across the batch. 'split': SplitBatchNorm with bn_splits chunks per process and a shuffled teacher
    batch (the authors' single-GPU mode); 'shuffle': plain BN per process, teacher batch shuffled across processes
    (the authors' DDP mode, MoCo's Shuffle-BN); 'sync': SyncBatchNorm, no shuffle; 'plain': plain BN, no shuffle;
    'auto': split on one process, shuffle on several."""
    bn_splits: int = 8
    """Chunks per process in 'split' mode (MoCo CIFAR demo and the authors: 8, docs/method.md#backbone). 1 process with
    W splits normalises exactly as W processes in 'shuffle' mode."""
    zero_init_residual: bool = False
    """Zero the last BN of each residual block (torchvision's option; not used by the authors)."""


@dataclass
class MethodConfig:
    name: str = "cgh"
    """cgh, ressl or mocov2."""
    feat_dim: int = 512
    """Output of the global projection head (docs/method.md#global-head: 512)."""
    hid_dim: int = 4096
    """Hidden width of the projection MLPs (docs/method.md#global-head: 4096)."""
    head_bn: bool = False
    """BatchNorm after the hidden layer of the projection MLPs (global and hypercolumn), as in MoCo v3, BYOL and
    solo-learn's ReSSL. The authors' heads have none (docs/method.md#global-head): off in the paper presets. The demo
    turns it on: in short CPU runs it lets the relational methods leave their nearly collinear initial features much
    sooner."""
    hyper_dim: int = 512
    """Output of the hypercolumn head (docs/method.md#hypercolumn-head: 512)."""
    queue_size: int = 131072
    """K, slots per queue (docs/method.md#queues: 131072 = 65536*2 on ImageNet). Must be a multiple of the global
    batch."""
    momentum: float = 0.999
    """Teacher EMA momentum m (docs/method.md#student-teacher: 0.999 constant on ImageNet)."""
    momentum_schedule: str = "constant"
    """'constant' (the authors) or 'cosine' (m rises to 1 along a cosine over training, BYOL-style)."""
    temperature: float = 0.2
    """InfoNCE temperature: MoCo-v2's loss and CGH's warm-up terms (docs/method.md#infonce-warmup: 0.2)."""
    temp_teacher_global: float = 0.04
    """tau_t of the global teacher's relations (docs/method.md#cross-context-losses: hard-coded 0.04 in the authors'
    loss; ReSSL's value)."""
    temp_student_global: float = 0.1
    """tau_s of the global student's relations (docs/method.md#cross-context-losses: hard-coded 0.1; ReSSL's value)."""
    temp_teacher_hyper: float = 0.08
    """tau_t of the hypercolumn teacher's relations (docs/method.md#cross-context-losses: config temp_t = 0.08)."""
    temp_student_hyper: float = 0.08
    """tau_s of the hypercolumn student's relations (docs/method.md#cross-context-losses: config temp_s = 0.08)."""
    loss_warmup_epochs: int = 5
    """CGH: epochs of the InfoNCE warm-up with the per-iteration ramp (docs/method.md#loss-weights: 5). 0 disables
    it."""
    loss_warmup_min_steps: int = 0
    """A floor in steps under the InfoNCE warm-up: it lasts max(loss_warmup_epochs x steps per epoch, this). The
    authors' 5 epochs are ~975 steps on CIFAR and ~25,000 on ImageNet, but a handful on a small dataset, too few to
    spread the features before the relation terms take over (benchmarks/relational_study.md). 0: the authors'."""
    ressl_warmup: bool = False
    """ReSSL: ramp from InfoNCE into the relation loss over the same warm-up as CGH. A DEPARTURE from the official
    ReSSL (no warm-up); the ReSSL journal version adds an InfoNCE warm-up for robustness."""
    hyper_layers: list[str] = field(default_factory=lambda: ["layer3", "layer4"])
    """Stages stacked into the hypercolumn (docs/method.md#hypercolumn-head: layer3, layer4); any subset of
    layer1..layer4."""
    hyper_resize: str = "bilinear"
    """How stages are brought to one size: 'bilinear' (the authors, no antialias) or 'avgpool' (adaptive average)."""
    hyper_target: str = "last"
    """Spatial size to stack at: that of the 'last' listed stage (the authors) or the 'first'."""
    hyper_scale: bool = False
    """Multiply each stage by its kappa (layer1 1/16 .. layer4 1) before stacking; dead code in the authors' repo."""
    hyper_l2norm: bool = False
    """L2-normalise each stage over channels before stacking; commented out in the authors' repo."""
    context: str = "cross"
    """'cross' (CGH: each context learns from the other's teacher) or 'same' (ablation: each from its own)."""
    hyper_from_global: bool = True
    """The L_hyper direction: the hypercolumn student learns from the global teacher
    (docs/method.md#cross-context-losses cl_hyper)."""
    global_from_hyper: bool = True
    """The L_csist direction: the global student learns from the hypercolumn teacher
    (docs/method.md#cross-context-losses csist)."""
    centering: bool = False
    """Subtract a running per-slot mean from the teacher's relation logits (docs/method.md#centering; off as in the
    authors' config; the authors' single-GPU sum-instead-of-mean bug is fixed)."""
    center_momentum: float = 0.9
    """EMA factor of the centre (docs/method.md#centering: 0.9)."""
    num_local: int = 0
    """Multi-crop: number of strong local crops (docs/method.md#multi-crop and docs/method.md#multi-crop-views: 4 when
    on, 0 = off)."""
    hyper_bn: str = "split"
    """BN of the hypercolumn head: 'split' (the backbone's BN splits, so one process with W splits computes what W
    processes compute) or 'plain' (one BN over the whole per-process batch: the authors' single-GPU code, whose
    backbone uses 8 splits while this head normalises all 256 images together)."""


@dataclass
class AugConfig:
    teacher_view: str = "auto"
    """The teacher's view: 'auto' = the method's own recipe (weak crop + flip for ReSSL and CGH,
    docs/method.md#weak-view; strong for MoCo-v2's two views). 'weak' / 'strong' may be written out, but a value that
    contradicts the method is rejected."""
    weak_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    """RandomResizedCrop area range of the weak view (docs/method.md#weak-view)."""
    strong_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    """RandomResizedCrop area range of the strong view (docs/method.md#strong-view)."""
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])
    """ColorJitter brightness, contrast, saturation, hue (docs/method.md#strong-view)."""
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    """Gaussian blur probability (docs/method.md#strong-view: 0.5; MoCo's CIFAR demo uses no blur)."""
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    """Blur sigma range in pixels at 224 px (docs/method.md#strong-view)."""
    blur_relative: bool = True
    """Scale the blur sigma by image_size/224, so small images are not erased by a 2 px blur."""
    flip_p: float = 0.5


@dataclass
class OptimConfig:
    epochs: int = 200
    """Pretraining epochs (docs/method.md#imagenet-recipe: 200)."""
    batch_size: int = 256
    """Global batch over all processes (docs/method.md#imagenet-recipe: 256); each process gets batch_size /
    world_size."""
    lr: float = 0.05
    """Base learning rate at lr_ref_batch; the effective lr is lr * batch_size / lr_ref_batch
    (docs/method.md#imagenet-recipe: 0.05)."""
    lr_ref_batch: int = 256
    """Reference batch of the linear lr scaling rule (docs/method.md#imagenet-recipe: 256)."""
    momentum: float = 0.9
    weight_decay: float = 1e-4
    """docs/method.md#imagenet-recipe: 1e-4 on ImageNet; 5e-4 in the small-data recipe
    (docs/method.md#small-datasets)."""
    wd_exclude_norm_bias: bool = True
    """No weight decay on norm layers and biases, chosen by module type (docs/method.md#quirk-weight-decay fixes the
    authors' name match)."""
    warmup_epochs: int = 5
    """Linear lr warm-up from 0, per iteration (docs/method.md#imagenet-recipe: 5)."""
    schedule: str = "cosine"
    """'cosine' (per iteration to 0 after the warm-up, docs/method.md#imagenet-recipe), 'cosine_epoch' (the same,
    constant within an epoch: MoCo's schedule), 'step' (x0.1 at milestones) or 'constant'."""
    milestones: list[int] = field(default_factory=lambda: [120, 160])
    """Epochs of the 'step' schedule (docs/method.md#imagenet-recipe)."""


@dataclass
class TrainConfig:
    device: str = "auto"
    """'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'."""
    amp: str = "auto"
    """Autocast dtype: 'auto' (bf16 on a GPU that supports it, else none), 'none', 'bf16' or 'fp16' (GradScaler)."""
    channels_last: bool = True
    """Channels-last memory format on GPU (ignored on CPU)."""
    compile: bool = False
    """torch.compile the student and teacher (opt-in)."""
    deterministic: bool = False
    """Deterministic algorithms (cuDNN, scatter); slower, for exact reproduction."""
    ckpt_every: int = 10
    """Write checkpoints/last.pt every this many epochs (and at the end)."""
    ckpt_every_steps: int = 0
    """Also write checkpoints/last.pt every this many steps within an epoch (0: off). Resume is exact mid-epoch."""
    keep_every: int = 100
    """Keep a numbered copy checkpoints/epoch_NNNN.pt every this many epochs (0: none)."""
    log_every: int = 50
    """Write a step record to metrics.jsonl every this many steps."""
    knn_every: int = 10
    """Run the kNN monitor every this many epochs and at the end (0: never)."""
    knn_k: int = 20
    """kNN monitor neighbours (docs/evaluation.md#knn-monitor: 20; MoCo's CIFAR demo: 200)."""
    knn_t: float = 0.07
    """kNN monitor temperature (docs/evaluation.md#knn-monitor: 0.07; MoCo's CIFAR demo: 0.1)."""
    knn_features: str = "backbone"
    """kNN monitor features: 'backbone' (pooled, as in kNN evaluation) or 'projection' (the MLP output, as the
    authors' monitor and the supplementary's Fig. 2)."""
    knn_max_train: int = 0
    """Use at most this many memory-bank images in the monitor (0: all), to keep it cheap on big datasets."""
    progress: bool = True
    """Progress bar on rank 0."""
    max_steps: int = 0
    """Stop after this many steps in total (0: run all epochs). For smoke tests; schedules still span all epochs."""
    tensorboard: bool = True
    """Also log every metrics.jsonl record to TensorBoard in RUN/tb/ (when the tensorboard package is installed)."""
    wandb: str = ""
    """Also log to this Weights & Biases project ('' = off; needs the wandb package; WANDB_MODE=offline works)."""
    online_probe: bool = False
    """Train a linear classifier on the teacher's detached pooled features of each batch and report its test top-1
    every epoch (cgh.online_probe; needs a labelled pretraining split; training is bit-identical with it off)."""
    auto_resume: bool = False
    """Resume when out_dir holds a checkpoint, start otherwise (``--resume auto``): one command line to requeue."""
    stop_on_collapse: bool = False
    """Stop the run (with a checkpoint, status 'collapsed', exit status 3) when the collapse diagnostics
    (cgh.diagnostics) report a sustained collapse; by default the run only prints a warning."""


@dataclass
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    """Seed of the model initialisation, the data order and the augmentations."""
    out_dir: str = ""
    """Run directory; empty = runs/<preset>-<method>-<timestamp>."""
    preset: str = ""
    """Name of the preset this config started from (informational)."""
    recipe: str = ""
    """Whose numbers these are, with their source: the preset's ``recipe`` line for the method (informational)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, world_size: int = 1) -> None:
        """Check values a type check cannot: ranges, names, divisibility. Raises ConfigError naming the key."""
        check = _Checker()
        m, mo, d, o, t, a = self.method, self.model, self.data, self.optim, self.train, self.aug
        from cgh.backbone import ARCHS, STAGE_NAMES, STEMS  # the tables that define the choices
        from cgh.methods import METHODS
        from cgh.schedule import LR_SCHEDULES
        from cgh.views import aug_problems

        check.choice("method.name", m.name, tuple(METHODS))
        check.choice("model.arch", mo.arch, tuple(ARCHS))
        check.choice("model.stem", mo.stem, STEMS)
        check.choice("model.bn_mode", mo.bn_mode, ("auto", "split", "shuffle", "sync", "plain"))
        check.choice("method.momentum_schedule", m.momentum_schedule, ("constant", "cosine"))
        check.choice("method.hyper_resize", m.hyper_resize, ("bilinear", "avgpool"))
        check.choice("method.hyper_target", m.hyper_target, ("last", "first"))
        check.choice("method.context", m.context, ("cross", "same"))
        check.choice("method.hyper_bn", m.hyper_bn, ("split", "plain"))
        check.choice("aug.teacher_view", a.teacher_view, ("auto", "weak", "strong"))
        own_view = METHODS[m.name].teacher_view if m.name in METHODS else a.teacher_view
        if a.teacher_view not in ("auto", own_view):
            check.fail("aug.teacher_view", a.teacher_view,
                       f"'auto' or {own_view!r}: {m.name}'s teacher view is {own_view} (cgh.methods)")
        check.choice("optim.schedule", o.schedule, LR_SCHEDULES)
        check.choice("train.amp", t.amp, ("auto", "none", "bf16", "fp16"))
        check.choice("train.knn_features", t.knn_features, ("backbone", "projection"))
        check.choice("data.corrupt", d.corrupt, ("skip", "error"))
        for key in ("temperature", "temp_teacher_global", "temp_student_global", "temp_teacher_hyper",
                    "temp_student_hyper"):
            check.positive(f"method.{key}", getattr(m, key))
        check.positive("optim.lr", o.lr)
        check.positive("train.knn_t", t.knn_t)
        for key in ("feat_dim", "hid_dim", "hyper_dim", "queue_size"):
            check.positive(f"method.{key}", getattr(m, key))
        for key in ("epochs", "batch_size", "lr_ref_batch"):
            check.positive(f"optim.{key}", getattr(o, key))
        check.positive("data.image_size", d.image_size)
        check.positive("model.width", mo.width)
        check.positive("model.bn_splits", mo.bn_splits)
        check.positive("train.knn_k", t.knn_k)
        for key in ("num_workers",):
            check.non_negative(f"data.{key}", getattr(d, key))
        for key in ("warmup_epochs",):
            check.non_negative(f"optim.{key}", getattr(o, key))
        check.non_negative("optim.weight_decay", o.weight_decay)
        check.non_negative("method.loss_warmup_epochs", m.loss_warmup_epochs)
        check.non_negative("method.loss_warmup_min_steps", m.loss_warmup_min_steps)
        check.non_negative("method.num_local", m.num_local)
        for key in ("ckpt_every", "ckpt_every_steps", "keep_every", "knn_every", "knn_max_train", "max_steps"):
            check.non_negative(f"train.{key}", getattr(t, key))
        check.positive("train.log_every", t.log_every)
        check.unit_interval("method.momentum", m.momentum)
        check.unit_interval("method.center_momentum", m.center_momentum)
        check.unit_interval("optim.momentum", o.momentum)
        for key, value, expected in aug_problems(**{k: getattr(a, k) for k in (
                "jitter", "jitter_p", "grayscale_p", "blur_p", "blur_sigma", "flip_p", "weak_scale", "strong_scale")}):
            check.fail(f"aug.{key}", value, expected)
        for key in ("mean", "std"):
            v = getattr(d, key)
            if v and (len(v) != 3 or (key == "std" and min(v) <= 0)):
                check.fail(f"data.{key}", v,
                           "empty (the dataset's own) or three numbers" + (" > 0" if key == "std" else ""))
        if not m.hyper_layers or len(set(m.hyper_layers)) != len(m.hyper_layers):
            check.fail("method.hyper_layers", m.hyper_layers,
                       f"a non-empty list of distinct names from {list(STAGE_NAMES)}")
        for s in m.hyper_layers:
            if s not in STAGE_NAMES:
                check.fail("method.hyper_layers", m.hyper_layers,
                           f"names from {list(STAGE_NAMES)}; {s!r} is not a stage" + _suggest(s, STAGE_NAMES))
        if m.num_local and m.name == "mocov2":
            check.fail("method.num_local", m.num_local, "0 for mocov2 (multi-crop is defined for ReSSL and CGH)")
        if m.num_local > 4:
            check.fail("method.num_local", m.num_local, "at most 4 (docs/method.md#multi-crop-views defines four local "
                                                        "crop sizes)")
        if o.milestones != sorted(o.milestones):
            check.fail("optim.milestones", o.milestones, "increasing epochs")
        if o.warmup_epochs >= o.epochs and o.schedule == "cosine" and o.epochs > 1:
            check.fail("optim.warmup_epochs", o.warmup_epochs, f"fewer than optim.epochs ({o.epochs})")
        # Divisibility: the batch splits across processes, then across BN chunks; the queue advances by the global
        # batch each step and wraps exactly (docs/method.md#queues asserts K % B == 0;
        # docs/method.md#quirk-queue-divisibility). A zero size was reported above.
        if o.batch_size % world_size:
            check.fail("optim.batch_size", o.batch_size, f"a multiple of the number of processes ({world_size})")
        per_process = o.batch_size // world_size
        mode = resolve_bn_mode(mo.bn_mode, world_size)
        if mode == "split" and mo.bn_splits > 0 and per_process % mo.bn_splits:
            check.fail("model.bn_splits", mo.bn_splits,
                       f"a divisor of the per-process batch ({per_process} = optim.batch_size / processes)")
        if o.batch_size > 0 and m.queue_size % o.batch_size:
            check.fail("method.queue_size", m.queue_size,
                       f"a multiple of the global batch optim.batch_size ({o.batch_size}); e.g. "
                       f"{max(1, round(m.queue_size / o.batch_size)) * o.batch_size}")
        check.raise_if_any()


def resolve_bn_mode(mode: str, world_size: int) -> str:
    """'auto' -> 'split' on one process (the authors' single-GPU SplitBN), 'shuffle' on several (their DDP mode)."""
    if mode == "auto":
        return "split" if world_size == 1 else "shuffle"
    return mode


class _Checker:
    def __init__(self):
        self.errors: list[str] = []

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{key} = {value!r}: expected {expected}")

    def choice(self, key: str, value: Any, options: tuple) -> None:
        if value not in options:
            self.fail(key, value, f"one of {list(options)}" + _suggest(str(value), options))

    def positive(self, key: str, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            self.fail(key, value, "a positive finite number")

    def non_negative(self, key: str, value: float) -> None:
        if not (value >= 0 and math.isfinite(value)):
            self.fail(key, value, "a finite number >= 0")

    def unit_interval(self, key: str, value: float) -> None:
        if not 0 <= value <= 1:
            self.fail(key, value, "a number in [0, 1]")

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(self.errors))


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------------------------------------------
# Building a config: defaults <- preset/YAML <- overrides
# ----------------------------------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("cgh.configs").iterdir() if p.name.endswith(".yaml"))


def read_yaml(source: str) -> tuple[dict[str, Any], str]:
    """The mapping in a preset (by name) or a YAML file (by path), and the preset's name ('' for a file)."""
    if source.endswith((".yaml", ".yml")) or "/" in source or Path(source).is_file():
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text, name = path.read_text(encoding="utf-8"), ""
    else:
        res = resources.files("cgh.configs").joinpath(f"{source}.yaml")
        if not res.is_file():
            raise ConfigError(f"unknown preset {source!r}; presets: {', '.join(preset_names())}"
                              + _suggest(source, preset_names()))
        text, name = res.read_text(encoding="utf-8"), source
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {source} as YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config sections, got {type(data).__name__}")
    return data, name


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "method.hyper_layers=[layer3,layer4]"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.epochs=10")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is a value, not a section")
        node[parts[-1]] = value
    return out


def load_config(source: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the preset or YAML file ``source`` with its recipe for the chosen method, then ``key=value``
    overrides.

    A preset states one recipe per method: its body is CGH's (with a top-level ``recipe:`` line naming the source)
    and ``recipes: {mocov2: {...}, ressl: {...}}`` holds what each baseline's own paper changes, each with its own
    ``recipe:`` line. The method is the overrides' ``method.name``, else the preset's."""
    cfg = Config()
    parsed = parse_overrides(overrides) if overrides else {}
    if source:
        data, name = read_yaml(source)
        recipes = data.pop("recipes", None) or {}
        if not isinstance(recipes, dict):
            raise ConfigError(f"{source}: recipes must map method names to config sections, got {recipes!r}")
        merge(cfg, data, source)
        method = (parsed.get("method") or {}).get("name", cfg.method.name) if isinstance(parsed.get("method"), dict) \
            else cfg.method.name
        if method in recipes:
            merge(cfg, recipes[method], f"{source} (recipes.{method})")
        cfg.preset = cfg.preset or name
    if parsed:
        merge(cfg, parsed, "command line")
    return cfg


def config_from_dict(data: dict[str, Any], origin: str = "checkpoint") -> Config:
    cfg = Config()
    merge(cfg, data, origin)
    return cfg


def merge(obj: Any, data: dict[str, Any], origin: str, prefix: str = "") -> None:
    """Set the fields of dataclass ``obj`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            candidates = [f"{prefix}{k}" for k in fields] + _all_keys(Config())
            raise ConfigError(f"{origin}: unknown config key {full!r}" + _suggest(full, candidates))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            merge(current, value, origin, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full, origin))


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        keys += _all_keys(v, f"{prefix}{f.name}.") if dataclasses.is_dataclass(v) else [f"{prefix}{f.name}"]
    return keys


def _coerce(value: Any, hint: Any, key: str, origin: str) -> Any:
    def bad(expected: str):
        return ConfigError(f"{origin}: {key} = {value!r}: expected {expected}")

    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad("a string")
        return str(value)
    origin_type = typing.get_origin(hint)
    if origin_type is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and item is not str:
            value = [value]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list of {item.__name__}")
        return [_coerce(v, item, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if isinstance(hint, types.UnionType):
        raise bad(str(hint))
    raise bad(str(hint))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None, width=120)
