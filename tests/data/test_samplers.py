"""Samplers whose order is a pure function of (seed, epoch): the shuffle and the site-balanced batches."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from harmonize.data.samplers import EpochShuffleSampler, SiteBalancedBatchSampler, epoch_sampler, epoch_seed, same_epoch
from harmonize.errors import ConfigError


def test_balanced_sampler_is_reproducible_and_checks_batch_size():
    sites = [0] * 7 + [1] * 3 + [2] * 5
    sampler = SiteBalancedBatchSampler(sites, batch_size=6, seed=3)
    epoch = list(sampler)
    assert len(epoch) == len(sampler) == 4
    for batch in epoch:
        assert sorted(sites[i] for i in batch) == [0, 0, 1, 1, 2, 2]
    drawn_from_0 = [i for batch in epoch for i in batch if sites[i] == 0]
    assert len(drawn_from_0) == 8 and set(drawn_from_0) == set(range(7))  # each once, one more to fill up
    assert epoch == list(SiteBalancedBatchSampler(sites, batch_size=6, seed=3))
    assert epoch != list(sampler)  # the next epoch is drawn anew
    with pytest.raises(ConfigError, match=r"'batch_size' must be a positive multiple of the 3 sites.*try 9\), got 8"):
        SiteBalancedBatchSampler(sites, batch_size=8)
    with pytest.raises(ConfigError, match="empty dataset"):
        SiteBalancedBatchSampler([], batch_size=2)
    assert np.unique([len(b) for b in SiteBalancedBatchSampler(sites, batch_size=3, shuffle=False)]).tolist() == [3]


def test_sampler_order_is_a_pure_function_of_seed_and_epoch():
    sites = [0] * 7 + [1] * 3 + [2] * 5
    first = SiteBalancedBatchSampler(sites, batch_size=6, seed=3)
    epochs = [list(first) for _ in range(3)]  # each pass moves on to the next epoch
    assert epochs[0] != epochs[1] != epochs[2]
    other = SiteBalancedBatchSampler(sites, batch_size=6, seed=3)
    other.set_epoch(2)
    assert list(other) == epochs[2]
    assert list(other) == list(first)  # both moved on to epoch 3
    other.set_epoch(1, start_batch=3)
    assert list(other) == epochs[1][3:]  # a run resumed mid-epoch sees the rest of that epoch
    with pytest.raises(ConfigError) as err:  # both named at once, each with its value and what is allowed
        other.set_epoch(-1, start_batch=4)
    assert err.value.problems == ["'epoch' must be an integer >= 0, got -1 (int)",
                                  "'start_batch' must be an integer >= 0 and <= 3, got 4 (int): an epoch has 4 batches"]
    assert epoch_seed(3, 1) == epoch_seed(3, 1) and epoch_seed(3, 1) not in (epoch_seed(3, 2), epoch_seed(4, 1))


def test_a_pass_inside_same_epoch_leaves_the_order_training_draws_next():
    sites = [0] * 7 + [1] * 3 + [2] * 5
    reference = SiteBalancedBatchSampler(sites, batch_size=6, seed=3)
    epochs = [list(reference) for _ in range(3)]
    loader = DataLoader(list(range(len(sites))), batch_sampler=SiteBalancedBatchSampler(sites, batch_size=6, seed=3))
    assert epoch_sampler(loader) is loader.batch_sampler
    assert [b.tolist() for b in loader] == epochs[0]
    with same_epoch(loader):  # an extra pass (a re-fit of the domain heads, say) draws the next epoch's batches
        assert [b.tolist() for b in loader] == epochs[1]
        assert [b.tolist() for b in loader] == epochs[2]  # passes move on inside the block...
    with same_epoch(loader, epoch=2):  # or the batches of the epoch it names
        assert [b.tolist() for b in loader] == epochs[2]
    assert [b.tolist() for b in loader] == epochs[1]  # ...and after it training goes on where it was
    shuffled = DataLoader(list(range(5)), sampler=EpochShuffleSampler(5, seed=0))
    assert epoch_sampler(shuffled) is shuffled.sampler
    plain = DataLoader(list(range(5)), shuffle=True)
    assert epoch_sampler(plain) is None
    with same_epoch(plain, epoch=3):  # another sampler: left alone
        assert sorted(int(b) for b in plain) == list(range(5))


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_share_each_global_batch_in_balanced_disjoint_parts(replicas):
    sites = [0] * 7 + [1] * 3 + [2] * 5
    whole = SiteBalancedBatchSampler(sites, batch_size=3 * replicas, seed=3)
    shards = [SiteBalancedBatchSampler(sites, batch_size=3, seed=3, num_replicas=replicas, rank=r)
              for r in range(replicas)]
    assert {len(s) for s in shards} == {len(whole)} == {-(-7 // replicas)}  # every process, as many batches
    for epoch in range(2):  # each pass draws the next epoch, on every process alike
        parts = [list(s) for s in shards]
        for b, batch in enumerate(list(whole)):
            for part in parts:
                assert sorted(sites[i] for i in part[b]) == [0, 1, 2]  # balanced on each process
            together = [i for part in parts for i in part[b]]
            assert sorted(together) == sorted(batch)  # the one-process batch of the global size, split
            if epoch == 0 and b == 0:
                assert len(set(together)) == len(together) == 3 * replicas  # disjoint shares
    shards[1].set_epoch(0, start_batch=1)
    assert list(shards[1]) == list(SiteBalancedBatchSampler(sites, 3, seed=3, num_replicas=replicas, rank=1))[1:]
    with pytest.raises(ConfigError, match=r"'rank' must be an integer >= 0 and <= 1, got 2 \(int\): a rank of the 2"):
        SiteBalancedBatchSampler(sites, batch_size=3, num_replicas=2, rank=2)
    with pytest.raises(ConfigError) as err:
        SiteBalancedBatchSampler(sites, batch_size=4, num_replicas=1.5)
    assert err.value.problems == [
        "'batch_size' must be a positive multiple of the 3 sites in the data (a site-balanced batch holds the same "
        "number of scans of each site; try 3), got 4",
        "'num_replicas' must be an integer >= 1, got 1.5 (float)",
    ]


def test_epoch_shuffle_sampler_names_every_bad_argument():
    with pytest.raises(ConfigError) as err:
        EpochShuffleSampler(-1, batch_size=0)
    assert err.value.message == "EpochShuffleSampler: invalid arguments."
    assert err.value.problems == ["'length' must be an integer >= 0, got -1 (int)",
                                  "'batch_size' must be an integer >= 1, got 0 (int)"]
