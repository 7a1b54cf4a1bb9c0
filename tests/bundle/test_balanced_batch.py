"""site_balanced_batch_size: the bundles' default batch size works for any number of training sites."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow, run

from harmonize.bundle import site_balanced_batch_size
from harmonize.errors import ConfigError

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
#: Networks small enough for the tiny cohort (those of test_bundles.py).
NETWORKS = {"brain_age_unlearning": {"network_def#channels": [4, 8, 8], "taps": ["encoder.block2", "encoder"],
                                     "unlearning#warmup_epochs": 0},
            "tissue_seg_unlearning": {"network_def#channels": [4, 8, 16], "unlearning#warmup_epochs": 0}}


def _sites(*counts: int) -> list[dict[str, torch.Tensor]]:
    return [{"site": torch.tensor(site)} for site, n in enumerate(counts) for _ in range(n)]


@pytest.mark.parametrize("batch_size, counts, expected", [
    (8, (4, 4), 8), (8, (4, 4, 4, 4), 8), (6, (4, 4, 4), 6),  # already a multiple: kept, no warning
    (8, (4, 4, 4), 9), (8, (3, 3, 3, 3, 3), 10), (2, (2, 2, 2), 3), (1, (2, 2), 2),  # rounded, with a warning
])
def test_a_batch_size_is_kept_or_rounded_to_the_nearest_multiple_of_the_sites(batch_size, counts, expected, caplog):
    with caplog.at_level(logging.WARNING, logger="harmonize.bundle.balanced_batch"):
        assert site_balanced_batch_size(batch_size, _sites(*counts)) == expected
    if expected == batch_size:
        assert caplog.text == ""
    else:
        assert (f"batch_size {batch_size} is not a multiple of the {len(counts)} training sites" in caplog.text
                and f"{expected} in all. Pass --batch_size with a multiple of {len(counts)}" in caplog.text)


@pytest.mark.parametrize("value", [0, -8, "8", 8.0, True, None])
def test_a_batch_size_that_is_not_a_positive_integer_is_named(value):
    with pytest.raises(ConfigError, match="bundle setting") as info:
        site_balanced_batch_size(value, _sites(4, 4))
    assert info.value.problems == [f"'batch_size' must be an integer >= 1, got {value!r} ({type(value).__name__}); "
                                   "e.g. --batch_size 2"]


@pytest.mark.parametrize("bundle", ["brain_age_unlearning", "tissue_seg_unlearning"])
def test_the_default_batch_size_works_on_a_3_site_cohort(bundle, tiny_preprocessed, tmp_path):
    """train.json's default batch_size (8) on the 3-site tiny cohort: batches of 9, 3 scans of each site.

    (Before: ``ConfigError: Argument 'batch_size': 8 is not a positive multiple of the 3 sites``.)
    """
    configs = BUNDLES / bundle / "configs"
    flow = ConfigWorkflow(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
                          workflow_type="train", logging_file=False, bundle_root=str(tmp_path),
                          manifest=str(tiny_preprocessed))
    flow.initialize()
    assert flow.parser.get_parsed_content("batch_size") == 8
    loader = flow.parser.get_parsed_content("train#dataloader")
    assert loader.batch_sampler.batch_size == 9
    batch = next(iter(loader.batch_sampler))
    assert Counter(int(loader.dataset.data[i]["site"]) for i in batch) == {0: 3, 1: 3, 2: 3}
    # and a training epoch runs with it (tiny networks, as in test_bundles.py)
    run(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"), logging_file=False,
        bundle_root=str(tmp_path), manifest=str(tiny_preprocessed), max_epochs=1, progress=False, **NETWORKS[bundle])
    assert (tmp_path / "models" / "model.pt").is_file()
