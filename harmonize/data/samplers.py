"""Samplers whose order is a pure function of ``(seed, epoch)``: a shuffle, and site-balanced batches.

A run resumed from a checkpoint (even mid-epoch, :meth:`set_epoch` with ``start_batch``) draws exactly the batches
an uninterrupted run drew. :func:`~harmonize.data.dataset.make_dataloader` chooses between them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from harmonize.distributed import broadcast_object
from harmonize.errors import ConfigError, integer_problem, is_integer, raise_problems

__all__ = ["EpochShuffleSampler", "SiteBalancedBatchSampler", "epoch_sampler", "epoch_seed", "same_epoch"]

#: Seeds are reduced modulo 2**63 before being mixed with the epoch (``SeedSequence`` takes non-negative ints).
_SEED_MODULUS = 2**63


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's shuffle: a pure function of the run's ``seed`` and the (0-based) ``epoch``.

    Mixing both through :class:`numpy.random.SeedSequence` gives unrelated orders for neighbouring epochs and
    seeds, and lets a resumed run draw exactly the order an uninterrupted run drew.

    Example:
        >>> epoch_seed(0, 3) == epoch_seed(0, 3) != epoch_seed(0, 4)
        True
    """
    return int(np.random.SeedSequence([int(seed) % _SEED_MODULUS, int(epoch)]).generate_state(1, np.uint64)[0])


def _base_seed(seed: int | None) -> int:
    """The sampler's seed: as given, or drawn once from torch's global generator when ``None``."""
    return int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())


