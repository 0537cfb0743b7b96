"""The online linear probe (``train.online_probe``): solo-learn's and lightly's standard monitor of pretraining.

A linear classifier on the detached pooled backbone features the teacher computes anyway for the teacher-view batch
(no extra forward pass), trained alongside pretraining on the batch's labels with its own SGD, and evaluated at each
epoch end on ``data.eval_test_split`` with the teacher. It never touches the backbone: its inputs are detached, its
parameters are its own, and it draws nothing from the global RNG (its initialisation uses a generator of its own),
so training is bit-identical with it on and off. Under DDP its gradients are averaged over processes, so every
process holds the same probe. Its state is saved in checkpoints and restored on resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cgh.augment import EvalTransform
from cgh.data.normalization import dataset_normalization
from cgh.runtime import dist
from cgh.train.monitor import Off, has_labels, held_out_test_split, labelled_split, no_labels, split_features

LR = 0.1  # solo-learn's online classifier: SGD lr 0.1, momentum 0.9, no weight decay
MOMENTUM = 0.9


class OnlineProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int, seed: int = 0):
        super().__init__()
        self.linear = nn.utils.skip_init(nn.Linear, dim, num_classes)  # uninitialised: no draw from the global RNG
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / dim**0.5  # nn.Linear's own initialisation range, drawn from the private generator
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=g)
            self.linear.bias.uniform_(-bound, bound, generator=g)
        self.optimizer = torch.optim.SGD(self.linear.parameters(), lr=LR, momentum=MOMENTUM)
        self.num_classes = num_classes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.float())

    def train_step(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One SGD step on the labelled rows (label >= 0) of a batch; returns the loss as a 0-dim tensor (not read
        here: reading it would synchronise the device)."""
        features, labels = features.detach(), labels.to(features.device)
        keep = labels >= 0
        with torch.enable_grad():
            logits = self(features)
            # masked mean: every process does the same work whatever its number of labelled rows (no host sync)
            per_row = F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * keep
            loss = per_row.sum() / keep.sum().clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if dist.world_size() > 1:
            for p in self.linear.parameters():
                p.grad = dist.all_reduce_mean(p.grad)
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 % on (features, labels) gathered from every process."""
        pred = self(features).argmax(dim=1)
        return 100.0 * float((pred == labels.to(pred.device)).float().mean())

    def state(self) -> dict:
        return {"model": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def probe_off_reason(cfg, pretraining) -> Off | None:
    """None when the online probe can run, else why it is off: the pretraining split (which the probe trains on)
    has no labels, or no test split is held out from it (cgh.train.monitor.held_out_test_split)."""
    if not has_labels(pretraining):
        return no_labels("online probe", pretraining)
    return held_out_test_split(cfg, "online probe", {"the pretraining split": cfg.data.split})[1]


class ProbeMonitor:
    """A run's online probe: ``step(features, labels)`` after every training step, ``monitor(teacher) -> top-1 %``
    on ``data.eval_test_split`` at each epoch end (the kNN monitor's loader when there is one)."""

    def __init__(self, cfg, device: torch.device, amp_dtype, dim: int, train_labels: torch.Tensor, test=None):
        self.test_src, self.test_loader = test or labelled_split(cfg, cfg.data.eval_test_split, device,
                                                                 "online probe")
        num_classes = int(max(train_labels.max(), self.test_src.labels.max())) + 1
        self.probe = OnlineProbe(dim, num_classes, seed=cfg.seed).to(device)
        self.transform = EvalTransform(cfg.data.image_size, *dataset_normalization(cfg.data)).to(device)
        self.device, self.amp_dtype = device, amp_dtype

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.probe.train_step(features, labels)

    def __call__(self, teacher: nn.Module) -> float:
        f, y = split_features(teacher, self.test_loader, self.transform, self.device, self.amp_dtype, "pooled")
        return self.probe.accuracy(f, y)
