"""Scaling with sites: does unlearning cost more, or work less, with many scanners?

Two measurements for 2, 8 and 32 sites:

- **time**: one training iteration with :class:`~harmonize.handlers.DomainUnlearningHandler` (fused) whose
  domain head has that many classes, on the overhead benchmark's network and random batches
  (:func:`benchmarks.overhead.build_trainer`), the site counts' samples interleaved with each other and with
  plain training; the figure is the time relative to 2 sites (median of per-round ratios);
- **probe**: a cohort of the same total number of subjects split over that many sites
  (:func:`harmonize.data.synth.generate_cohort`, a third each in train / val / test), a fused-unlearning
  brain-age model trained on it with :func:`~harmonize.workflows.brain_age.train_brain_age` (library defaults),
  and the site probe of :func:`~harmonize.workflows.brain_age.evaluate_brain_age` above chance.

Target (issue #8): at most 1.1x time growth from 2 to 32 sites. The timing runs first, alone; then the site
counts' probes, which are independent, train in parallel processes (:class:`~benchmarks.common.Workers`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    BenchmarkResult,
    Column,
    Target,
    Workers,
    finish,
    interleaved_times,
    median,
    paired_ratio,
    probe_figures,
    ratio_spread,
)
from benchmarks.efficacy import prepare_cohort
from benchmarks.overhead import OverheadSettings, build_trainer
from harmonize import defaults
from harmonize.keys import Method, UnlearningMode

__all__ = ["SitesSettings", "run_sites"]

#: Target: time per iteration with 32 sites at most this multiple of the time with 2.
GROWTH_TARGET = 1.1
#: Fraction of each site's subjects in val and in test (so that 32 sites keep 2 + 2 held-out scans each).
HELD_OUT_FRACTION = 1 / 3


@dataclass
class SitesSettings:
    """Sizes of the scaling benchmark.

    Args:
        site_counts: the numbers of sites compared (the first is the reference).
        total_subjects: subjects of every cohort (divisible by each site count).
        shape, preprocess_shape, preprocess_spacing: the cohorts and what the networks see.
        max_epochs, warmup_epochs, channels, taps, batch_size: the training (sites are not balanced within a
            batch, so every site count trains with the same batches' size).
        timing: the overhead settings used for the time per iteration (only the iterations and repeats differ).
        probe: also train on the cohorts and probe the features (else only the timing runs).
        seed: seed of the cohorts, the training and the batches.
    """

    site_counts: tuple[int, ...] = (2, 8, 32)
    total_subjects: int = 192
    shape: int = 48
    preprocess_shape: tuple[int, int, int] = defaults.DEMO_SHAPE
    preprocess_spacing: float = defaults.DEMO_SPACING
    max_epochs: int = 10
    warmup_epochs: int = defaults.WARMUP_EPOCHS
    channels: tuple[int, ...] = defaults.DEMO_CHANNELS
    taps: tuple[str, ...] = defaults.AGE_TAPS
    batch_size: int = defaults.BATCH_SIZE
    timing: OverheadSettings = field(default_factory=lambda: OverheadSettings(iterations=2, repeats=8, memory=False))
    probe: bool = True
    seed: int = defaults.SEED

    @classmethod
    def for_size(cls, size: str) -> SitesSettings:
        """``smallest`` (a test: 2 and 4 sites, tiny net, 16^3), ``quick`` or ``full``."""
        if size == "smallest":
            return cls(site_counts=(2, 4), total_subjects=24, shape=16, preprocess_shape=(16, 16, 16),
                       preprocess_spacing=12.0, max_epochs=2, warmup_epochs=1, channels=(4, 8, 8), taps=("encoder",),
                       timing=OverheadSettings.for_size("smallest"))
        if size == "quick":
            return cls(total_subjects=96, shape=24, preprocess_shape=(16, 16, 16), preprocess_spacing=12.0, max_epochs=3,
                       warmup_epochs=1, channels=(8, 8, 16), taps=("encoder",),
                       timing=OverheadSettings(shape=16, iterations=2, repeats=3, memory=False))
        return cls()


def _timing(settings: SitesSettings, device: str) -> dict[str, list[float]]:
    timing = replace(settings.timing, channels=settings.channels, taps=settings.taps, batch_size=settings.batch_size)
    variants = {"plain": build_trainer("plain", timing, device).run}
    for n in settings.site_counts:
        variants[str(n)] = build_trainer("fused", timing, device, sites=n).run
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    return interleaved_times(variants, timing.repeats, timing.warmup, sync)


def _probe(n_sites: int, root: Path, settings: SitesSettings, device: str) -> dict[str, Any]:
    """Train a fused-unlearning model on a cohort of ``n_sites`` sites and audit it (a worker process's task)."""
    from harmonize.data.synth import SynthConfig
    from harmonize.workflows.brain_age import (
        BrainAgeSettings,
        evaluate_brain_age,
        train_brain_age,
    )
    from harmonize.workflows.unlearning import UnlearningSettings

    synth = SynthConfig(n_sites=n_sites, subjects_per_site=settings.total_subjects // n_sites, shape=settings.shape,
                        seed=settings.seed, val_fraction=HELD_OUT_FRACTION, test_fraction=HELD_OUT_FRACTION)
    manifest = prepare_cohort(root / f"sites{n_sites}", synth, settings.preprocess_shape, settings.preprocess_spacing)
    unlearning = UnlearningSettings(method=Method.UNLEARNING, mode=UnlearningMode.FUSED,
                                    warmup_epochs=settings.warmup_epochs)
    run = BrainAgeSettings(unlearning=unlearning, max_epochs=settings.max_epochs, channels=settings.channels,
                           taps=settings.taps, batch_size=settings.batch_size, balance_sites=False, seed=settings.seed,
                           device=device)
    return evaluate_brain_age(train_brain_age(manifest, run), manifest, seed=settings.seed)


def run_sites(settings: SitesSettings | None = None, device: str = "cpu", work_dir: Path | None = None,
              report: Callable[[str], None] = print, workers: Workers | None = None) -> BenchmarkResult:
    """Time per fused iteration and site probe for each site count.

    Args:
        settings: sizes (default: the full benchmark).
        device: ``cpu`` or ``cuda``.
        work_dir: where the cohorts are written (default: a temporary folder, removed after).
        report: where the table is printed.
        workers: parallel jobs of the probes (default: one after another in this process); the timing always
            runs in this process, before them.

    Returns:
        Rows ``sites``, ``ms_per_iteration``, ``time_vs_first`` (relative to the first site count),
        ``time_vs_first_spread`` (first to third quartile of its per-round ratios, as text),
        ``time_vs_plain``, and with ``probe``: ``site_probe_bacc``, ``chance``, ``points_above_chance``,
        ``age_mae``, ``domain_head_acc``.
    """
    settings = settings or SitesSettings()
    workers = workers or Workers()
    bad = [n for n in settings.site_counts if n < 2 or settings.total_subjects % n or settings.total_subjects // n < 3]
    if bad:
        raise ValueError(f"site_counts {bad}: each must be >= 2, divide total_subjects={settings.total_subjects} "
                         "and leave at least 3 subjects per site.")
    start = time.perf_counter()
    times = _timing(settings, device)
    first = str(settings.site_counts[0])
    rows = [
        {
            "sites": n,
            "ms_per_iteration": 1000 * median(times[str(n)]) / settings.timing.iterations,
            "time_vs_first": paired_ratio(times, str(n), first),
            "time_vs_first_spread": ratio_spread(times, str(n), first, ".3f"),
            "time_vs_plain": paired_ratio(times, str(n), "plain"),
        }
        for n in settings.site_counts
    ]
    if settings.probe:
        with tempfile.TemporaryDirectory(prefix="bench-sites-") as tmp:
            root = Path(work_dir) / "sites" if work_dir is not None else Path(tmp)

            def progress(index: int, metrics: dict[str, Any]) -> None:
                report(f"  sites {rows[index]['sites']}: probe {metrics['site_probe_bacc']:.3f} "
                       f"(chance {metrics['chance']:.3f})")

            probes = workers.map(_probe, [(row["sites"], root, settings, device) for row in rows], done=progress)
        for row, metrics in zip(rows, probes):
            row.update(probe_figures(metrics))
    last = rows[-1]
    growth = last["time_vs_first"]
    met = growth <= GROWTH_TARGET
    why = "" if met else (
        f"The only part that grows with the sites is the domain head's output layer and its loss "
        f"({last['sites']} classes instead of {rows[0]['sites']}); a {100 * (growth - 1):.0f}% growth means that part "
        "is no longer negligible next to the network at these sizes, or that the machine's noise exceeded the margin."
    )
    result = BenchmarkResult(
        name="sites",
        title="Scaling with the number of sites",
        description=(
            f"Time per training iteration with the handler (fused) whose head has 2 to {last['sites']} classes, "
            f"on the overhead benchmark's network {settings.channels} and random batches of {settings.batch_size}, "
            f"median of {settings.timing.repeats} interleaved samples of {settings.timing.iterations} iterations "
            "(spread: first to third quartile of the per-round ratios); "
            + (f"and the site probe of a fused-unlearning model trained {settings.max_epochs} epochs on a cohort of "
               f"{settings.total_subjects} subjects split over that many sites (a third each in train / val / test, "
               "batches not site-balanced), library defaults otherwise; the probes' models trained "
               f"{workers.describe(len(rows))}, after the timing." if settings.probe else "")
        ),
        columns=[
            Column("sites", "sites"),
            Column("ms_per_iteration", "ms / iteration", ".1f"),
            Column("time_vs_first", f"time vs {first} sites", ".3f"),
            Column("time_vs_first_spread", "spread over rounds"),
            Column("time_vs_plain", "time vs plain", ".2f"),
            Column("site_probe_bacc", "site probe bacc", ".3f"),
            Column("chance", "chance", ".3f"),
            Column("points_above_chance", "points above chance", ".1f"),
            Column("age_mae", "age MAE (y)", ".2f"),
            Column("domain_head_acc", "domain head acc", ".3f"),
        ],
        rows=rows,
        targets=[Target(f"time with {last['sites']} sites <= {GROWTH_TARGET}x time with {first}", met,
                        f"{growth:.3f}x", why)],
        settings={k: v for k, v in asdict(settings).items() if k != "timing"}
        | {"timing iterations": settings.timing.iterations, "timing repeats": settings.timing.repeats},
    )
    return finish(result, start, report)
