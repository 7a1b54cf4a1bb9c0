"""Preprocessing: the first run of :func:`harmonize.data.preprocess.preprocess_manifest` against a cached second run.

A cohort is generated (:func:`harmonize.data.synth.generate_cohort`), preprocessed into a new folder, then
preprocessed again into the same folder, where every scan's inputs and settings are unchanged so every output
comes from the cache. Figures: volumes per second of each run and the speed-up of the second.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkResult, Column, Target, Workers, finish, median
from harmonize import defaults

__all__ = ["PreprocessSettings", "run_preprocess"]


@dataclass
class PreprocessSettings:
    """Sizes of the preprocessing benchmark.

    Args:
        sites, subjects_per_site, shape: the generated cohort (default: the embedded cohort's sites and scans,
            10 subjects per site).
        target_spacing, target_shape: the preprocessing settings (default: the library's).
        repeats: first-run / cached-run pairs, each into a new folder (the median is reported).
        seed: seed of the cohort.
    """

    sites: int = defaults.SYNTH_SITES
    subjects_per_site: int = 10
    shape: int = defaults.SYNTH_SHAPE
    target_spacing: float = defaults.TARGET_SPACING
    target_shape: tuple[int, int, int] = defaults.TARGET_SHAPE
    repeats: int = 1
    seed: int = defaults.SEED

    @classmethod
    def for_size(cls, size: str) -> PreprocessSettings:
        """``smallest`` (a test: 2 sites x 3 subjects at 16^3 to 16^3), ``quick`` or ``full``."""
        if size == "smallest":
            return cls(sites=2, subjects_per_site=3, shape=16, target_spacing=12.0, target_shape=(16, 16, 16))
        if size == "quick":
            return cls(sites=2, subjects_per_site=8, shape=32, target_spacing=6.0, target_shape=(32, 32, 32))
        return cls()


def run_preprocess(settings: PreprocessSettings | None = None, device: str = "cpu", work_dir: Path | None = None,
                   report: Callable[[str], None] = print, workers: Workers | None = None) -> BenchmarkResult:
    """Time a first and a cached second preprocessing run of the same cohort.

    Args:
        settings: sizes (default: the embedded cohort with the library's preprocessing settings).
        device: unused (preprocessing runs on the CPU).
        work_dir: where the cohort and outputs are written (default: a temporary folder, removed after).
        report: where the table is printed.
        workers: unused (its figures are times, which need the machine alone: it runs in this process).

    Returns:
        Rows ``run`` (``first``, ``cached``), ``volumes``, ``processed``, ``cached``, ``seconds``,
        ``volumes_per_second``, ``speedup`` (first run's time over this run's).
    """
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest
    from harmonize.data.synth import SynthConfig, generate_cohort

    settings = settings or PreprocessSettings()
    start = time.perf_counter()
    config = PreprocessConfig(target_spacing=settings.target_spacing, target_shape=settings.target_shape)
    runs: dict[str, list[Any]] = {"first": [], "cached": []}
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        root = Path(work_dir) / "preprocess" if work_dir is not None else Path(tmp)
        synth = SynthConfig(n_sites=settings.sites, subjects_per_site=settings.subjects_per_site,
                            shape=settings.shape, seed=settings.seed)
        manifest = generate_cohort(root / "cohort", synth, overwrite=True)
        for i in range(settings.repeats):
            out = root / f"preprocessed{i}"
            for name, timed in runs.items():
                begin = time.perf_counter()
                done = preprocess_manifest(manifest, out, config, overwrite=name == "first", progress=False)
                timed.append((time.perf_counter() - begin, done))
    volumes = settings.sites * settings.subjects_per_site
    first_seconds = median([s for s, _ in runs["first"]])
    rows = []
    for name, results in runs.items():
        seconds = median([s for s, _ in results])
        last = results[-1][1]
        rows.append({"run": name, "volumes": volumes, "processed": last.processed, "cached": last.cached,
                     "seconds": seconds, "volumes_per_second": volumes / seconds if seconds > 0 else None,
                     "speedup": first_seconds / seconds if seconds > 0 else None})
    cached = rows[1]
    all_cached = cached["processed"] == 0 and cached["cached"] == volumes
    why = "" if all_cached else (f"The second run recomputed {cached['processed']} of {volumes} scans: their cache "
                                 "records did not match the inputs or settings.")
    result = BenchmarkResult(
        name="preprocess",
        title="Preprocessing: first run against the cached second run",
        description=(
            f"`preprocess_manifest` on a generated cohort of {settings.sites} sites x {settings.subjects_per_site} "
            f"subjects at {settings.shape}³, to {settings.target_shape} at {settings.target_spacing:g} mm (per-site "
            "histogram standardisation, z-normalisation), then again into the same folder; median of "
            f"{settings.repeats} pair(s), each into a new folder."
        ),
        columns=[
            Column("run", "run"),
            Column("volumes", "volumes"),
            Column("processed", "processed"),
            Column("cached", "from cache"),
            Column("seconds", "seconds", ".2f"),
            Column("volumes_per_second", "volumes / s", ".1f"),
            Column("speedup", "speed-up", ".1f"),
        ],
        rows=rows,
        targets=[Target("check (no issue target): the second run takes every scan from the cache", all_cached,
                        f"{cached['cached']} of {volumes} cached, {cached['speedup']:.1f}x faster", why)],
        settings=asdict(settings),
    )
    return finish(result, start, report)