class _EpochSeeded:
    """Epoch bookkeeping of a sampler whose order depends only on ``(seed, epoch)``.

    ``set_epoch(epoch, start_batch)`` chooses the order (as ``DistributedSampler.set_epoch``) and where the next
    pass starts (to resume a run killed half-way through an epoch); without it, each pass moves on to the next
    epoch by itself, so a plain loop still gets a fresh order every epoch.
    """

    seed: int
    epoch: int
    start_batch: int

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass draw epoch ``epoch``'s order (0-based) and skip its first ``start_batch`` batches.

        Raises:
            ConfigError: a negative epoch, or ``start_batch`` outside ``[0, len(self))``.
        """
        problems = [integer_problem("epoch", epoch, minimum=0)]
        if problem := integer_problem("start_batch", start_batch, minimum=0, maximum=max(len(self), 1) - 1):
            problems.append(f"{problem}: an epoch has {len(self)} batches")
        raise_problems(f"{type(self).__name__}.set_epoch", problems)
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def _begin_pass(self) -> tuple[torch.Generator, int]:
        """The generator of the current epoch and the first batch to yield; moves the sampler to the next epoch."""
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch))
        start = self.start_batch
        self.epoch += 1
        self.start_batch = 0
        return generator, start


class EpochShuffleSampler(_EpochSeeded, Sampler[int]):
    """A random permutation of the dataset each epoch, a pure function of ``(seed, epoch)``.

    Unlike ``RandomSampler`` with a generator, whose order depends on how often the generator was used before,
    epoch ``e`` always gets the same order, so a run resumed from a checkpoint sees what it would have seen.
    To skip the first batches of an epoch (resuming mid-epoch) give ``batch_size`` here and call
    :meth:`set_epoch` with ``start_batch``.

    Args:
        length: number of items in the dataset.
        seed: seed of the orders; ``None`` draws one from torch's global generator.
        batch_size: items per batch of the loader using this sampler (only used to skip whole batches).
    """

    def __init__(self, length: int, seed: int | None = None, batch_size: int = 1) -> None:
        raise_problems(type(self).__name__, [integer_problem("length", length, minimum=0),
                                             integer_problem("batch_size", batch_size)])
        self.length = int(length)
        self.batch_size = int(batch_size)
        self.seed = _base_seed(seed)
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        generator, start = self._begin_pass()
        order = torch.randperm(self.length, generator=generator).tolist()
        yield from order[start * self.batch_size:]


class SiteBalancedBatchSampler(_EpochSeeded, Sampler[list[int]]):
    """Batches that hold the same number of scans from every site.

    Each batch takes ``batch_size / n_sites`` scans of each site. An epoch lasts until every scan of the
    largest site was drawn once; a smaller site is drawn in a fresh random order each time it runs out, so
    its scans repeat within the epoch. (The original code zips one loader per site, which ends the epoch
    with the *smallest* site and never shows part of the larger ones.)

    The order of epoch ``e`` is a pure function of ``(seed, e)`` (:func:`epoch_seed`); each pass moves to the
    next epoch, and :meth:`set_epoch` sets the epoch (and the first batch, to resume a run mid-epoch).

    For ``torch.distributed`` give ``num_replicas`` and ``rank`` (and the same ``seed`` on every process): the
    sampler draws the batches of one process with ``num_replicas * batch_size`` scans, and process ``rank``
    takes its own ``batch_size / n_sites`` of each site's share of each of them. Every process's batch is then
    site-balanced, together they are the batch one process draws with the global batch size (disjoint parts of
    it: the largest site's scans are each drawn once an epoch, by one process; a smaller site repeats as in one
    process), and every process has the same number of batches.

    Args:
        sites: the site of every item of the dataset (any hashable values).
        batch_size: scans per batch (of each process); a multiple of the number of sites.
        seed: seed of the sampler's orders (reproducible); ``None`` draws one from torch's global generator (with
            ``num_replicas`` under ``torch.distributed``: rank 0's, on every process).
        shuffle: draw each site's scans in random order (False: in dataset order, cycling).
        num_replicas: number of processes sharing the batches.
        rank: this process's rank, in ``[0, num_replicas)``.

    Raises:
        ConfigError: ``batch_size`` is not a positive multiple of the number of sites, there is no item, or a
            rank outside ``[0, num_replicas)``.
    """

    def __init__(
        self, sites: Sequence[Hashable], batch_size: int, seed: int | None = None, shuffle: bool = True,
        num_replicas: int = 1, rank: int = 0,
    ) -> None:
        if len(sites) == 0:
            raise ConfigError("Cannot balance sites over an empty dataset.")
        groups: dict[Hashable, list[int]] = {}
        for i, site in enumerate(sites):
            groups.setdefault(site, []).append(i)
        self.groups = [groups[k] for k in sorted(groups, key=str)]
        n_sites = len(self.groups)
        problems = []
        if not is_integer(batch_size) or batch_size < n_sites or batch_size % n_sites:
            hint = max(1, round(batch_size / n_sites)) * n_sites if is_integer(batch_size) else n_sites
            problems.append(f"'batch_size' must be a positive multiple of the {n_sites} sites in the data (a "
                            f"site-balanced batch holds the same number of scans of each site; try {hint}), "
                            f"got {batch_size!r}")
        if problem := integer_problem("num_replicas", num_replicas):
            problems.append(problem)
        elif problem := integer_problem("rank", rank, minimum=0, maximum=num_replicas - 1):
            problems.append(f"{problem}: a rank of the {num_replicas} processes")
        raise_problems(type(self).__name__, problems)
        self.per_site = batch_size // n_sites
        self.batch_size = batch_size
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle = shuffle
        self.seed = broadcast_object(_base_seed(seed)) if num_replicas > 1 else _base_seed(seed)
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return math.ceil(max(len(g) for g in self.groups) / (self.per_site * self.num_replicas))

    def _stream(self, group: list[int], length: int, generator: torch.Generator) -> list[int]:
        out: list[int] = []
        while len(out) < length:
            order = torch.randperm(len(group), generator=generator).tolist() if self.shuffle else range(len(group))
            out.extend(group[j] for j in order)
        return out[:length]

    def __iter__(self) -> Iterator[list[int]]:
        generator, start = self._begin_pass()
        n = len(self)
        share = self.per_site * self.num_replicas  # each site's scans in the batch of all processes
        streams = [self._stream(g, n * share, generator) for g in self.groups]
        for b in range(start, n):
            first = b * share + self.rank * self.per_site
            yield [i for s in streams for i in s[first:first + self.per_site]]


def epoch_sampler(loader: Any) -> EpochShuffleSampler | SiteBalancedBatchSampler | None:
    """The loader's sampler whose order is set by ``set_epoch(epoch, start_batch)``, or None (another sampler)."""
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if isinstance(sampler, (SiteBalancedBatchSampler, EpochShuffleSampler)):
            return sampler
    return None


@contextmanager
def same_epoch(loader: Any, epoch: int | None = None) -> Iterator[None]:
    """Leave the loader's sampler at the epoch it was at, however many passes over the loader the block makes.

    Each pass moves an :class:`EpochShuffleSampler` or :class:`SiteBalancedBatchSampler` on to the next epoch, so a
    pass that is not training (a re-fit of the domain heads on all training features, say) would change the
    batches training draws next, and a run resumed from a checkpoint would no longer draw what an uninterrupted run
    drew. Other samplers are left alone.

    Args:
        loader: the training loader.
        epoch: the (0-based) epoch whose batches the passes in the block draw (default: the sampler's next).
    """
    sampler = epoch_sampler(loader)
    saved = None if sampler is None else (sampler.epoch, sampler.start_batch)
    if sampler is not None and epoch is not None:
        sampler.set_epoch(epoch)
    try:
        yield
    finally:
        if sampler is not None:
            sampler.epoch, sampler.start_batch = saved
