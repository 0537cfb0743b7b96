"""The feature queue (cgh.model.queue): unit slots, pointer and wrap-around, lockstep, shapes."""

from __future__ import annotations

import pytest
import torch

from cgh.model.queue import FeatureQueue


def test_queue_starts_with_unit_slots_and_is_saved():
    q = FeatureQueue(16, 8)
    torch.testing.assert_close(q.queue.norm(dim=1), torch.ones(16))
    assert set(q.state_dict()) == {"queue", "ptr"}


def test_pointer_advances_and_wraps():
    q = FeatureQueue(12, 4)
    batches = [torch.full((4, 4), float(i)) for i in range(4)]
    q.push(batches[0])
    assert int(q.ptr) == 4 and torch.all(q.queue[:4] == 0)
    q.push(batches[1])
    q.push(batches[2])
    assert int(q.ptr) == 0  # wrapped after exactly K / B pushes
    q.push(batches[3])  # overwrites the oldest slots
    assert int(q.ptr) == 4
    assert torch.all(q.queue[:4] == 3) and torch.all(q.queue[4:8] == 1) and torch.all(q.queue[8:] == 2)


def test_two_queues_stay_in_lockstep():
    a, b = FeatureQueue(8, 3), FeatureQueue(8, 5)
    for i in range(5):
        ids = torch.arange(2) + 2 * i  # "image ids" written in the first coordinate of both queues
        a.push(torch.stack([ids.float(), torch.zeros(2), torch.zeros(2)], 1))
        b.push(torch.cat([ids.float()[:, None], torch.zeros(2, 4)], 1))
        assert int(a.ptr) == int(b.ptr)
        written = min(2 * (i + 1), 8)  # slots not yet written still hold their (different) random init
        torch.testing.assert_close(a.queue[:written, 0], b.queue[:written, 0])


def test_features_is_a_detached_copy():
    q = FeatureQueue(8, 4)
    f = q.features
    q.push(torch.zeros(4, 4))
    assert not torch.equal(f[:4], q.queue[:4]) and not f.requires_grad


def test_push_checks_shapes():
    q = FeatureQueue(8, 4)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        q.push(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="multiple"):
        q.push(torch.zeros(3, 4))
