"""The pretraining loop (cgh.train.loop) on one CPU process: schedules, records, exact resume, run directories,
non-finite losses, mixed precision, corrupt images, and what resuming refuses.

Killed and signalled processes: tests/system/test_interrupt.py. Old checkpoints resumed:
tests/system/test_resume_compat.py."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cgh.checkpoints.files import load_checkpoint
from cgh.checkpoints.pretrained import load_backbone
from cgh.cli import main
from cgh.errors import CGHError, CheckpointError, ConfigError
from cgh.methods import build_method
from cgh.methods import cgh as cgh_module
from cgh.methods import mocov2 as mocov2_module
from cgh.methods import ressl as ressl_module
from cgh.optim.schedule import lr_at, param_groups
from cgh.train import prepare, pretrain
from cgh.train.run import NonFiniteLossError
from tests.helpers import TINY, files_of, one_error_line, tiny_config


def records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_lr_schedule_follows_spec():
    # docs/method.md#imagenet-recipe: exactly 0 at iteration 0, linear warm-up, then cosine to 0 over the remaining
    # iterations
    kw = dict(base_lr=0.1, warmup_steps=10, total_steps=110, schedule="cosine", milestone_steps=[])
    assert lr_at(0, **kw) == 0.0
    assert lr_at(5, **kw) == pytest.approx(0.05)
    assert lr_at(10, **kw) == pytest.approx(0.1)
    assert lr_at(60, **kw) == pytest.approx(0.05)
    assert lr_at(110, **kw) == pytest.approx(0.0, abs=1e-12)
    step = dict(kw, schedule="step", milestone_steps=[50, 80])
    assert [lr_at(s, **step) for s in (20, 50, 80)] == pytest.approx([0.1, 0.01, 0.001])


def test_weight_decay_excludes_norm_layers_and_biases_by_type():
    from cgh.config import load_config
    from cgh.methods import build_method

    method = build_method(load_config("cifar10", ["model.width=8", "method.hid_dim=16"]))
    decay, no_decay = param_groups(method.student, 5e-4, True)
    ids = {id(p) for p in no_decay["params"]}
    hyper_bn = method.student.hyper.reduce[1]
    downsample_bn = method.student.backbone.layer2[0].downsample[1]
    # docs/method.md#quirk-weight-decay: the authors' name match missed these two BN weights
    assert id(hyper_bn.weight) in ids and id(downsample_bn.weight) in ids
    assert id(method.student.projector[0].bias) in ids and id(method.student.projector[0].weight) not in ids
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 5e-4
    teacher = {id(p) for p in method.teacher.parameters()}
    assert not teacher & (ids | {id(p) for p in decay["params"]})
    assert len(param_groups(method.student, 5e-4, False)) == 1


# each method's lr at batch 64 in the cifar10 preset's recipes: ReSSL's small-data lr 0.06 at 256 (CGH's too), MoCo's
# 0.06 at 512, BYOL's 1.0 and SimCLR's 0.4 at 256 (solo-learn), SimSiam's 0.03 at 256
RECIPE_LR = {"cgh": 0.06 / 256, "ressl": 0.06 / 256, "mocov2": 0.06 / 512, "byol": 1.0 / 256, "simsiam": 0.03 / 256,
             "simclr": 0.4 / 256}
RECIPE_NAME = {"cgh": "CGH", "ressl": "ReSSL", "mocov2": "MoCo-v2", "byol": "BYOL", "simsiam": "SimSiam",
               "simclr": "SimCLR"}


@pytest.mark.parametrize("method", ["cgh", "ressl", "mocov2", "byol", "simsiam", "simclr"])
def test_run_writes_its_directory(tmp_path, method, capsys):
    out = tmp_path / "run"
    result = pretrain(tiny_config(out, f"method.name={method}", "optim.epochs=2", "train.knn_every=1",
                                  "aug.teacher_view=" + ("weak" if method in ("cgh", "ressl") else "strong")))
    assert result.status == "finished" and result.step == 8 and result.epoch == 2
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "last.pt").exists()
    start = records(out, "start")[0]
    assert start["method"] == method and start["bn_mode"] == "split" and start["global_batch"] == 64
    assert start["lr"] == pytest.approx(RECIPE_LR[method] * 64)
    assert start["recipe"].startswith(RECIPE_NAME[method])
    epochs = records(out, "epoch")
    assert [r["epoch"] for r in epochs] == [0, 1, 2] and all("knn_top1" in r for r in epochs)
    for r in epochs[1:]:  # the time spent waiting for the loader, summed over the epoch's steps
        assert 0 <= r["data_time"] <= r["time"] and r["data_share"] == pytest.approx(r["data_time"] / r["time"])
    steps = records(out, "step")
    assert [r["step"] for r in steps] == list(range(1, 9)) and all(math.isfinite(r["loss"]) for r in steps)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"], ckpt["method"]) == (2, 0, 8, method)
    printed = capsys.readouterr().out
    assert "pretraining " + method in printed and "epoch 2/2" in printed and "kNN top-1" in printed
    assert re.search(r"epoch 2/2 .* img/s  data \d+%", printed)


def test_cgh_warmup_weight_is_logged_per_iteration(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "optim.epochs=2"))
    w = [r["w_nce"] for r in records(out, "step")]
    # 4 steps per epoch, loss warm-up of 1 epoch: weights logged after steps 0..7
    assert w == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0])


def state_of(run_dir):
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    return ckpt["model"], ckpt["optimizer"], ckpt["step"]


def assert_same_state(a, b):
    model_a, opt_a, step_a = a
    model_b, opt_b, step_b = b
    assert step_a == step_b
    assert model_a.keys() == model_b.keys()
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
    for pa, pb in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])


# BYOL covers a target with a cosine EMA and LARS's state (SimCLR's state is a student and LARS: nothing more), SimSiam
# the fixed-lr predictor group; two more runs rather than three keep the suite inside its time budget
@pytest.mark.parametrize("split,method", [("mid-epoch", "cgh"), ("epoch-boundary", "cgh"), ("mid-epoch", "byol"),
                                          ("mid-epoch", "simsiam")])
def test_resume_is_exact(tmp_path, split, method):
    """N steps straight == N/2 steps, then resume, then N/2 steps: weights, queues, optimizer, losses (BYOL: its
    target, cosine EMA and LARS; SimSiam: its fixed-lr predictor)."""
    extra = ["optim.epochs=3", "optim.warmup_epochs=1", f"method.name={method}",
             "aug.teacher_view=" + ("weak" if method == "cgh" else "strong")]
    straight = tmp_path / "straight"
    pretrain(tiny_config(straight, *extra))
    half = 6 if split == "mid-epoch" else 4  # 4 steps per epoch
    resumed = tmp_path / "resumed"
    first = pretrain(tiny_config(resumed, *extra, f"train.max_steps={half}"))
    assert first.status == "max_steps" and first.step == half
    ckpt = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert ckpt["step"] == half and ckpt["epoch_step"] == (2 if split == "mid-epoch" else 0)
    second = pretrain(tiny_config(resumed, *extra, "train.max_steps=0"), resume=True)
    assert second.status == "finished" and second.step == 12
    assert_same_state(state_of(straight), state_of(resumed))
    losses = {r["step"]: r["loss"] for r in records(straight, "step")}
    assert {r["step"]: r["loss"] for r in records(resumed, "step")} == losses


def test_resume_refuses_changes_that_break_exactness(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "optim.epochs=1"))
    with pytest.raises(ConfigError, match=r"cannot change optim\.lr when resuming"):
        pretrain(tiny_config(out, "optim.epochs=1", "optim.lr=0.5"), resume=True)


def test_existing_run_directory_is_refused_unless_asked(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "optim.epochs=1"))
    before = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="already exists.*--resume.*--overwrite"):
        pretrain(tiny_config(out, "optim.epochs=1"))
    assert (out / "checkpoints" / "last.pt").read_bytes() == before  # nothing written is lost
    assert pretrain(tiny_config(out, "optim.epochs=1"), overwrite=True).status == "finished"


def test_nonfinite_loss_stops_with_step_and_term_and_keeps_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "optim.epochs=1"))
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 4  # one epoch of 4 steps
    good = files_of(out / "checkpoints")  # the last good checkpoint, byte for byte (and any other file there)
    real = prepare.build_method

    def poisoned(*args, **kwargs):
        method = real(*args, **kwargs)
        forward = method.forward

        def forward_with_nan(views, momentum, step=0, diagnose=False):
            loss, terms = forward(views, momentum, step, diagnose)
            if step == 5:
                terms["csist"] = terms["csist"] * float("nan")
                loss = loss * float("nan")
            return loss, terms

        method.forward = forward_with_nan
        return method

    monkeypatch.setattr(prepare, "build_method", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*csist"):
        pretrain(tiny_config(out, "optim.epochs=3", "train.ckpt_every=1"), resume=True)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4  # the end of epoch 1 (steps 4, 5 ...): step 5 never reached a checkpoint
    # ... and it is the very checkpoint written before the poisoned resume: the failed run neither rewrote it (a
    # re-save at the resume, a save of the NaN state) nor left another file (an epoch copy, a temporary) beside it.
    assert files_of(out / "checkpoints") == good


# ---------------------------------------------------------------------------------------------------------------------
# Resume: the records a killed run left behind
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [0, 4])
def test_resume_drops_the_records_it_will_log_again(tmp_path, step, capsys):
    """What a killed run may leave after its last checkpoint: step and epoch records of later steps, and (on a full
    disk) a line cut short. On resume they go; everything up to the checkpoint's step stays, byte for byte."""
    from cgh.train.rundir import drop_records_after

    kept_all = [{"kind": "start", "method": "cgh"}, {"kind": "epoch", "epoch": 0, "step": 0, "knn_top1": 10.0},
                *({"kind": "step", "epoch": 0, "step": s, "loss": 1.0 / s} for s in range(1, 5)),
                {"kind": "epoch", "epoch": 1, "step": 4, "loss": 0.5}]
    kept = [r for r in kept_all if r.get("step", 0) <= step]
    later = [{"kind": "step", "epoch": 1, "step": s, "loss": 1.0 / s} for s in (5, 6)]
    path = tmp_path / "metrics.jsonl"
    everything = kept_all + later
    path.write_text("".join(json.dumps(r) + "\n" for r in everything) + '{"kind": "step", "ep')
    drop_records_after(path, step)
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in kept)
    assert f"dropped {len(everything) - len(kept) + 1} records" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*tmp*"))


