"""Semi-supervised fine-tuning (docs/evaluation.md#semi-supervised): the labelled-subset sampler, the ImageNet lists,
the two lrs, a short run."""

from __future__ import annotations

import json

import pytest
import torch

from cgh.config import Config
from cgh.data.base import ArraySource
from cgh.data.imagenet import _resource_lines, imagenet100_classes
from cgh.evaluate.semisup import Classifier, balanced_subset, build_optimizer, finetune, labelled_subset
from cgh.model.backbone import ResNet


def save_backbone(path, width=8):
    torch.save(ResNet("resnet18", stem="cifar", width=width).state_dict(), path)
    return path


def test_balanced_subset_is_balanced_reproducible_and_keeps_every_class():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([1000, 500, 30, 3])])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    labels[:5] = -1  # unlabelled images are never drawn
    idx = balanced_subset(labels, 0.01, seed=0)
    counts = torch.bincount(labels[idx], minlength=4).tolist()
    n = [int((labels == c).sum()) for c in range(4)]
    assert counts == [max(1, round(0.01 * k)) for k in n]  # 10, 5, 1 (0.3 rounds to 0, at least 1), 1
    assert bool((labels[idx] >= 0).all())
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == len(idx)
    assert torch.equal(balanced_subset(labels, 0.01, seed=0), idx)
    assert not torch.equal(balanced_subset(labels, 0.01, seed=1), idx)
    assert torch.equal(balanced_subset(labels, 1.0, seed=0), (labels >= 0).nonzero().squeeze(1))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        balanced_subset(labels, 0.0)


def test_balanced_subset_from_a_config_uses_the_training_split():
    cfg = Config()
    cfg.data.name, cfg.data.synthetic_size, cfg.data.synthetic_image_size = "synthetic", 200, 16
    source, description = labelled_subset(cfg, 0.1, seed=0)
    assert len(source) == 20 and torch.bincount(source.labels, minlength=10).tolist() == [2] * 10
    assert "balanced" in description and source.images.shape[1:] == (3, 16, 16)


def test_imagenet_fractions_use_the_shipped_lists(tmp_path):
    # A fake ImageNet-100 tree holding (empty) files for exactly the 1% list's entries of the 100 classes.
    classes = set(imagenet100_classes())
    listed = [f for f in _resource_lines("imagenet_1percent.txt.gz") if f.split("_")[0] in classes]
    for wnid in classes:
        (tmp_path / "train" / wnid).mkdir(parents=True)
    for f in listed:
        (tmp_path / "train" / f.split("_")[0] / f).touch()
    cfg = Config()
    cfg.data.name, cfg.data.path = "imagenet100", str(tmp_path)
    source, description = labelled_subset(cfg, 0.01)
    assert "train_1pct" in description
    assert sorted(p.split("/")[-1] for p in source.paths) == sorted(listed)
    wnids = imagenet100_classes()
    assert all(wnids[int(y)] == p.split("/")[-2] for p, y in zip(source.paths, source.labels, strict=True))


def test_trunk_and_head_have_separate_learning_rates():
    clf = Classifier(ResNet("resnet18", stem="cifar", width=8), 10)
    opt = build_optimizer(clf, trunk_lr=0.005, head_lr=0.02, momentum=0.9, weight_decay=0.0)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["trunk"]["lr"] == 0.005 and groups["head"]["lr"] == 0.02
    assert {id(p) for p in groups["head"]["params"]} == {id(clf.fc.weight), id(clf.fc.bias)}
    assert len(groups["trunk"]["params"]) == len(list(clf.backbone.parameters()))
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 0.0 for g in opt.param_groups)


def test_finetune_trains_the_whole_network():
    backbone = ResNet("resnet18", stem="cifar", width=8)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    train = ArraySource(torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen),
                        torch.arange(16) % 4, list("abcd"), "toy:train")
    test = ArraySource(train.images[:8].clone(), train.labels[:8].clone(), list("abcd"), "toy:test")
    clf, res = finetune(backbone, train, test, 4, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, epochs=3,
                        batch_size=8, milestones=[2], eval_every=1)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert 0 <= res.best_top1 <= 100 and res.best_top5 == 100.0  # 4 classes: top-5 = top-4
    after = clf.backbone.state_dict()
    assert not torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])  # trunk trained
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])  # train-mode BN


@pytest.mark.parametrize("n, steps, seen", [(10, 3, 10), (9, 2, 8)])
def test_finetune_keeps_the_final_partial_batch_unless_it_holds_one_image(n, steps, seen):
    # docs/evaluation.md#semi-supervised: the authors' loader keeps the last partial batch; a 1-image batch cannot go
    # through train-mode BN.
    source = ArraySource(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8), torch.arange(n) % 2, ["a", "b"],
                         "toy:train")
    _, res = finetune(ResNet("resnet18", stem="cifar", width=4), source, source, 2, image_size=8, mean=(0.5,) * 3,
                      std=(0.25,) * 3, epochs=1, batch_size=4)
    assert (res.steps_per_epoch, res.images_per_epoch) == (steps, seen)


def test_cli_semisup_json(tmp_path, capsys):
    from cgh.cli import main

    ckpt = save_backbone(tmp_path / "r18.pt")
    code = main(["semisup", str(ckpt), "--dataset", "synthetic", "--data-option", "synthetic_size=200",
                 "--data-option", "synthetic_test_size=20", "--data-option", "synthetic_image_size=16",
                 "--fraction", "0.1", "--epochs", "2",
                 "--batch-size", "10", "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    p = out["protocol"]
    assert out["command"] == "semisup" and set(out["metrics"]) >= {"best_top1", "best_top5", "final_top1"}
    assert p["fraction"] == 0.1 and p["num_train"] == 20 and p["trunk_lr"] == 0.005 and p["head_lr"] == 0.02
    assert p["milestones"] == [30, 60] and p["gamma"] == 0.1 and p["epochs"] == 2 and p["bn"].startswith("plain")
    assert p["std"] == [0.25, 0.25, 0.25] and p["image_size"] == 16
