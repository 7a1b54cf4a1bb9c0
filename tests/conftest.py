"""Shared fixtures of the whole suite: a tiny synthetic multi-site cohort, generated once per session; a CSV writer."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import torch

from harmonize.data.synth import SynthConfig, generate_cohort

#: The tiny cohort: 3 sites x 6 subjects at 24^3 (about 3 s to generate, most of it loading the templates).
TINY_SITES = 3
TINY_SUBJECTS_PER_SITE = 6
TINY_SHAPE = 24
TINY_SEED = 0
#: Its configuration, and that of the biased variant (adjacent sites' age windows share half their width).
TINY_CONFIG = SynthConfig(n_sites=TINY_SITES, subjects_per_site=TINY_SUBJECTS_PER_SITE, shape=TINY_SHAPE, seed=TINY_SEED)
TINY_BIASED_CONFIG = SynthConfig(n_sites=TINY_SITES, subjects_per_site=TINY_SUBJECTS_PER_SITE, shape=TINY_SHAPE,
                                 seed=TINY_SEED, biased=True, biased_overlap=0.5)


def write_csv(path: Path, rows: Sequence[Mapping], columns: Sequence | None = None) -> Path:
    """Write ``rows`` (dicts, keys str or :class:`~harmonize.keys.Keys`) as a CSV manifest; return ``path``.

    Args:
        path: the file to write.
        rows: one dict per row.
        columns: the header, in order (default: the first row's keys); keys of a row outside it are left out.
    """
    header = [str(c) for c in (columns if columns is not None else rows[0])]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({str(k): v for k, v in row.items()} for row in rows)
    return path


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors run fastest on one thread, and CI's two cores are shared (the setting is restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of a 3-site x 6-subject cohort at 24^3 (splits 4/1/1 per site; broadly overlapping ages).

    Treat it as read-only: it is shared by every test of the session.
    """
    return generate_cohort(tmp_path_factory.mktemp("tiny_cohort"), TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_cohort_biased(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_cohort`` but with biased ages: adjacent sites' age windows share half their width."""
    return generate_cohort(tmp_path_factory.mktemp("tiny_cohort_biased"), TINY_BIASED_CONFIG)