# ---------------------------------------------------------------------------------------------------------------------
# Run directories and checkpoints of other runs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_existing_run_directory_through_the_cli_keeps_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(tiny_config(out, "train.max_steps=1"))
    before = files_of(out)
    capsys.readouterr()  # the first run's own output (a 1-step run warns that it ends inside its warm-up)
    assert main(["pretrain", "cifar10", *TINY, f"out_dir={out}", "train.device=cpu"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert re.match(rf"error: run directory {re.escape(str(out))} already exists and is not empty; pass --resume "
                    rf"to continue it, --overwrite to replace it", err), err
    assert files_of(out) == before  # config.yaml, metrics.jsonl and the checkpoint, byte for byte


@pytest.mark.usefixtures("one_torch_thread")
def test_checkpoint_of_another_method_or_architecture(tmp_path, one_step_runs):
    moco = one_step_runs["mocov2"] / "checkpoints" / "last.pt"
    cgh = one_step_runs["cgh"] / "checkpoints" / "last.pt"
    # Resuming a CGH run from a MoCo-v2 checkpoint: the checkpoint's config says mocov2, the run's says cgh.
    with pytest.raises(ConfigError, match=rf"cannot change method\.name when resuming \('mocov2' in "
                                          rf"{re.escape(str(moco))}, 'cgh' given\)"):
        pretrain(tiny_config(tmp_path / "a", "method.name=cgh", "optim.epochs=1"), resume=moco)
    with pytest.raises(ConfigError, match=rf"cannot change model\.arch when resuming \('resnet18' in "
                                          rf"{re.escape(str(cgh))}, 'resnet34' given\)"):
        pretrain(tiny_config(tmp_path / "b", "model.arch=resnet34", "optim.epochs=1"), resume=cgh)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written

    # A checkpoint whose fields disagree with its own config (edited, or assembled from two runs).
    ckpt = load_checkpoint(cgh)
    relabelled = tmp_path / "relabelled.pt"
    torch.save({**ckpt, "method": "mocov2"}, relabelled)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(relabelled))} holds a 'mocov2' model, but this "
                                              rf"run's method\.name is 'cgh'"):
        pretrain(tiny_config(tmp_path / "c", "optim.epochs=1"), resume=relabelled)
    wider = build_method(tiny_config(tmp_path, "model.width=16")).state_dict()
    mixed = tmp_path / "mixed.pt"
    torch.save({**ckpt, "model": wider}, mixed)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(mixed))} does not fit the configured model"):
        pretrain(tiny_config(tmp_path / "d", "optim.epochs=1"), resume=mixed)
    # load_backbone reads the architecture off the weights (not the config), so the same file is a valid width-16
    # backbone there; a weight of the wrong shape is refused (tests/unit/test_pretrained.py::test_errors_name_the_file).
    assert load_backbone(mixed).info["width"] == 16
    # A MoCo-v2 checkpoint has no hypercolumn head: asking for its features is a one-line error naming the file.
    assert load_backbone(moco).hyper_head is None


