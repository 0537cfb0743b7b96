"""Reference implementations the tests compare cgh against, written independently of cgh's code.

- ``np_log_softmax``, ``np_relation``, ``np_info_nce``: the loss equations of docs/method.md#losses, in float64 NumPy
  (tests/unit/test_losses.py, tests/unit/test_methods.py).
- ``np_byol``, ``np_mean_cos``, ``np_nt_xent``: BYOL's, SimSiam's and SimCLR's losses from the papers' equations, with
  loops over rows and explicit logarithms (tests/unit/test_methods.py, tests/unit/test_losses.py).
- ``torchvision_resized_crop``: torchvision's ``resized_crop`` on a tensor, box by box (tests/unit/test_augment.py).
- ``torchvision_crop_params``: torchvision's ``RandomResizedCrop.get_params``, drawing from torch's RNG as it does
  (tests/unit/data/test_decode.py compares the distribution of cgh's NumPy-driven boxes with it).
- ``expected_mi``: the expected mutual information of a contingency table under the permutation model, term by term
  (tests/unit/evaluate/test_cluster.py checks scikit-learn's AMI with it).
- ``expected_detectron2_keys``: detectron2's ResNet parameter names (tests/unit/test_export.py).
- ``raw_pixel_knn_accuracy``: a plain majority-vote cosine k-NN on standardised raw pixels
  (tests/unit/data/test_synthetic.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cgh.model.backbone import ARCHS

# ---------------------------------------------------------------------------------------------------------------------
# Losses (docs/method.md#losses), float64 NumPy
# ---------------------------------------------------------------------------------------------------------------------


def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_relation(student_logits, teacher_logits, tau_s, tau_t):
    """docs/method.md#cross-context-losses: CE(p, z) = -sum_j p_j log_softmax(z)_j averaged over rows, p =
    softmax(teacher / tau_t)."""
    p = np.exp(np_log_softmax(teacher_logits / tau_t))
    return float(-(p * np_log_softmax(student_logits / tau_s)).sum(axis=1).mean())


def np_info_nce(q, k, queue, tau):
    """docs/method.md#infonce-warmup: CE_onehot([q.k, q.Q] / tau, label 0)."""
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / tau
    return float(-np_log_softmax(logits)[:, 0].mean())


def _unit(x):
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True))


def np_byol(p, z):
    """BYOL eq. 2: mean over rows of || p/|p| - z/|z| ||^2 (one direction), written as the squared distance."""
    d = _unit(p) - _unit(z)
    return float(np.mean([(row * row).sum() for row in d]))


def np_mean_cos(p, z):
    """SimSiam eq. 1 (without its sign): the mean over rows of p_n . z_n / (|p_n| |z_n|)."""
    return float(np.mean([a @ b / math.sqrt((a @ a) * (b @ b)) for a, b in zip(p, z, strict=True)]))


def np_nt_xent(z1, z2, tau):
    """SimCLR eq. 1 over the 2N views, row by row: l(i, j) = -sim(i, j)/tau + log sum_{k != i} exp(sim(i, k)/tau),
    averaged over all 2N anchors (both directions, the paper's L = 1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)])."""
    z = _unit(np.concatenate([z1, z2]))
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [z[i] @ z[k] / tau for k in range(2 * n) if k != i]
        top = max(sims)
        total += -(z[i] @ z[j] / tau) + top + math.log(sum(math.exp(s - top) for s in sims))
    return total / (2 * n)


# ---------------------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------------------


def torchvision_resized_crop(x: torch.Tensor, boxes, size: int) -> torch.Tensor:
    """torchvision.transforms.functional.resized_crop on a tensor, image ``i`` cropped to box ``i``: crop, then
    resize with antialias=True. ``boxes`` is (top, left, height, width), four lists of ints."""
    top, left, ch, cw = boxes
    return torch.cat(
        [
            F.interpolate(x[i : i + 1, :, t : t + hh, l : l + ww], size=(size, size), mode="bilinear", antialias=True)
            for i, (t, l, hh, ww) in enumerate(zip(top, left, ch, cw, strict=True))
        ]
    )


def torchvision_crop_params(height: int, width: int, scale, ratio, generator: torch.Generator):
    """torchvision's ``RandomResizedCrop.get_params`` (v0.15+): ten tries at an area fraction uniform in ``scale``
    and a log-uniform aspect ratio, else the centred crop with the ratio clamped. Returns (top, left, h, w)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# ---------------------------------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------------------------------


def expected_mi(table: np.ndarray) -> float:
    """E[MI] under the hypergeometric (permutation) model, summed term by term (Vinh et al. 2010, eq. 24a),
    written independently of scikit-learn to check its AMI."""
    n = int(table.sum())
    a, b = table.sum(1), table.sum(0)
    emi = 0.0
    for ai in a:
        for bj in b:
            for nij in range(max(1, ai + bj - n), min(ai, bj) + 1):
                p = math.comb(ai, nij) * math.comb(n - ai, bj - nij) / math.comb(n, bj)
                emi += p * nij / n * math.log(n * nij / (ai * bj))
    return emi


# ---------------------------------------------------------------------------------------------------------------------
# detectron2's names
# ---------------------------------------------------------------------------------------------------------------------

BN = ("weight", "bias", "running_mean", "running_var")


def expected_detectron2_keys(arch: str) -> set[str]:
    """detectron2's ResNet parameter names (detectron2/modeling/backbone/resnet.py: BasicStem has ``conv1`` with a
    ``norm``; stages ``res2..res5`` of blocks with ``conv1..conv3`` (bottleneck) or ``conv1..conv2`` (basic), each a
    Conv2d with a ``norm``, and ``shortcut`` (+ ``norm``) on a block whose input and output shapes differ). FrozenBN
    and SyncBN checkpoints carry weight, bias, running_mean and running_var, no num_batches_tracked."""
    kind, depths = ARCHS[arch]
    convs = 3 if kind == "bottleneck" else 2

    def conv(prefix: str) -> list[str]:
        return [f"{prefix}.weight"] + [f"{prefix}.norm.{p}" for p in BN]

    keys = conv("stem.conv1")
    for stage, depth in enumerate(depths, start=2):
        for block in range(depth):
            for c in range(1, convs + 1):
                keys += conv(f"res{stage}.{block}.conv{c}")
            # Block 0 of a stage changes the shape, except res2 of the basic-block nets (64 -> 64, stride 1).
            if block == 0 and (kind == "bottleneck" or stage > 2):
                keys += conv(f"res{stage}.{block}.shortcut")
    return set(keys)


# ---------------------------------------------------------------------------------------------------------------------
# Raw-pixel k-NN
# ---------------------------------------------------------------------------------------------------------------------


def raw_pixel_knn_accuracy(train, test, k=20) -> float:
    """k-NN (majority of k, cosine) on raw pixels standardised per channel with the training statistics."""
    x, y = train.images.float() / 255, test.images.float() / 255
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    a = F.normalize(((x - mean) / std).flatten(1), dim=1)  # (N, D)
    b = F.normalize(((y - mean) / std).flatten(1), dim=1)  # (M, D)
    _, idx = torch.einsum("md,nd->mn", b, a).topk(k, dim=1)  # (M, k)
    votes = torch.zeros(len(b), len(train.classes)).scatter_add_(1, train.labels[idx], torch.ones(idx.shape))
    return (votes.argmax(1) == test.labels).float().mean().item()
