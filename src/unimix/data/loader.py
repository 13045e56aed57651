"""Batch loaders whose data order and augmentation are pure functions of (seed, epoch).

:func:`make_loader` returns one of two loaders with the same interface:

- :class:`InMemoryLoader` for :class:`~unimix.data.base.TensorImageDataset` (digits, CIFAR): the
  dataset is moved to ``device`` once, and each batch is one gather plus a few element-wise
  operations there (augmentation included, see :mod:`unimix.data.transforms`): no workers, no
  per-item Python, no host-to-device copy per batch;
- :class:`WorkerLoader` for any other map-style dataset (ImageFolder): a
  :class:`torch.utils.data.DataLoader` with worker processes (persistent across epochs), pinned
  memory when ``device`` is CUDA and non-blocking copies to ``device``.

Both yield ``(images, labels)`` on ``device`` (or whatever ``collate_fn`` returns, moved to
``device``), so the trainer can mix on the device right after (or mix in ``collate_fn``).

**Reproducibility.** Let ``s`` be the loader's seed (``seed``, else ``generator.initial_seed()``,
else ``torch.initial_seed()``). Epoch ``e`` uses a generator seeded from ``(s, e)`` (mixed by
:class:`numpy.random.SeedSequence`) that draws, in order, the permutation of the dataset (when
shuffling) and one seed per batch (in-memory) or per item (workers). A batch is augmented from
its own seed and an item is transformed with the global torch and ``random`` RNGs reseeded from
its own; a custom ``collate_fn`` runs under the global RNGs seeded per batch. So the data order
and the augmentation of epoch ``e`` depend on ``(s, e)`` only: not on the number of workers,
which worker serves which item, or what ran before. With a ``sampler`` (e.g. a
``DistributedSampler``), the order is the sampler's and ``set_epoch`` is passed on to it; the
per-item seeds also mix in the sampler's ``rank``.

How the trainer uses it::

    loader = make_loader(spec.train, 128, shuffle=True, device=device, seed=seed)
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)            # exact order and augmentation of epoch `epoch`
        for images, labels in loader: ...

To resume in the middle of an epoch, ``loader.set_epoch(epoch, start=k)`` skips the first ``k``
batches; in memory the remaining batches are exactly those of an uninterrupted run (with workers
too, since items are seeded by position). Without ``set_epoch`` each new iteration advances to
the next epoch (0, 1, 2, …).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torch.utils.data._utils.collate import default_collate

from unimix.data.base import TensorImageDataset

__all__ = ["InMemoryLoader", "WorkerLoader", "derive_seed", "make_loader", "seed_worker"]

_SEED_BOUND = 2**63 - 1
_WORKERS = 0x574F524B  # tags the stream of worker base seeds apart from the epoch streams
_BATCH = 0x9E3779B97F4A7C15  # turns an item seed into the seed of its batch's collate call


def derive_seed(*values: int) -> int:
    """A seed in ``[0, 2^63)`` mixing the non-negative ints ``values`` (numpy SeedSequence).

    Different tuples give statistically independent seeds, unlike ``seed + epoch``, for which
    ``(s, e + 1)`` and ``(s + 1, e)`` would collide.
    """
    words = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint64)
    return int(words[0] ^ (words[1] >> np.uint64(1))) & _SEED_BOUND


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@contextmanager
def _seeded_global_rng(seed: int, isolate: bool) -> Iterator[None]:
    """Run the block with the global torch (CPU) and ``random`` RNGs seeded from ``seed``;
    restore them afterwards when ``isolate`` (in the main process: the caller's RNG is its own)."""
    if isolate:
        torch_state, py_state = torch.get_rng_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        if isolate:
            torch.set_rng_state(torch_state)
            random.setstate(py_state)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` in each worker from its torch seed.

    The DataLoader seeds torch in worker ``i`` with ``base_seed + i``, ``base_seed`` drawn from the
    loader's generator; without this, forked workers would share numpy's and ``random``'s state
    and repeat each other's draws.
    """
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global state third-party transforms use


def _to_device(obj: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_device(o, device, non_blocking) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device, non_blocking) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in obj.items()}
    return obj


class _EpochLoader:
    """Epoch bookkeeping and data order shared by both loaders."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        seed: int,
        drop_last: bool,
        collate_fn: Callable[[list], Any] | None,
        sampler: Sampler | None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.device = device
        self.seed = seed
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self.sampler = sampler
        self._epoch = 0
        self._start = 0

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will run."""
        return self._epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, beginning at its batch ``start``.

        Passed on to the sampler's ``set_epoch`` (DistributedSampler) when it has one.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a non-negative int (a batch index), got {start!r}")
        self._epoch, self._start = epoch, start

    def _begin(self) -> tuple[int, int]:
        epoch, start = self._epoch, self._start
        self._epoch, self._start = epoch + 1, 0
        return epoch, start

    def _num_items(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def __len__(self) -> int:
        n = self._num_items()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self, epoch: int) -> tuple[Tensor, torch.Generator]:
        """Indices of the epoch in order, and the epoch's generator (already past the order)."""
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            rank = int(getattr(self.sampler, "rank", 0))
            g = _generator(derive_seed(self.seed, epoch, rank))
            order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        else:
            g = _generator(derive_seed(self.seed, epoch))
            n = len(self.dataset)
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        keep = len(self) * self.batch_size
        return order[:keep], g

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self._num_items()}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, device={self.device}, seed={self.seed}, epoch={self._epoch})"
        )


class InMemoryLoader(_EpochLoader):
    """Batches of a :class:`TensorImageDataset`, gathered and augmented on ``device``.

    See the module docstring; build with :func:`make_loader`.
    """

    def __init__(self, dataset: TensorImageDataset, *args: Any) -> None:
        super().__init__(dataset, *args)
        self._data: TensorImageDataset | None = None

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self._begin()
        order, g = self._order(epoch)
        num_batches = len(self)
        seeds = torch.randint(0, _SEED_BOUND, (num_batches,), generator=g).tolist()
        if self._data is None:
            self._data = self.dataset.to(self.device)
        data = self._data
        order = order.to(data.device)
        bs = self.batch_size
        for b in range(start, num_batches):
            index = order[b * bs : (b + 1) * bs]
            images, labels = data.get_batch(index, generator=_generator(seeds[b]))
            if self.collate_fn is None:
                yield images, labels
            else:
                items = list(zip(images.unbind(0), labels.tolist(), strict=True))
                with _seeded_global_rng(seeds[b] ^ _BATCH, isolate=True):
                    batch = self.collate_fn(items)
                yield _to_device(batch, self.device, non_blocking=False)


class _ItemSampler(Sampler):
    """Yields the ``(index, seed)`` keys the owning :class:`WorkerLoader` set for this epoch."""

    def __init__(self, n: int) -> None:
        self.keys: list[tuple[int, int]] = []
        self._n = n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys) if self.keys else self._n


class _SeededItems(Dataset):
    """``dataset[index]`` computed under the global RNGs seeded from the item's own seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        index, seed = key
        with _seeded_global_rng(seed, isolate=get_worker_info() is None):
            return self.dataset[index], seed


class _SeededCollate:
    """Strips the item seeds and runs ``collate_fn`` under RNGs seeded from the batch's first."""

    def __init__(self, collate_fn: Callable[[list], Any] | None) -> None:
        self.collate_fn = collate_fn

    def __call__(self, batch: list[tuple[Any, int]]) -> Any:
        samples = [sample for sample, _ in batch]
        if self.collate_fn is None:
            return default_collate(samples)
        with _seeded_global_rng(batch[0][1] ^ _BATCH, isolate=get_worker_info() is None):
            return self.collate_fn(samples)


class WorkerLoader(_EpochLoader):
    """A :class:`~torch.utils.data.DataLoader` with seeded epochs, items and workers.

    See the module docstring; build with :func:`make_loader`. The underlying loader is
    :attr:`dataloader`.
    """

    def __init__(
        self,
        dataset: Dataset,
        *args: Any,
        num_workers: int = 0,
        prefetch_factor: int | None = None,
        multiprocessing_context: Any = None,
    ) -> None:
        super().__init__(dataset, *args)
        self._keys = _ItemSampler(self._num_items())
        workers = num_workers > 0
        self.dataloader = DataLoader(
            _SeededItems(dataset),
            batch_size=self.batch_size,
            sampler=self._keys,
            num_workers=num_workers,
            collate_fn=_SeededCollate(self.collate_fn),
            pin_memory=self.device.type == "cuda",
            drop_last=self.drop_last,
            worker_init_fn=seed_worker if workers else None,
            generator=_generator(derive_seed(self.seed, _WORKERS)),
            prefetch_factor=prefetch_factor if workers else None,
            persistent_workers=workers,
            multiprocessing_context=multiprocessing_context if workers else None,
        )

    @property
    def num_workers(self) -> int:
        return self.dataloader.num_workers

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self._begin()
        order, g = self._order(epoch)
        seeds = torch.randint(0, _SEED_BOUND, (len(order),), generator=g)
        skip = start * self.batch_size
        self._keys.keys = list(zip(order[skip:].tolist(), seeds[skip:].tolist(), strict=True))
        non_blocking = self.device.type == "cuda"
        for batch in self.dataloader:
            yield _to_device(batch, self.device, non_blocking)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    collate_fn: Callable[[list], Any] | None = None,
    sampler: Sampler | None = None,
    seed: int | None = None,
    in_memory: bool | None = None,
    prefetch_factor: int | None = None,
    multiprocessing_context: Any = None,
) -> InMemoryLoader | WorkerLoader:
    """A loader of ``(images, labels)`` batches on ``device`` (see the module docstring).

    Args:
        dataset: a :class:`TensorImageDataset` (fast in-memory path) or any map-style dataset.
        batch_size: images per batch.
        shuffle: a new permutation each epoch (must be False with ``sampler``).
        num_workers: worker processes for the DataLoader path (persistent across epochs); the
            in-memory path needs none and ignores it.
        device: where batches are delivered; with CUDA, the DataLoader path pins memory and copies
            without blocking, and the in-memory path keeps the dataset on the GPU.
        generator: its ``initial_seed()`` is the loader's seed (its state is not consumed).
        drop_last: drop the last incomplete batch.
        collate_fn: called on the list of ``(image, label)`` items of a batch, e.g. a mixing
            collate function (under the global RNGs seeded per batch); default: stack them.
        sampler: yields the indices of an epoch, e.g. a ``DistributedSampler``.
        seed: the loader's seed, instead of ``generator``.
        in_memory: force (True) or refuse (False) the in-memory path; default: use it for
            :class:`TensorImageDataset`.
        prefetch_factor, multiprocessing_context: passed to the DataLoader (workers only).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
    if sampler is not None and shuffle:
        raise ValueError(
            "shuffle must be False when a sampler is given: the sampler sets the order"
        )
    if generator is not None and seed is not None:
        raise ValueError("give the loader's seed either as seed or as generator, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is None:
        seed = generator.initial_seed() if generator is not None else torch.initial_seed()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    device = torch.device(device)
    if in_memory is None:
        in_memory = isinstance(dataset, TensorImageDataset)
    args = (batch_size, bool(shuffle), device, seed, bool(drop_last), collate_fn, sampler)
    if in_memory:
        if not isinstance(dataset, TensorImageDataset):
            raise TypeError(
                f"in_memory=True needs a TensorImageDataset, got {type(dataset).__name__}; "
                "leave in_memory unset to use worker processes"
            )
        return InMemoryLoader(dataset, *args)
    return WorkerLoader(
        dataset,
        *args,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        multiprocessing_context=multiprocessing_context,
    )