@pytest.mark.usefixtures("one_torch_thread")
def test_resuming_into_another_runs_directory_is_refused(tmp_path, one_step_runs, capsys):
    """`--resume OTHER_CKPT out_dir=RUN`: continuing a MoCo-v2 checkpoint into an existing CGH run directory would
    overwrite that run's config.yaml, metrics and checkpoints; it is refused like any non-empty directory."""
    target = tmp_path / "cgh"
    shutil.copytree(one_step_runs["cgh"], target)
    before = {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    moco = one_step_runs["mocov2"] / "checkpoints" / "last.pt"
    assert main(["pretrain", "--resume", str(moco), f"out_dir={target}"]) == 2
    err = capsys.readouterr().err
    assert re.match(rf"error: run directory {re.escape(str(target))} already exists and is not the run of the "
                    rf"checkpoint {re.escape(str(moco))}; pass --overwrite", err), err
    assert {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()} == before


# ---------------------------------------------------------------------------------------------------------------------
# Corrupt images while pretraining
# ---------------------------------------------------------------------------------------------------------------------


def image_folder(root, n=48, bad=()) -> list:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{k:02d}.png")
    paths = []
    for k, how in bad:
        p = root / f"{k:02d}.png"
        p.write_bytes(p.read_bytes()[:60] if how == "truncated" else b"<html>not an image</html>")
        paths.append(str(p))
    return paths


FOLDER = ["data.name=folder", "optim.batch_size=16", "optim.epochs=1"]


@pytest.mark.usefixtures("one_torch_thread")
def test_corrupt_images_are_skipped_counted_and_reported(tmp_path, capsys):
    data = tmp_path / "images"
    bad = image_folder(data, bad=[(5, "truncated"), (17, "text")])
    out = tmp_path / "run"
    result = pretrain(tiny_config(out, *FOLDER, f"data.path={data}"))
    assert result.status == "finished" and result.step == 3  # 48 images / 16: every step ran, batch size kept
    err = capsys.readouterr().err
    line = re.search(r"epoch 1: skipped 2 corrupt images, e\.g\. .*", err)
    assert line and all(p in line.group(0) for p in bad), err
    epochs = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert epochs[-1]["bad_files"] == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_corrupt_image_is_fatal_on_request_and_keeps_the_checkpoint(tmp_path, capsys):
    data = tmp_path / "images"
    image_folder(data)
    out = tmp_path / "run"
    pretrain(tiny_config(out, *FOLDER, f"data.path={data}", "data.corrupt=error"))
    before = files_of(out / "checkpoints")
    bad = image_folder(data, bad=[(9, "truncated")])[0]
    # One more epoch: the corrupt file stops the run with its name; the epoch-1 checkpoint is kept.
    argv = ["pretrain", "--resume", str(out), "optim.epochs=2", "train.device=cpu"]
    assert main(argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert re.match(rf"error: cannot decode image {re.escape(bad)}: ", err), err
    assert files_of(out / "checkpoints") == before
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
    # The user can then continue, skipping the file (data.corrupt may change on resume).
    assert main([*argv, "data.corrupt=skip"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 6


# ---------------------------------------------------------------------------------------------------------------------
# Numerical faults: a non-finite loss through the command line, mixed precision
# ---------------------------------------------------------------------------------------------------------------------


def poison(monkeypatch, at_step: int, term: str) -> None:
    """Make the method's loss (and ``term``) NaN at global step ``at_step``, as a diverging run would."""
    real = prepare.build_method

    def build(*args, **kwargs):
        method = real(*args, **kwargs)
        forward = method.forward

        def forward_with_nan(views, momentum, step=0, diagnose=False):
            loss, terms = forward(views, momentum, step, diagnose)
            if step == at_step:
                terms[term] = terms[term] * float("nan")
                loss = loss * float("nan")
            return loss, terms

        method.forward = forward_with_nan
        return method

    monkeypatch.setattr(prepare, "build_method", build)


@pytest.mark.usefixtures("one_torch_thread")
def test_nonfinite_loss_through_the_cli_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "cifar10", *TINY, "optim.epochs=2", "train.ckpt_every=1", "train.device=cpu", f"out_dir={out}"]
    poison(monkeypatch, at_step=6, term="hyper")  # epoch 2 (4 steps per epoch); the epoch-1 checkpoint is step 4
    assert issubclass(NonFiniteLossError, CGHError) and issubclass(NonFiniteLossError, RuntimeError)
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = out / "checkpoints" / "last.pt"
    assert re.fullmatch(rf"error: non-finite loss at step 6 \(epoch 1; the check covered steps 6-6\): hyper = nan; "
                        rf"training stopped, the last good checkpoint \({re.escape(str(last))}\) is kept\n",
                        err), err
    ckpt = load_checkpoint(last)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 4)
    assert all(math.isfinite(r["loss"]) for r in records(out, "step"))  # the NaN step was never logged
    # Without the fault (e.g. a transient one), --resume carries on from the good checkpoint.
    monkeypatch.undo()
    assert main(["pretrain", "--resume", str(out)]) == 0
    assert load_checkpoint(last)["step"] == 8


class Recorder:
    """Wraps a loss function of a method module, recording its input and output dtypes and the autocast state."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        self.calls.append({"inputs": {t.dtype for t in tensors}, "output": out.dtype,
                           "autocast": torch.is_autocast_enabled("cpu")})
        return out


LOSS_FUNCTIONS = {
    "cgh": (cgh_module, ("relation_logits", "relation_loss", "info_nce")),
    "ressl": (ressl_module, ("relation_logits", "relation_loss")),
    "mocov2": (mocov2_module, ("info_nce",)),
}


def first_losses(tmp_path, method, amp, monkeypatch):
    module, names = LOSS_FUNCTIONS[method]
    recorders = {}
    for name in names:
        recorders[name] = Recorder(getattr(module, name))
        monkeypatch.setattr(module, name, recorders[name])
    out = tmp_path / f"{method}-{amp}"
    result = pretrain(tiny_config(out, f"method.name={method}", f"train.amp={amp}", "train.device=cpu",
                                  "train.max_steps=2", "method.loss_warmup_epochs=1",
                                  "aug.teacher_view=" + ("strong" if method == "mocov2" else "weak")))
    monkeypatch.undo()
    assert result.status == "max_steps" and records(out, "start")[0]["amp"] == {"bf16": "bfloat16",
                                                                                "fp16": "float16",
                                                                                "none": "none"}[amp]
    return records(out, "step"), recorders


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("method", ["cgh", "ressl", "mocov2"])
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_keeps_losses_finite_and_loss_maths_in_float32(tmp_path, monkeypatch, method, amp):
    """CPU autocast: the encoder runs in low precision, but the relation softmaxes (temperatures down to 0.04) and
    InfoNCE run in float32 (cgh/losses.py); the losses stay finite and close to the float32 run's."""
    try:
        steps, recorders = first_losses(tmp_path, method, amp, monkeypatch)
    except (RuntimeError, NotImplementedError) as e:  # pragma: no cover - depends on the CPU build of torch
        if amp == "fp16":
            pytest.skip(f"fp16 autocast is not supported by this CPU build of torch: {e}")
        raise
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    for name, rec in recorders.items():
        assert rec.calls, f"{name} was never called"
        assert all(c["autocast"] for c in rec.calls), name  # really under autocast
        assert all(c["output"] == torch.float32 for c in rec.calls), (name, rec.calls)
    # The features reaching the losses come out of low-precision layers: the test would catch a silent fp32 run.
    assert any(low in c["inputs"] for rec in recorders.values() for c in rec.calls)
    for r in steps:
        assert all(math.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
    reference, _ = first_losses(tmp_path, method, "none", monkeypatch)
    # Step 1 depends only on the initial weights and the first batch: low precision stays close to float32. Measured
    # over seeds 0-4 on an Intel Xeon (bf16 in AMX/AVX-512 kernels): at most 6.0e-3 (ReSSL, bf16; fp16 1.5e-3), a
    # little over bf16's own rounding (2^-8 = 3.9e-3): 0.02 keeps a 3x margin over the worst seed on any CPU.
    assert steps[0]["loss"] == pytest.approx(reference[0]["loss"], rel=0.02)


# What reads a tensor's value on the host from Python: on a GPU each of these waits for the queue of kernels.
HOST_READS = ("item", "__float__", "__bool__", "__int__", "__index__", "tolist", "numpy")
# Reads of tensors that stay on the CPU on every device (no GPU wait): ColorJitter's order, torch.randperm(4).
HOST_ONLY = ("color_jitter",)


def _names_a_device(args, kw) -> bool:
    """Whether a ``Tensor.to`` / ``torch.tensor`` call names a device to put the result on."""
    if kw.get("device") is not None:
        return True
    return any(isinstance(a, (torch.device, str, int, torch.Tensor)) and not isinstance(a, bool) for a in args)


# Factories that make a tensor on the host when no device is named (then a move of it to the device is a copy)
HOST_FACTORIES = ("randperm", "arange", "zeros", "ones", "empty", "full", "rand", "randn", "randint", "linspace", "eye")
# Moves that pin the batch and copy it with non_blocking=True on CUDA (cgh.data.loaders._to_device); on the CPU they
# take their plain branch, a no-op there
NON_BLOCKING_ON_CUDA = ("_to_device",)


def _count_device_moves(monkeypatch, moves: list, caller):
    """Records (as ``caller()``'s tag) every call that, on a GPU, copies host memory to the device and waits: a
    ``Tensor.to`` naming a device of a tensor made on the host by a factory without a device (``torch.randperm(n)``,
    ...), ``Tensor.cuda``, and ``torch.tensor`` / ``torch.as_tensor`` with a device (Python data copied over). A copy
    from pageable memory without ``non_blocking=True`` ends in a stream synchronisation: the host waits for the
    whole kernel queue. On the CPU the move itself is a no-op, so the test looks at the pattern, not at the copy."""
    import traceback
    import weakref

    host_born: dict[int, weakref.ref] = {}

    def where():
        f = traceback.extract_stack(limit=3)[0]
        return f"{f.filename}:{f.lineno} ({f.name})"

    def born_on_host(t) -> bool:
        ref = host_born.get(id(t))
        return ref is not None and ref() is t

    real_to, real_cuda = torch.Tensor.to, torch.Tensor.cuda

    def to(self, *args, **kw):
        if (born_on_host(self) and _names_a_device(args, kw) and not kw.get("non_blocking")
                and traceback.extract_stack(limit=2)[0].name not in NON_BLOCKING_ON_CUDA):
            moves.append((caller(), f"Tensor.to of a tensor made on the host, at {where()}"))
        return real_to(self, *args, **kw)

    def cuda(self, *args, **kw):
        moves.append((caller(), f"Tensor.cuda at {where()}"))
        return real_cuda(self, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.Tensor, "cuda", cuda)
    for name in HOST_FACTORIES:
        real = getattr(torch, name)

        def factory(*args, _real=real, **kw):
            out = _real(*args, **kw)
            if kw.get("device") is None and isinstance(out, torch.Tensor):
                host_born[id(out)] = weakref.ref(out)
            return out

        monkeypatch.setattr(torch, name, factory)
    for name in ("tensor", "as_tensor"):
        real = getattr(torch, name)

        def made(*args, _real=real, _name=name, **kw):
            if kw.get("device") is not None:
                moves.append((caller(), f"torch.{_name}(device=...) at {where()}"))
            return _real(*args, **kw)

        monkeypatch.setattr(torch, name, made)


@pytest.mark.parametrize("method,images", [("cgh", 32), ("ressl", 32), ("mocov2", 32), ("cgh", 48), ("byol", 32),
                                           ("simsiam", 32), ("simclr", 32)])
def test_a_step_between_log_points_never_reads_the_device(tmp_path, monkeypatch, method, images):
    """Counts every Python-level host read of a tensor (``Tensor.item``, ``float(t)``, ``bool(t)``, ...) during each
    step, by the step it happens in. Only the steps with a log point, an epoch end or a checkpoint may read: the
    loss sums, the finiteness flag and the stop signal stay on the device in between. With 48 px images cut to 32 px
    crops the on-device crop follows the path it takes on a GPU, where it may not look at the boxes it drew.

    It counts host-to-device copies too (issue 19): the teacher's Shuffle-BN permutation (the default 'split' BN mode
    shuffles the teacher's batch) was drawn on the CPU and moved with a blocking ``.to(device)`` in the middle of the
    forward pass, and the hue jitter copied its three offsets from Python to the device: each a wait for the kernel
    queue every step that no host read shows. No step between log points may make a tensor on the host and move it to
    the device."""
    import traceback

    import cgh.augment.ops as augment_ops
    import cgh.train.loop as train

    monkeypatch.setattr(augment_ops, "READ_FREE_DEVICES", ())

    current: dict[str, int | None] = {"step": None}
    reads: dict[int | None, list[str]] = {}
    moves: list[tuple[int | None, str]] = []
    real_lr_at = train.lr_at

    def lr_at(step, *args, **kw):  # called once at the start of each step: tags what follows with the step
        current["step"] = step
        return real_lr_at(step, *args, **kw)

    monkeypatch.setattr(train, "lr_at", lr_at)
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kw):
            where = traceback.extract_stack(limit=2)[0]  # the caller of the read
            if where.name not in HOST_ONLY:
                reads.setdefault(current["step"], []).append(f"{_name} at {where.filename}:{where.lineno}")
            return _real(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    _count_device_moves(monkeypatch, moves, lambda: current["step"])
    # 2 epochs of 4 steps; one log point (the last step), epoch ends after steps 3 and 7, one checkpoint at the end
    result = pretrain(tiny_config(tmp_path / "run", f"method.name={method}", "optim.epochs=2",
                                  "train.log_every=1000", "train.ckpt_every=10", "train.keep_every=0",
                                  f"data.synthetic_image_size={images}"))
    monkeypatch.undo()
    assert result.status == "finished" and result.step == 8
    quiet = [0, 1, 2, 4, 5, 6]
    assert {s: reads[s] for s in quiet if s in reads} == {}
    assert reads.get(3) and reads.get(7)  # the epoch ends and the log point do read: the test sees reads
    assert [m for m in moves if m[0] in quiet] == []


def test_the_device_move_counter_sees_a_permutation_made_on_the_host(monkeypatch):
    """The counter of the test above, on the pattern it is there for: the old shuffle, a CPU randperm moved to the
    batch's device (a no-op on the CPU, a blocking copy on a GPU); and the shuffle as it is now passes."""
    from cgh.runtime import dist

    moves: list = []
    _count_device_moves(monkeypatch, moves, lambda: "step")
    x = torch.randn(8, 3)
    torch.randperm(8).to(x.device)
    assert len(moves) == 1 and "Tensor.to of a tensor made on the host" in moves[0][1]
    moves.clear()
    torch.randperm(8, device=x.device).to(x.device)  # made where it is used: no copy
    torch.tensor([1.0, 2.0], device=x.device)  # Python data to the device: a copy
    assert len(moves) == 1 and "torch.tensor(device=...)" in moves[0][1]
    moves.clear()
    y, inverse = dist.shuffle_batch(x)
    torch.testing.assert_close(dist.unshuffle_batch(y, inverse), x)
    assert moves == []


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("method", ["cgh", "ressl", "mocov2"])
def test_a_run_shorter_than_its_warm_up_warns_at_start_and_end(tmp_path, capsys, method):
    """A short CGH or ReSSL run never leaves the InfoNCE warm-up (600 steps in the demo): the banner shows the warm-up
    in steps, and a warning says so when the run starts and when it ends. MoCo-v2 has no warm-up."""
    pretrain(tiny_config(tmp_path / "run", f"method.name={method}", "method.ressl_warmup=true",
                         "method.loss_warmup_min_steps=600", "train.max_steps=2",
                         "aug.teacher_view=" + ("strong" if method == "mocov2" else "weak")))
    captured = capsys.readouterr()
    banner_line = ("  warm-up    InfoNCE -> relation loss over the first 600 steps (max of method.loss_warmup_epochs 1 "
                   "x 4 steps and method.loss_warmup_min_steps 600); the run ends at step 2")
    warnings = [line for line in captured.err.splitlines() if "InfoNCE warm-up" in line]
    if method == "mocov2":
        assert "warm-up " not in captured.out and not warnings
        return
    assert banner_line in captured.out.splitlines()
    assert len(warnings) == 2 and warnings[0].startswith("warning: this run ends at step 2 (train.max_steps = 2)")
    assert warnings[1].startswith("warning: the run ended at step 2, inside its InfoNCE warm-up of 600 steps: its "
                                  "last loss was 100% InfoNCE")
    assert records(tmp_path / "run", "start")[0]["loss_warmup_steps"] == 600


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("method", ["mocov2", "simclr", "byol"])
def test_the_banner_names_a_queue_only_for_the_methods_that_keep_one(tmp_path, capsys, method):
    """SimCLR, BYOL and SimSiam keep no queue: the banner printed "queue N slots" for them too (method.queue_size is in
    every config), and "temperatures {}" for the methods without one."""
    pretrain(tiny_config(tmp_path / "run", f"method.name={method}", "aug.teacher_view=strong", "train.max_steps=1"))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  queue "))
    if method == "mocov2":
        assert line.split()[2] == "slots;" and int(line.split()[1]) > 0 and "temperatures {'infonce'" in line
    else:
        assert line.startswith("  queue      none (this method keeps no queue)")
        assert ("temperatures" in line) == (method == "simclr")


@pytest.mark.usefixtures("one_torch_thread")
def test_resuming_below_or_at_the_runs_end_says_so(tmp_path, capsys):
    """`cgh pretrain --resume RUN optim.epochs=1` on a run that did 2 epochs printed only "done: 8 steps"."""
    out = tmp_path / "run"
    pretrain(tiny_config(out, "optim.epochs=2"))
    before = files_of(out)
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(out), "optim.epochs=1"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err == (f"error: cannot resume with optim.epochs=1: {out / 'checkpoints' / 'last.pt'} has already run 2 "
                   f"epochs (8 steps), past that end; to train further give optim.epochs above 2 (the run's own is 2), "
                   f"or evaluate the checkpoint as it is (cgh knn {out / 'checkpoints' / 'last.pt'})\n")
    assert files_of(out) == before  # nothing of the run was touched
    # at its own end: nothing to run, and the line says what would train further
    assert main(["pretrain", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    assert printed.startswith(f"nothing to do: {out} is already at step 8, the end of its optim.epochs = 2; to train "
                              f"further resume with a larger optim.epochs (cgh pretrain --resume {out} optim.epochs=N)")


@pytest.mark.usefixtures("one_torch_thread")
def test_output_to_a_file_has_no_progress_bar_and_gives_times(tmp_path, capsys):
    """Redirected to a file (capsys: not a terminal), the output held progress-bar fragments and no elapsed time or
    ETA: now one line per epoch with both, and the time the run took at the end."""
    pretrain(tiny_config(tmp_path / "run", "optim.epochs=2", "train.progress=true"))
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out and "it/s" not in captured.err
    lines = captured.out.splitlines()
    assert re.search(r"^epoch 1/2 .* elapsed \d+s, ETA \d+s$", next(x for x in lines if x.startswith("epoch 1/2")))
    assert re.search(r"^epoch 2/2 .* elapsed \d+s, ETA 0s$", next(x for x in lines if x.startswith("epoch 2/2")))
    assert re.match(r"done: 8 steps in \d+s, checkpoint ", lines[-1])
