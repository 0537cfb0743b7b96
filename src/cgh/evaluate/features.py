"""Feature extraction: the one loop that runs a network over an evaluation loader, and the backbone features on it.

``collect(fn, loader, transform, ...)`` runs any function of the test-transformed images (a backbone's features, a
classifier's logits, the pretraining encoder of the kNN monitor) over the batches of an evaluation loader and stacks
its outputs. ``extract_features(model, source, kind, ...)`` is that loop for a ``PretrainedBackbone`` in eval mode:
the features (N, D) float32 on the CPU, NOT normalised (kNN and clustering normalise, a linear probe does not), with
the labels in dataset order (evaluation is functions over extracted features).

The command-line plumbing the evaluation commands share (checkpoint and data flags, ``--json``) is in
cgh.commands.common; its names are still importable from here.
"""

from __future__ import annotations

import sys

import torch

from cgh.augment import EvalTransform
from cgh.checkpoints.pretrained import FEATURE_KINDS, PretrainedBackbone
from cgh.data import build_eval_loader
from cgh.data.decode import eval_resize  # noqa: F401 - re-exported: the evaluation resize rule
from cgh.runtime.device import autocast


@torch.no_grad()
def collect(fn, loader, transform, *, device, amp=None, limit: int = 0, out_device="cpu", total: int | None = None,
            dim: int | None = None, progress: bool = False, desc: str = "features"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn(transform(images.to(device)))`` over the (images uint8, labels) batches of ``loader``, ``fn`` under
    ``cgh.runtime.device.autocast(device, amp)``; return (outputs float32 (N, D), labels int64 (N,)) on ``out_device``.

    limit: stop after the batch in which the count of samples seen reaches ``limit`` (0: all batches).
    total / dim: when both are given, the outputs are written into one preallocated (total, dim) tensor (an ImageNet
    bank of 1.28M x 2048 float32, 10.5 GB, is then held once instead of twice by a concatenation) and the result is
    trimmed to the rows filled.
    progress: a tqdm bar on stderr counting images (out of ``total`` when known).
    It does not change any model's train/eval mode: callers do.
    """
    device, out_device = torch.device(device), torch.device(out_device)
    preallocated = total is not None and dim is not None
    if preallocated:
        outputs = torch.empty(total, dim, device=out_device)  # (total, D)
        labels = torch.empty(total, dtype=torch.int64, device=out_device)  # (total,)
    chunks: list[torch.Tensor] = []
    label_chunks: list[torch.Tensor] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True, file=sys.stderr)
    n = 0
    try:
        for images, y in loader:
            x = transform(images.to(device, non_blocking=True))  # (B, 3, S, S) float
            with autocast(device, amp):
                out = fn(x)  # (B, D)
            out = out.float().to(out_device)
            y = torch.as_tensor(y).to(out_device, torch.int64)  # (B,)
            b = out.shape[0]
            if preallocated:
                if n + b > total:
                    raise ValueError(f"collect: the loader yielded more than total={total} samples")
                outputs[n : n + b] = out
                labels[n : n + b] = y
            else:
                chunks.append(out)
                label_chunks.append(y)
            n += b
            if bar is not None:
                bar.update(b)
            if limit and n >= limit:
                break
    finally:
        if bar is not None:
            bar.close()
    if preallocated:
        return outputs[:n], labels[:n]
    if not chunks:
        return torch.empty(0, dim or 0, device=out_device), torch.empty(0, dtype=torch.int64, device=out_device)
    return torch.cat(chunks), torch.cat(label_chunks)


def extract_features(
    model: PretrainedBackbone,
    source,
    kind: str = "global",
    *,
    image_size: int,
    mean,
    std,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    amp: torch.dtype | str | None = None,
    resize: int | None = None,
    progress: bool = False,
    desc: str = "features",
    corrupt: str = "error",
    skipped: list[tuple[int, str]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every image of ``source`` (an ArraySource or FileSource), in dataset order.

    kind: one of ``FEATURE_KINDS``: ``global`` (pooled layer4, 512 / 2048), ``hypercolumn`` (GAP of the stacked
    [layer3 -> layer4 size, layer4] map, 768 / 3072; docs/evaluation.md#linear-probe option a), ``hypercolumn_head``
    (the trained CGH head's pooled 1x1 conv-BN-ReLU, 512 / 2048; option b).
    Test transform (docs/method.md#test-transforms): images already ``image_size`` square are only normalised; others
    are resized (antialiased bilinear) so the shorter side is ``resize`` (default ``eval_resize(image_size)``: 256 for
    224) and centre-cropped. NOTE: the authors' standalone kNN script (docs/evaluation.md#knn-evaluation) resizes
    bicubically; we use the same bilinear transform as every other evaluation, so kNN, probe and clustering see
    identical inputs. amp: None (float32) or a dtype / 'bf16' for autocast on GPU. Returns (features (N, D) float32 CPU,
    labels (N,) int64 CPU). The model's train/eval mode is restored afterwards.
    corrupt: an undecodable file is a DataError ('error') or left out ('skip'): its row is then missing and its
    (index, path) appended to ``skipped``.
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {list(FEATURE_KINDS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    device = torch.device(device)
    transform = EvalTransform(image_size, mean, std, resize=resize or None).to(device)
    loader = build_eval_loader(source, image_size, batch_size, num_workers=num_workers, device=device,
                               corrupt=corrupt)
    was_training = model.training
    model.eval()
    try:
        feats, labels = collect(lambda x: model.features(x, kind), loader, transform, device=device, amp=amp,
                                total=len(source), dim=model.feature_dim(kind), progress=progress, desc=desc)
    finally:
        model.train(was_training)
    expected = len(source) - len(loader.skipped)
    assert feats.shape[0] == expected, f"the evaluation loader yielded {feats.shape[0]} of {expected} images"
    if skipped is not None:
        skipped += loader.skipped
    return feats, labels


def num_classes_of(*sources) -> int:
    """Classes of labelled sources: the class list's length, or 1 + the largest label when it is longer."""
    n = 0
    for s in sources:
        n = max(n, len(s.classes))
        if len(s) and bool((s.labels >= 0).any()):
            n = max(n, int(s.labels.max()) + 1)
    return n
