"""Endless, resumable batch streams over a dataset.

Each epoch visits the items in a permutation drawn from ``(seed, epoch)``; batches are full (the last partial one
is dropped, as AdaptSegNet/MaxSquareLoss do). Each item is loaded with every global RNG (Python, NumPy, torch CPU)
seeded from ``(seed, epoch, position)``, so the random augmentation of an item does not depend on the number of
DataLoader workers, on prefetching, or on whether the run was interrupted: the stream's state is just
``(epoch, batch position)`` and a resumed stream yields bit-identical batches.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainables.seeding import derive_seed, worker_init_fn

__all__ = ["BatchStream"]


@contextmanager
def _seeded_globals(seed: int):
    """Seed Python, NumPy and torch-CPU RNGs for one item, restoring them afterwards (workers=0 shares them with
    the training loop, whose dropout must not see the data pipeline's draws)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    torch_state = torch.random.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.random.default_generator.set_state(torch_state)


class _SeededItems(Dataset):
    """Wraps a dataset; item keys are ``(index, seed)`` pairs produced by :class:`_EpochBatches`."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with _seeded_globals(seed):
            return self.dataset[index]


class _EpochBatches(Sampler):
    """Endless batches of ``(index, item_seed)``, starting at ``(start_epoch, start_batch)``."""

    def __init__(self, size: int, batch_size: int, seed: int, start_epoch: int, start_batch: int, shuffle: bool):
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.start_epoch, self.start_batch = start_epoch, start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, first = self.start_epoch, self.start_batch
        batches_per_epoch = self.size // self.batch_size
        while True:
            if self.shuffle:
                order = torch.randperm(self.size, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
            else:
                order = torch.arange(self.size)
            for b in range(first, batches_per_epoch):
                start = b * self.batch_size
                yield [(int(order[start + j]), derive_seed(self.seed, epoch, start + j)) for j in range(self.batch_size)]
            epoch, first = epoch + 1, 0


class BatchStream:
    """``next(stream)`` gives the next collated batch; ``state_dict()`` / ``load_state_dict()`` resume it exactly."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, workers: int = 0, pin_memory: bool = False,
                 shuffle: bool = True, name: str = "stream"):
        size = len(dataset)
        if size < batch_size:
            raise ValueError(f"{name}: {size} items are fewer than one batch of {batch_size}; "
                             f"lower the batch size or use more items")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.workers, self.pin_memory, self.shuffle, self.name = workers, pin_memory, shuffle, name
        self.batches_per_epoch = size // batch_size
        self.epoch, self.position = 0, 0
        self._iterator: Iterator | None = None

    def _start(self) -> Iterator:
        sampler = _EpochBatches(len(self.dataset), self.batch_size, self.seed, self.epoch, self.position, self.shuffle)
        loader = DataLoader(
            _SeededItems(self.dataset), batch_sampler=sampler, num_workers=self.workers, pin_memory=self.pin_memory,
            worker_init_fn=worker_init_fn, generator=torch.Generator().manual_seed(self.seed),
            prefetch_factor=2 if self.workers > 0 else None,
        )
        return iter(loader)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "batches_per_epoch": self.batches_per_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("batches_per_epoch", self.batches_per_epoch) != self.batches_per_epoch:
            raise ValueError(f"{self.name}: the checkpoint's stream had {state['batches_per_epoch']} batches per "
                             f"epoch, this dataset gives {self.batches_per_epoch} (different dataset or batch size)")
        self.close()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def close(self) -> None:
        """Stop the worker processes (a new iterator starts on the next ``next()``)."""
        self._iterator = None
