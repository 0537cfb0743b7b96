"""The six sections of a config (cgh.config.Config): every key with its default and, in its docstring, its source.

Defaults are the authors' ImageNet numbers (docs/method.md#imagenet-recipe) unless a docstring says otherwise; the
presets in ``configs/`` carry the per-dataset numbers with their provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    name: str = "synthetic"
    """Dataset: cifar10, cifar100, stl10, tinyimagenet, imagenet, imagenet100, folder, npz, synthetic or digits
    (scikit-learn's handwritten digits, a small real dataset that needs no download)."""
    path: str = ""
    """Dataset root or file (unused for synthetic). folder/npz paths may contain {split}; a folder whose sub-folders
    are train/, val/ and/or test/ is read as a folder of splits (data.folder_splits)."""
    folder_splits: bool = True
    """folder: read a data.path whose every sub-folder is named train, val or test as a folder of splits
    (PATH/train/<class>/..., PATH/val/<class>/...); false: as classes named train and val (cgh 0.1's reading)."""
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
    """Decoding workers per process for file datasets (in-memory datasets need none); at most one per CPU the process
    may use (os.sched_getaffinity), whatever is asked."""
    prefetch_factor: int = 2
    """File datasets: batches each decoding worker prepares ahead (torch DataLoader's prefetch_factor, its default)."""
    jpeg_draft: bool = True
    """File datasets: decode a JPEG at 1/2, 1/4 or 1/8 of its size when every crop drawn from it still spans its output
    size at that scale (libjpeg's DCT scaling, Pillow's draft mode) and resample the crops from there. The crop boxes
    are unchanged and the crops differ from the full decode's by resampling noise only; large photographs decode
    several times faster (benchmarks/folder_loader.md). false: always decode fully."""
    corrupt: str = "skip"
    """Undecodable images: 'skip' (replace in the batch, count, report at epoch end) or 'error' (stop)."""
    eval_train_split: str = "train"
    """Labelled split used as the kNN memory bank and the probe's training set (STL-10: train,
    docs/method.md#quirk-knn-monitor)."""
    eval_test_split: str = "auto"
    """Labelled split on which kNN / probe accuracy is measured. auto: the dataset's own held-out split (ImageNet,
    Tiny-ImageNet: val; CIFAR, STL-10, digits, synthetic: test; a folder or {split} npz: test where it has one, else
    val)."""
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
    """cgh, ressl, mocov2, byol, simsiam or simclr."""
    feat_dim: int = 512
    """Output of the global projection head (docs/method.md#global-head: 512)."""
    hid_dim: int = 4096
    """Hidden width of the projection MLPs (docs/method.md#global-head: 4096)."""
    pred_hid_dim: int = 4096
    """BYOL and SimSiam: hidden width of the predictor MLP (BYOL Sec. 3.3: 4096; SimSiam's official code: 512)."""
    fix_pred_lr: bool = False
    """SimSiam: keep the predictor at the initial (scaled) learning rate while the rest follows the schedule (the
    official main_simsiam.py's --fix-pred-lr, which its README's recipe uses)."""
    pred_lr_scale: float = 1.0
    """BYOL and SimSiam: the predictor's learning rate as a multiple of the rest's, on top of the schedule (or of the
    fixed lr with ``fix_pred_lr``). 1 in every published recipe; Tian, Chen and Ganguli (ICML 2021, "Understanding
    self-supervised learning dynamics without contrastive pairs") study the predictor's relative learning rate as a
    factor of these methods' dynamics."""
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
    """InfoNCE temperature: MoCo-v2's loss and CGH's warm-up terms (docs/method.md#infonce-warmup: 0.2); SimCLR's
    NT-Xent temperature (SimCLR: 0.1 on ImageNet, 0.5 on CIFAR-10)."""
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
    hyper_weight: float = 0.5
    """CGH: the weight of L_hyper after the InfoNCE warm-up (docs/method.md#loss-weights: the authors' 0.5); during
    it, alpha x this. > 0; method.hyper_from_global=false switches the direction off."""
    csist_weight: float = 0.5
    """CGH: the weight of L_csist after the InfoNCE warm-up (docs/method.md#loss-weights: the authors' 0.5); during
    it, alpha x this. > 0; method.global_from_hyper=false switches the direction off."""
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
    algorithm: str = "sgd"
    """'sgd' (the authors, MoCo, ReSSL, SimSiam) or 'lars' (BYOL, SimCLR: SGD with momentum whose update of each
    parameter is scaled by lars_eta * |w| / |g + wd w|, cgh.optim.lars). Under LARS the parameters that
    wd_exclude_norm_bias exempts from weight decay are exempt from the scaling too, as in BYOL's and SimCLR's code."""
    lars_eta: float = 0.001
    """LARS trust coefficient (BYOL and SimCLR: 1e-3)."""
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
    """Autocast dtype: 'auto' (bf16 on a GPU that supports it, else none), 'none', 'bf16' or 'fp16' (GradScaler,
    which reads its overflow flag back from the GPU every step, by design: the one per-step wait bf16 does not have)."""
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
    """Write a step record to metrics.jsonl every this many steps. Between these points a step reads nothing back
    from the device: the loss sums stay there, a non-finite loss is noticed at the next point (and always before a
    checkpoint), and under several processes a stop signal is agreed on at these points and at epoch ends, so a
    SIGTERM stops a torchrun job within this many steps (one process stops after the current step)."""
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
    """Progress bar on rank 0, when stderr is a terminal (redirected output gets the epoch lines only)."""
    max_steps: int = 0
    """Stop after this many steps in total (0: run all epochs). For smoke tests; schedules still span all epochs."""
    tensorboard: bool = True
    """Also log every metrics.jsonl record to TensorBoard in RUN/tb/ (when the tensorboard package is installed)."""
    wandb: str = ""
    """Also log to this Weights & Biases project ('' = off; needs the wandb package; WANDB_MODE=offline works)."""
    online_probe: bool = False
    """Train a linear classifier on the teacher's detached pooled features of each batch and report its test top-1
    every epoch (cgh.train.online_probe; needs a labelled pretraining split; training is bit-identical with it off)."""
    auto_resume: bool = False
    """Resume when out_dir holds a checkpoint, start otherwise (``--resume auto``): one command line to requeue."""
    dist_timeout_s: float = 600.0
    """Under several processes: the longest a collective (a gradient all-reduce, a queue gather, the barrier around a
    checkpoint) waits for a peer before this process gives up with an error naming the lost rank
    (docs/distributed.md#lost-peer). 10 minutes: far above any legitimate wait (rank 0 writing a checkpoint, uneven
    data-loading or compile times at start-up; raise it when those take longer on your filesystem), far below the
    backends' own defaults (gloo 30 min; this key replaces cgh's former 60 min), for which a job whose peer died would
    hang holding its GPUs. A peer that dies on the same node is noticed at once (gloo, or torchrun stops the others)."""
    stop_on_collapse: bool = False
    """Stop the run (with a checkpoint, status 'collapsed', exit status 3) when the collapse diagnostics
    (cgh.model.diagnostics) report a sustained collapse; by default the run only prints a warning."""
