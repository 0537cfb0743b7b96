"""Run a few steps of a method (CGH, MoCo-v2, BYOL, SimSiam, SimCLR) on fixed global views, on one process or under
torchrun, and save what each rank holds.

One process uses SplitBatchNorm with 2 splits; two processes use plain BN per process with the teacher batch shuffled
across them (the authors' DDP mode). Splits and ranks hold the same interleaved rows and the shuffle permutation is
drawn on rank 0 from the same seeded generator, so both setups must compute the same thing
(tests/system/test_distributed.py).
Usage: python ddp_equivalence_worker.py OUT_DIR METHOD [head_bn]   (or under torchrun --nproc_per_node=2)
"""

import os
import sys

import torch
import torch.distributed as tdist

from cgh.config import Config
from cgh.methods import build_method
from cgh.optim.schedule import build_optimizer
from cgh.runtime import dist

GLOBAL_BATCH, STEPS = 16, 5


def main(out_dir: str, method_name: str, head_bn: bool = False) -> None:
    torch.set_num_threads(1)
    # float64: the two setups differ only in the order of their sums (DDP averages two half-batch gradients where one
    # process sums one batch), so in float64 they must agree to ~1e-12 on any CPU; in float32 the same differences
    # reach ~3e-5 after 5 steps, too close to any tolerance that still tests something
    torch.set_default_dtype(torch.float64)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        tdist.init_process_group("gloo")
    cfg = Config()
    cfg.model.arch, cfg.model.stem, cfg.model.width = "resnet18", "cifar", 8
    cfg.model.bn_mode, cfg.model.bn_splits = ("shuffle", 1) if world > 1 else ("split", 2)
    m = cfg.method
    m.name, m.queue_size, m.feat_dim, m.hyper_dim, m.hid_dim, m.loss_warmup_epochs = method_name, 48, 16, 12, 32, 1
    m.head_bn, m.pred_hid_dim = head_bn, 24
    cfg.optim.batch_size = GLOBAL_BATCH
    cfg.optim.weight_decay, cfg.optim.wd_exclude_norm_bias, cfg.optim.momentum = 5e-4, True, 0.9
    torch.manual_seed(0)
    method = build_method(cfg, world, steps_per_epoch=2)  # warm-up over steps 0-1, then the cross-context terms
    model = torch.nn.parallel.DistributedDataParallel(method, broadcast_buffers=False) if world > 1 else method
    opt = build_optimizer(method, cfg.optim, 0.1)  # SGD on the student and a predictor (BYOL, SimSiam)
    views_gen = torch.Generator().manual_seed(123)
    losses = []
    for step in range(STEPS):
        views = [torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=views_gen) for _ in range(2)]  # same on every rank
        loss, _ = model([dist.local_rows(v) for v in views], 0.9, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(dist.all_reduce_mean(loss.detach())))
    state = {k: v for k, v in method.state_dict().items() if "running_" not in k and "num_batches" not in k}
    torch.save({"losses": losses, "state": state}, os.path.join(out_dir, f"rank{dist.rank()}_of_{world}.pt"))
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "head_bn")
