"""Poly schedule values and the resumable, worker-independent batch streams."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from trainables.schedules import apply_poly, poly_lr, remember_base_lrs
from trainables.streams import BatchStream


def test_poly_values():
    assert poly_lr(2.5e-4, 0, 200_000, 0.9) == 2.5e-4
    # the seed's source-only stop point: 80k of 200k → 2.5e-4 · 0.6^0.9 ≈ 1.58e-4
    assert poly_lr(2.5e-4, 80_000, 200_000, 0.9) == pytest.approx(2.5e-4 * 0.6 ** 0.9)
    assert poly_lr(2.5e-4, 80_000, 200_000, 0.9) == pytest.approx(1.579e-4, abs=1e-7)
    assert poly_lr(1.0, 5, 10, 1.0) == pytest.approx(0.5)
    assert poly_lr(1.0, 10, 10, 0.9) == 0.0 and poly_lr(1.0, 12, 10, 0.9) == 0.0


def test_apply_poly_keeps_each_groups_multiplier():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}], lr=0.1)
    remember_base_lrs(opt)
    rates = apply_poly(opt, 3, iter_max=4, power=2.0)
    assert rates == pytest.approx([0.1 / 16, 1.0 / 16])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(rates)
    apply_poly(opt, 0, iter_max=4, power=2.0)  # computed from the base rate, not compounded
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 1.0])


class _RandomItems(Dataset):
    """Items drawn from all three global RNGs, as a random augmentation would."""

    def __len__(self):
        return 7

    def __getitem__(self, index):
        return torch.tensor([index, random.random(), float(np.random.rand()), torch.rand(()).item()])


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def test_stream_is_independent_of_workers_and_resumes_exactly():
    dataset = _RandomItems()
    plain = BatchStream(dataset, batch_size=2, seed=5, workers=0)
    reference = _take(plain, 8)  # 3 batches per epoch: crosses two epoch boundaries
    with_workers = BatchStream(dataset, batch_size=2, seed=5, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(reference, _take(with_workers, 8)))
    with_workers.close()

    first = BatchStream(dataset, batch_size=2, seed=5, workers=0)
    _take(first, 4)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == 1
    resumed = BatchStream(dataset, batch_size=2, seed=5, workers=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(reference[4:], _take(resumed, 4)))


def test_stream_epochs_are_permutations_and_do_not_touch_global_rng():
    stream = BatchStream(_RandomItems(), batch_size=3, seed=1, workers=0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    python_before = random.getstate()
    batches = _take(stream, 2)  # one epoch: 2 full batches, the 7th item dropped
    assert torch.equal(torch.get_rng_state(), before) and random.getstate() == python_before
    indices = torch.cat([b[:, 0] for b in batches]).long().tolist()
    assert len(set(indices)) == 6
    assert stream.state_dict()["epoch"] == 1


def test_stream_refuses_a_dataset_smaller_than_a_batch():
    with pytest.raises(ValueError, match="fewer than one batch"):
        BatchStream(_RandomItems(), batch_size=8, seed=0)
