"""Each method's shapes and terms, and CGH's loss checked against the equations of docs/method.md#losses (recomputed in
NumPy: tests/reference.py); BYOL's, SimSiam's and SimCLR's losses in float64 against the papers' equations, and one
SimSiam step against the official code when a checkout of it is given. The hypercolumn head:
tests/unit/test_heads.py."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgh.config.names import METHOD_NAMES, TEACHER_VIEWS
from cgh.methods import METHODS, QUEUE_METHODS, build_method
from tests.helpers import SMALL_BATCH, SMALL_QUEUE, small_cfg, views
from tests.reference import np_byol, np_info_nce, np_mean_cos, np_nt_xent, np_relation

B, K = SMALL_BATCH, SMALL_QUEUE  # the batch of views() and the queue of small_cfg()


def test_the_configs_table_of_methods_is_the_methods_own():
    # the config validates method names against cgh.config.names without importing the methods (no import circle)
    assert METHOD_NAMES == tuple(METHODS)
    assert TEACHER_VIEWS == {name: cls.teacher_view for name, cls in METHODS.items()}
    assert set(QUEUE_METHODS) == {name for name in METHODS if hasattr(build_method(small_cfg(name)), "queue")}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_forward_backward_and_queue(name):
    method = build_method(small_cfg(name))
    loss, terms = method(views(), momentum=0.99, step=0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(v) and not v.requires_grad for v in terms.values())
    loss.backward()
    if method.teacher is not method.student:  # SimSiam and SimCLR have no momentum encoder
        assert all(p.grad is None for p in method.teacher.parameters())  # the teacher never receives a gradient
        assert all(not p.requires_grad for p in method.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.backbone.parameters())
    if name in QUEUE_METHODS:
        assert int(method.queue.ptr) == B
    else:
        assert not any(n.startswith("queue") for n, _ in method.named_buffers())


def test_cgh_has_two_queues_in_lockstep_and_hyper_gradients():
    method = build_method(small_cfg("cgh", loss_warmup_epochs=0))
    for _ in range(3):
        loss, _ = method(views(), 0.99, step=10)
        loss.backward()
    assert int(method.queue.ptr) == int(method.queue_hyper.ptr) == 3 * B
    assert method.student.hyper.reduce[0].weight.grad.abs().sum() > 0
    assert method.student.projector[0].weight.grad.abs().sum() > 0


def features(method, weak, strong):
    """q, qh from the student and k, kh from the teacher, recomputed outside the method (train-mode BN)."""
    with torch.no_grad():
        s, t = method.student(strong), method.teacher(weak)
        return [F.normalize(x, dim=1).double().numpy() for x in (s.z, s.zh, t.z, t.zh)]


@pytest.mark.parametrize("context", ["cross", "same"])
@pytest.mark.parametrize("step,warmup", [(0, 4), (2, 4), (4, 4), (9, 4)])
def test_cgh_loss_matches_equations(context, step, warmup):
    cfg = small_cfg("cgh", context=context, loss_warmup_epochs=1)
    method = build_method(cfg, steps_per_epoch=warmup)
    method.shuffle = False  # recomputing the features below needs the same BN batches
    queue, queue_h = method.queue.queue.double().numpy().copy(), method.queue_hyper.queue.double().numpy().copy()
    weak, strong = views()
    loss, terms = method([weak, strong], momentum=1.0, step=step)  # m = 1: the teacher stays as it was
    q, qh, k, kh = features(method, weak, strong)
    m = cfg.method
    lq, lqh, lk, lkh = q @ queue.T, qh @ queue_h.T, k @ queue.T, kh @ queue_h.T
    if context == "cross":  # docs/method.md#cross-context-losses: hyper student <- global teacher; global student <-
                            # hyper teacher
        l_hyper = np_relation(lqh, lk, m.temp_student_hyper, m.temp_teacher_global)
        l_csist = np_relation(lq, lkh, m.temp_student_global, m.temp_teacher_hyper)
    else:  # ablation: each context learns from its own teacher
        l_hyper = np_relation(lqh, lkh, m.temp_student_hyper, m.temp_teacher_hyper)
        l_csist = np_relation(lq, lk, m.temp_student_global, m.temp_teacher_global)
    l_cl = np_info_nce(q, k, queue, m.temperature) + np_info_nce(qh, kh, queue_h, m.temperature)
    alpha = step / warmup
    w = (1 - alpha, alpha / 2, alpha / 2) if step < warmup else (0.0, 0.5, 0.5)  # docs/method.md#loss-weights
    expected = w[0] * l_cl + w[1] * l_hyper + w[2] * l_csist
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert terms["hyper"].item() == pytest.approx(l_hyper, rel=1e-4)
    assert terms["csist"].item() == pytest.approx(l_csist, rel=1e-4)
    assert ("nce" in terms) == (step < warmup)


def test_cgh_multicrop_averages_local_terms_into_csist():
    cfg = small_cfg("cgh", num_local=2, loss_warmup_epochs=0)
    method = build_method(cfg)
    method.shuffle = False
    queue, queue_h = method.queue.queue.double().numpy().copy(), method.queue_hyper.queue.double().numpy().copy()
    weak, strong, l1, l2 = views(2) + views(2, size=8)
    loss, terms = method([weak, strong, l1, l2], momentum=1.0, step=0)
    q, qh, k, kh = features(method, weak, strong)
    with torch.no_grad():
        locals_ = [F.normalize(method.student(x, hyper=False).z, dim=1).double().numpy() for x in (l1, l2)]
    m = cfg.method
    lkh = kh @ queue_h.T
    # docs/method.md#multi-crop: csist <- (L_csist + sum_l L_local_l) / (n_local + 1); locals learn the hypercolumn
    # teacher
    parts = [np_relation(x @ queue.T, lkh, m.temp_student_global, m.temp_teacher_hyper) for x in [q, *locals_]]
    l_hyper = np_relation(qh @ queue_h.T, k @ queue.T, m.temp_student_hyper, m.temp_teacher_global)
    assert terms["csist"].item() == pytest.approx(np.mean(parts), rel=1e-4)
    assert loss.item() == pytest.approx(0.5 * l_hyper + 0.5 * np.mean(parts), rel=1e-4)


def test_head_bn_option_puts_bn_in_every_mlp():
    cfg = small_cfg("cgh", head_bn=True)
    cfg.model.bn_mode, cfg.model.bn_splits = "split", 2
    method = build_method(cfg)
    from cgh.model.splitbn import SplitBatchNorm1d

    assert isinstance(method.student.projector[1], SplitBatchNorm1d)
    assert isinstance(method.student.hyper.mlp[1], SplitBatchNorm1d)
    assert isinstance(method.teacher.projector[1], SplitBatchNorm1d)
    loss, _ = method(views(), 0.99, 0)
    loss.backward()
    assert method.student.projector[1].weight.grad is not None
    assert len(build_method(small_cfg("cgh")).student.projector) == 3  # the authors' heads: no BN
                                                                       # (docs/method.md#global-head)


def test_cgh_directions_can_be_switched_off():
    method = build_method(small_cfg("cgh", global_from_hyper=False, loss_warmup_epochs=0))
    _, terms = method(views(), 0.99, 0)
    assert set(terms) == {"hyper", "w_nce"} and method.needs_find_unused
    with pytest.raises(ValueError, match="at least one"):
        build_method(small_cfg("cgh", global_from_hyper=False, hyper_from_global=False))


@pytest.mark.parametrize("hyper_weight,csist_weight", [(0.5, 0.5), (0.8, 0.2), (0.25, 1.0)])
def test_cgh_loss_is_the_direction_weighted_sum_of_its_terms(hyper_weight, csist_weight):
    torch.manual_seed(0)
    method = build_method(small_cfg("cgh", loss_warmup_epochs=0, hyper_weight=hyper_weight,
                                    csist_weight=csist_weight))
    loss, terms = method(views(), 0.99, 0)
    assert set(terms) == {"hyper", "csist", "w_nce"}
    assert loss.item() == pytest.approx(hyper_weight * terms["hyper"].item() + csist_weight * terms["csist"].item(),
                                        rel=1e-6)


def test_cgh_centering_uses_the_batch_mean():
    method = build_method(small_cfg("cgh", centering=True, center_momentum=0.9, loss_warmup_epochs=0))
    method.shuffle = False
    queue = method.queue.queue.clone()
    weak, strong = views()
    method([weak, strong], momentum=1.0, step=0)
    with torch.no_grad():
        k = F.normalize(method.teacher(weak).z, dim=1)
    expected = 0.1 * (k @ queue.T).mean(0, keepdim=True)  # docs/method.md#centering with the mean (the authors used the
                                                          # sum)
    torch.testing.assert_close(method.center, expected, rtol=1e-4, atol=1e-6)


def test_ressl_loss_matches_equation():
    cfg = small_cfg("ressl")
    method = build_method(cfg)
    method.shuffle = False
    queue = method.queue.queue.double().numpy().copy()
    weak, strong = views()
    loss, _ = method([weak, strong], momentum=1.0)
    q, _, k, _ = (x for x in features_global(method, weak, strong))
    expected = np_relation(q @ queue.T, k @ queue.T, cfg.method.temp_student_global, cfg.method.temp_teacher_global)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_mocov2_loss_matches_equation():
    cfg = small_cfg("mocov2", temperature=0.2)
    method = build_method(cfg)
    method.shuffle = False
    queue = method.queue.queue.double().numpy().copy()
    x_k, x_q = views()
    loss, _ = method([x_k, x_q], momentum=1.0)
    q, _, k, _ = features_global(method, x_k, x_q)
    assert loss.item() == pytest.approx(np_info_nce(q, k, queue, 0.2), rel=1e-4)


def features_global(method, weak, strong):
    with torch.no_grad():
        s, t = method.student(strong, hyper=False), method.teacher(weak, hyper=False)
        return F.normalize(s.z, dim=1).double().numpy(), None, F.normalize(t.z, dim=1).double().numpy(), None


def test_split_bn_shuffled_teacher_runs_and_keeps_batch_order():
    cfg = small_cfg("ressl")
    cfg.model.bn_mode, cfg.model.bn_splits = "split", 4
    method = build_method(cfg)
    assert method.shuffle
    method.eval()  # eval-mode BN: per-row outputs, so a shuffled forward must equal an unshuffled one
    from cgh.methods.common import teacher_forward

    x = torch.randn(B, 3, 16, 16)
    torch.testing.assert_close(teacher_forward(method.teacher, x, shuffle=True).z,
                               teacher_forward(method.teacher, x, shuffle=False).z)


def test_ressl_warmup_ramps_from_infonce_into_the_relation_loss():
    """ressl_warmup (a departure, off by default): loss = (1 - a) InfoNCE + a relation, a = step / warm-up steps."""
    cfg = small_cfg("ressl", ressl_warmup=True, loss_warmup_epochs=1, temperature=0.2)
    method = build_method(cfg, steps_per_epoch=10)
    method.shuffle = False
    queue = method.queue.queue.double().numpy().copy()
    weak, strong = views()
    loss, terms = method([weak, strong], momentum=1.0, step=4)
    q, _, k, _ = features_global(method, weak, strong)
    relation = np_relation(q @ queue.T, k @ queue.T, cfg.method.temp_student_global, cfg.method.temp_teacher_global)
    nce = np_info_nce(q, k, queue, 0.2)
    assert loss.item() == pytest.approx(0.6 * nce + 0.4 * relation, rel=1e-4)
    assert terms["w_nce"].item() == pytest.approx(0.6) and "nce" in terms
    _, after = method(views(), momentum=1.0, step=10)  # past the warm-up: the relation loss alone
    assert "nce" not in after and after["w_nce"].item() == 0.0


def test_ressl_without_warmup_is_the_official_loss_bit_for_bit():
    torch.manual_seed(0)
    plain = build_method(small_cfg("ressl"), steps_per_epoch=10)
    torch.manual_seed(0)
    off = build_method(small_cfg("ressl", ressl_warmup=False, loss_warmup_epochs=3), steps_per_epoch=10)
    v = views()
    torch.manual_seed(1)
    a, terms = plain(v, momentum=0.99, step=2)
    torch.manual_seed(1)
    b, _ = off(v, momentum=0.99, step=2)
    assert torch.equal(a, b) and set(terms) == {"relation"}


@pytest.mark.parametrize("epochs,floor,steps_per_epoch,expected", [(5, 0, 20, 100), (1, 600, 20, 600),
                                                                   (5, 600, 195, 975), (0, 0, 20, 0), (0, 50, 20, 50)])
def test_loss_warmup_floor_in_steps(epochs, floor, steps_per_epoch, expected):
    from cgh.methods import loss_warmup_steps

    m = small_cfg("cgh", loss_warmup_epochs=epochs, loss_warmup_min_steps=floor).method
    assert loss_warmup_steps(m, steps_per_epoch) == expected
    assert build_method(small_cfg("cgh", loss_warmup_epochs=epochs, loss_warmup_min_steps=floor),
                        steps_per_epoch=steps_per_epoch).warmup_steps == expected


def test_hyper_bn_plain_normalises_the_whole_batch_in_the_hypercolumn_head():
    from cgh.model.splitbn import SplitBatchNorm

    cfg = small_cfg("cgh", hyper_bn="plain", head_bn=True)
    cfg.model.bn_mode, cfg.model.bn_splits = "split", 4
    method = build_method(cfg)
    hyper_norms = [m for m in method.student.hyper.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert hyper_norms and not any(isinstance(m, SplitBatchNorm) for m in hyper_norms)
    assert type(method.student.hyper.reduce[1]) is torch.nn.BatchNorm2d
    assert any(isinstance(m, SplitBatchNorm) for m in method.student.backbone.modules())  # the backbone keeps splits
    cfg.method.hyper_bn = "split"
    split = build_method(cfg)
    assert isinstance(split.student.hyper.reduce[1], SplitBatchNorm)
    # same parameter and buffer names either way: checkpoints of one load into the other
    assert method.state_dict().keys() == split.state_dict().keys()
    loss, _ = method(views(batch=8), momentum=0.99, step=0)
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------------------------------
# BYOL, SimSiam, SimCLR: the method's loss in float64 equals the paper's equation recomputed from the method's own
# features (tests/reference.py, written with loops and explicit logarithms)
# ---------------------------------------------------------------------------------------------------------------------


def float64_method(name, **method):
    torch.manual_seed(0)
    m = build_method(small_cfg(name, pred_hid_dim=24, **method)).double()
    m.shuffle = False  # the recomputation below needs the same BN batches
    return m


def test_byol_loss_equals_the_papers_equation_in_float64():
    method = float64_method("byol")
    with torch.no_grad():  # a target that differs from the online network, so that a swapped side shows
        for p in method.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x1, x2 = (v.double() for v in views())
    loss, terms = method([x1, x2], momentum=1.0)  # m = 1: the target stays as it is
    with torch.no_grad():
        p1, p2 = (method.predictor(method.student(x, hyper=False).z).numpy() for x in (x1, x2))
        t1, t2 = (method.teacher(x, hyper=False).z.numpy() for x in (x1, x2))
    assert abs(loss.item() - (np_byol(p1, t2) + np_byol(p2, t1))) < 1e-10
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.predictor[0].weight.grad.abs().sum() > 0


def test_simsiam_loss_equals_the_papers_equation_in_float64():
    method = float64_method("simsiam")
    x1, x2 = (v.double() for v in views())
    loss, terms = method([x1, x2], momentum=0.5)
    with torch.no_grad():
        z1, z2 = (method.student(x, hyper=False).z for x in (x1, x2))
        p1, p2 = method.predictor(z1).numpy(), method.predictor(z2).numpy()
    expected = -0.5 * (np_mean_cos(p1, z2.numpy()) + np_mean_cos(p2, z1.numpy()))  # SimSiam eq. 2
    assert abs(loss.item() - expected) < 1e-10 and terms["simsiam"].item() == loss.item()
    assert method.teacher is method.student and not any(k.startswith("teacher.") for k in method.state_dict())


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_simclr_loss_equals_the_papers_equation_in_float64(tau):
    method = float64_method("simclr", temperature=tau)
    x1, x2 = (v.double() for v in views())
    loss, _ = method([x1, x2], momentum=0.5)
    with torch.no_grad():
        z1, z2 = (method.student(x, hyper=False).z.numpy() for x in (x1, x2))
    assert abs(loss.item() - np_nt_xent(z1, z2, tau)) < 1e-10


def test_simclr_loss_over_a_gathered_batch_equals_the_whole_batch():
    """The loss of process r's rows against the gathered global batch, averaged over the processes, is the loss of the
    whole batch (what two processes must compute), and the gradient reaches every row through the negatives."""
    from cgh.losses import nt_xent

    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    whole = nt_xent(z1, z2, 0.3)
    world = 2
    parts = [nt_xent(z1[r::world], z2[r::world], 0.3, z1, z2, torch.arange(4) * world + r) for r in range(world)]
    assert abs(torch.stack(parts).mean().item() - whole.item()) < 1e-12
    assert abs(whole.item() - np_nt_xent(z1.numpy(), z2.numpy(), 0.3)) < 1e-10


def test_fixed_predictor_lr_keeps_its_group_at_the_initial_lr(tmp_path):
    from cgh.optim.schedule import build_optimizer

    cfg = small_cfg("simsiam", pred_hid_dim=24, fix_pred_lr=True)
    method = build_method(cfg)
    opt = build_optimizer(method, cfg.optim, 0.1)
    fixed = [g for g in opt.param_groups if g.get("fixed_lr")]
    assert {id(p) for g in fixed for p in g["params"]} == {id(p) for p in method.predictor.parameters()}
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in method.parameters() if p.requires_grad}  # the frozen projector bias is not
    assert not method.student.projector[6].bias.requires_grad                  # trained (official builder.py)


@pytest.mark.parametrize("method,fixed", [("byol", False), ("simsiam", True)])
def test_predictor_lr_scale_multiplies_the_predictor_lr_in_training(tmp_path, method, fixed):
    from cgh.checkpoints.files import load_checkpoint
    from cgh.optim.schedule import build_optimizer
    from cgh.train import pretrain
    from tests.helpers import tiny_config

    cfg = small_cfg(method, pred_hid_dim=24, fix_pred_lr=fixed, pred_lr_scale=10.0)
    method_ = build_method(cfg)
    groups = build_optimizer(method_, cfg.optim, 0.1).param_groups
    scaled = [g for g in groups if g.get("lr_scale") == 10.0]
    assert {id(p) for g in scaled for p in g["params"]} == {id(p) for p in method_.predictor.parameters()}
    assert all(bool(g.get("fixed_lr")) == fixed for g in scaled)
    plain = build_optimizer(build_method(small_cfg(method)), cfg.optim, 0.1).param_groups
    assert not any("lr_scale" in g for g in plain)

    out = tmp_path / "run"  # 5 of 8 steps: the schedule is mid-way (also per epoch), so fixed and scheduled differ
    pretrain(tiny_config(out, f"method.name={method}", f"method.fix_pred_lr={str(fixed).lower()}",
                         "method.pred_lr_scale=10", "optim.epochs=2", "train.max_steps=5", "optim.warmup_epochs=0"))
    ckpt_groups = load_checkpoint(out / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    rest = [g["lr"] for g in ckpt_groups if "lr_scale" not in g]
    pred = [g["lr"] for g in ckpt_groups if "lr_scale" in g]
    assert pred and len(set(rest)) == 1 and len(set(pred)) == 1
    if fixed:  # the initial lr, times 10, while the rest has decayed below it
        assert rest[0] < pred[0] / 10
    else:      # the rest's scheduled lr, times 10
        assert pred[0] == pytest.approx(10 * rest[0], rel=1e-12)


# One float64 SimSiam step against the official code (facebookresearch/simsiam at a7bc177, simsiam/builder.py), run
# from a checkout the tester points CGH_SIMSIAM_REF at (none of it is in this repository; like
# benchmarks/authors_step.py's --authors checkout): git clone https://github.com/facebookresearch/simsiam
SIMSIAM_REF = os.environ.get("CGH_SIMSIAM_REF", "")


class _TorchvisionStyle(nn.Module):
    """What the official builder expects of ``base_encoder(num_classes=dim, zero_init_residual=True)``: a network
    with an ``fc`` that it replaces by its projector, and a forward that returns fc(pooled features)."""

    def __init__(self, num_classes, zero_init_residual):
        super().__init__()
        from cgh.model.backbone import build_backbone

        self.net = build_backbone("resnet18", "cifar", 16, 0, 1, zero_init_residual)
        self.fc = nn.Linear(self.net.num_features, num_classes)

    def forward(self, x):
        return self.fc(self.net.pool(self.net(x).layer4))


@pytest.mark.skipif(not SIMSIAM_REF, reason="set CGH_SIMSIAM_REF to a checkout of facebookresearch/simsiam")
def test_one_simsiam_step_equals_the_official_code_in_float64():
    from cgh.optim.schedule import build_optimizer

    spec = importlib.util.spec_from_file_location("simsiam_builder", Path(SIMSIAM_REF) / "simsiam" / "builder.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    torch.manual_seed(0)
    ref = builder.SimSiam(_TorchvisionStyle, dim=16, pred_dim=8).double()
    cfg = small_cfg("simsiam", feat_dim=16, hid_dim=ref.encoder.net.num_features, pred_hid_dim=8, fix_pred_lr=True)
    cfg.optim.weight_decay, cfg.optim.wd_exclude_norm_bias = 1e-4, False  # main_simsiam.py: wd on every parameter
    ours = build_method(cfg).double()
    pairs = [(ours.student.backbone, ref.encoder.net), (ours.student.projector, ref.encoder.fc),
             (ours.predictor, ref.predictor)]
    for mine, theirs in pairs:
        mine.load_state_dict(theirs.state_dict())
    x1, x2 = (v.double() for v in views())
    init_lr, cur_lr = 0.05 * SMALL_BATCH / 256, 0.007  # a scheduled lr below init_lr: the fixed group must keep init

    # main_simsiam.py: the optimiser (--fix-pred-lr), adjust_learning_rate, the loss line and the step
    opt_ref = torch.optim.SGD([{"params": ref.encoder.parameters(), "fix_lr": False},
                               {"params": ref.predictor.parameters(), "fix_lr": True}], init_lr, momentum=0.9,
                              weight_decay=1e-4)
    for g in opt_ref.param_groups:
        g["lr"] = init_lr if g["fix_lr"] else cur_lr
    p1, p2, z1, z2 = ref(x1, x2)
    criterion = nn.CosineSimilarity(dim=1)
    loss_ref = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
    opt_ref.zero_grad()
    loss_ref.backward()

    opt = build_optimizer(ours, cfg.optim, init_lr)
    for g in opt.param_groups:  # as cgh.train.loop does
        g["lr"] = init_lr if g.get("fixed_lr") else cur_lr
    loss, _ = ours([x1, x2], momentum=0.99)
    opt.zero_grad()
    loss.backward()

    assert abs(loss.item() - loss_ref.item()) < 1e-10
    for mine, theirs in pairs:
        for (name, a), (_, b) in zip(mine.named_parameters(), theirs.named_parameters(), strict=True):
            assert (a.grad is None) == (b.grad is None), name
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-10, msg=name)
    opt_ref.step()
    opt.step()
    for mine, theirs in pairs:
        for (name, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)
