"""Scale: peak memory against the number of scans (in memory, on disk, streamed), and parallel preprocessing.

Memory: a cohort is generated (:func:`harmonize.data.synth.generate_cohort`) and copied, scan by scan, into a
cohort of the largest number of scans, each row its own image and label files and subject id (generating a scan
takes seconds on a loaded machine; what a dataset holds and reads per scan depends on its size, not its anatomy).
For each number of scans and each dataset cache (:class:`~harmonize.keys.DatasetCache`: ``memory``, ``disk``,
``none``), a fresh Python process builds :func:`~harmonize.data.dataset.make_dataset` over the copied manifest's
first scans and reads two epochs of batches through a data loader; its peak resident memory above what it held
before is the figure (:func:`~benchmarks.common.peak_rss_delta_mb`).

Preprocessing: the generated scans preprocessed with ``jobs=1`` and ``jobs=2`` into new folders (wall time of each, and
whether every output file has the same bytes), and as two shards after a fit step, merged (whether the manifest
and files equal the one-process run's). Each preprocessing row records the machine's load average (1 min) when the
run began: other processes' work on the same cores slows ``jobs=2`` more than ``jobs=1``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BenchmarkResult,
    Column,
    Target,
    Workers,
    available_cores,
    finish,
    load_averages,
    peak_mb_in_child,
    peak_rss_delta_mb,
)
from harmonize import defaults

__all__ = ["ScaleSettings", "dataset_peak_mb", "run_scale"]

#: Longest a memory process may run (seconds).
MEMORY_TIMEOUT_S = 1200
#: The dataset caches compared, in table order.
CACHES = ("memory", "disk", "none")
#: Scans per batch while reading the epochs.
BATCH_SIZE = 8
#: Epochs read in each memory process (the second reads the disk cache the first wrote).
EPOCHS = 2


@dataclass
class ScaleSettings:
    """Sizes of the scale benchmark.

    Args:
        scans: numbers of scans whose peak memory is measured (the largest number of rows, copies of the generated
            scans in turn, is written once; a smaller number reads its first rows).
        shape: the generated scans' shape (cubic).
        sites, subjects: the generated cohort, ``sites`` x ``subjects`` scans.
        preprocess_scans: how many of the copied scans (the copied manifest's first rows) are preprocessed with 1
            and 2 jobs and as 2 shards: enough that the workers' start (a fork server importing torch and TorchIO,
            once per run) is small beside the work, as in a cohort (at most the largest of ``scans``).
        target_spacing, target_shape: the preprocessing settings.
        loader_workers: data-loader worker processes while reading the epochs.
        seed: seed of the cohorts.
    """

    scans: tuple[int, ...] = (200, 800)
    shape: int = defaults.SYNTH_SHAPE
    sites: int = defaults.SYNTH_SITES
    subjects: int = 20
    preprocess_scans: int = 200
    target_spacing: float = defaults.TARGET_SPACING
    target_shape: tuple[int, int, int] = defaults.TARGET_SHAPE
    loader_workers: int = 0
    seed: int = defaults.SEED

    @classmethod
    def for_size(cls, size: str) -> ScaleSettings:
        """``smallest`` (a test: 8 and 16 scans at 16^3, 6 preprocessed), ``quick`` (50 and 200 scans at 32^3, 50
        preprocessed) or ``full`` (200 and 800 scans at 64^3, 200 preprocessed to the default 2 mm grid)."""
        if size == "smallest":
            return cls(scans=(8, 16), shape=16, sites=2, subjects=3, preprocess_scans=6, target_spacing=12.0,
                       target_shape=(16, 16, 16))
        if size == "quick":
            return cls(scans=(50, 200), shape=32, sites=2, subjects=8, preprocess_scans=50, target_spacing=6.0,
                       target_shape=(32, 32, 32))
        return cls()

    def __post_init__(self) -> None:
        if not 1 <= self.preprocess_scans <= max(self.scans):
            raise ValueError(f"ScaleSettings: preprocess_scans must lie in [1, {max(self.scans)}] (the largest of "
                             f"'scans'), got {self.preprocess_scans}")


# ---------------------------------------------------------------------------------------------------- memory
def dataset_peak_mb(manifest: str, scans: int, cache: str, cache_dir: str, loader_workers: int = 0) -> float:
    """Peak memory (MiB) of building the dataset of the manifest's first ``scans`` rows and reading
    :data:`EPOCHS` epochs of it, above this process's memory before. Run it in a fresh process."""
    import torch

    from harmonize.data.dataset import make_dataloader, make_dataset
    from harmonize.data.manifest import read_manifest

    frame = read_manifest(manifest).iloc[:scans]
    total = torch.zeros(())

    def work() -> None:
        nonlocal total
        dataset = make_dataset(frame, site_index=Path(cache_dir) / "site_index.json", cache=cache,
                               cache_dir=Path(cache_dir) / "items")
        loader = make_dataloader(dataset, batch_size=BATCH_SIZE, shuffle=False, num_workers=loader_workers)
        for _ in range(EPOCHS):
            for batch in loader:
                total = total + batch["image"].sum()

    return peak_rss_delta_mb(work)


def _memory_in_fresh_process(manifest: Path, scans: int, cache: str, cache_dir: Path, loader_workers: int) -> float:
    """:func:`dataset_peak_mb` in a new Python process."""
    job = {"manifest": str(manifest), "scans": scans, "cache": cache, "cache_dir": str(cache_dir),
           "loader_workers": loader_workers}
    return peak_mb_in_child("benchmarks.scale", job, f"{scans} scans ({cache})", MEMORY_TIMEOUT_S)


def _memory_child() -> None:
    """Entry point of the memory process: a job as JSON on stdin, ``{"peak_mb": ...}`` on stdout."""
    job = json.loads(sys.stdin.read())
    print(json.dumps({"peak_mb": dataset_peak_mb(**job)}))


# ------------------------------------------------------------------------------------------------ preprocessing
def _hashes(folder: Path) -> dict[str, str]:
    """The bytes of every output (the shards' own folders and the bookkeeping of the folder claim left out)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).parts[0] != "shards"
            and not p.name.startswith(".harmonize")}


def _copied_cohort(manifest: Path, scans: int, out: Path) -> Path:
    """A manifest of ``scans`` rows in ``out``: the generated scans in turn, each row with its own copy of the image
    and label files and its own subject id (``<id>-copy<k>``); its path."""
    import pandas as pd

    generated = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    rows = []
    for i in range(scans):
        row = generated.iloc[i % len(generated)].to_dict()
        row["subject_id"] = f"{row['subject_id']}-copy{i // len(generated)}"
        for column in ("image", "label"):
            relative = Path(column + "s") / f"{row['subject_id']}.nii.gz"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(manifest.parent / row[column], out / relative)
            row[column] = relative.as_posix()
        rows.append(row)
    copied = out / "manifest.csv"
    pd.DataFrame(rows, columns=generated.columns).to_csv(copied, index=False)
    return copied


def _first_rows(manifest: Path, rows: int) -> Path:
    """A manifest beside ``manifest`` (so its relative paths hold) of its first ``rows`` rows; its path."""
    import pandas as pd

    first = manifest.with_name(f"first{rows}.csv")
    pd.read_csv(manifest, dtype=str, keep_default_na=False).iloc[:rows].to_csv(first, index=False)
    return first


def _preprocess_rows(settings: ScaleSettings, copied: Path, root: Path) -> tuple[list[dict[str, Any]], bool, bool]:
    """Preprocess the first copied scans with 1 and 2 jobs, and as 2 shards; the rows and whether the outputs
    matched."""
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest

    config = PreprocessConfig(target_spacing=settings.target_spacing, target_shape=settings.target_shape)
    scans = settings.preprocess_scans
    manifest = _first_rows(copied, scans)
    rows, seconds = [], {}
    for jobs in (1, 2):
        load = _load_1min()
        begin = time.perf_counter()
        preprocess_manifest(manifest, root / f"jobs{jobs}", config, overwrite=True, progress=False, jobs=jobs)
        seconds[jobs] = time.perf_counter() - begin
        rows.append({"run": f"--jobs {jobs}", "scans": scans, "seconds": seconds[jobs],
                     "speedup": seconds[1] / seconds[jobs], "load": load})
    identical = _hashes(root / "jobs1") == _hashes(root / "jobs2")
    sharded = root / "sharded"
    load = _load_1min()
    begin = time.perf_counter()
    preprocess_manifest(manifest, sharded, config, overwrite=True, progress=False, fit_only=True)
    for shard in ("1/2", "2/2"):
        preprocess_manifest(manifest, sharded, config, progress=False, shard=shard)
    preprocess_manifest(manifest, sharded, config, progress=False, merge=True)
    seconds["shards"] = time.perf_counter() - begin
    same_as_sharded = _hashes(root / "jobs1") == _hashes(sharded)
    rows.append({"run": "fit, shards 1/2 and 2/2 one after another, merge", "scans": scans,
                 "seconds": seconds["shards"], "speedup": seconds[1] / seconds["shards"],
                 "same_bytes": same_as_sharded, "load": load})
    rows[0]["same_bytes"], rows[1]["same_bytes"] = None, identical
    return rows, identical, same_as_sharded


def _load_1min() -> float | None:
    """The machine's load average over the last minute (``None`` where the platform has none)."""
    loads = load_averages()
    return None if loads is None else loads[0]


def _jobs_why(preprocess_rows: list[dict[str, Any]]) -> str:
    """Why ``--jobs 2`` missed its target, from the measured figures: the times, and the load beside them."""
    one, two = preprocess_rows[0], preprocess_rows[1]
    why = (f"--jobs 1 took {one['seconds']:.1f} s and --jobs 2 {two['seconds']:.1f} s for {two['scans']} scans. "
           "--jobs 1 is not one core's work: torch and SimpleITK spread parts of each scan over the cores, while "
           "each worker of --jobs 2 computes on one thread; the workers also start once per run (a fork server "
           "that imports torch and TorchIO), and the landmarks are fitted in the main process between the passes.")
    if one["load"] is not None and two["load"] is not None:
        why += (f" The load average (1 min) was {one['load']:.2f} when --jobs 1 began and {two['load']:.2f} when "
                f"--jobs 2 began, on {available_cores()} cores: work of other processes beside a run takes cores that "
                "--jobs 2 needs and --jobs 1 leaves idle.")
    return why


# ---------------------------------------------------------------------------------------------------- benchmark
def run_scale(settings: ScaleSettings | None = None, device: str = "cpu", work_dir: Path | None = None,
              report: Callable[[str], None] = print, workers: Workers | None = None) -> BenchmarkResult:
    """Measure peak memory against the number of scans for each dataset cache, and parallel preprocessing.

    Args:
        settings: sizes (default: 200 and 800 scans at 64^3, copies of 80 generated scans; those 80 preprocessed).
        device: unused (datasets and preprocessing run on the CPU).
        work_dir: where the cohorts, caches and outputs are written (default: a temporary folder, removed after).
        report: where the table is printed.
        workers: unused (memory processes run one at a time, so that the timings beside them stay honest).

    Returns:
        Rows of two kinds: ``measure`` ``memory`` (``scans``, ``cache``, ``peak_mb``, ``mb_per_scan``) and
        ``measure`` ``preprocess`` (``run``, ``scans``, ``seconds``, ``speedup``, ``same_bytes``, ``load``: the load
        average over the minute before the run began).
    """
    from harmonize.data.synth import SynthConfig, generate_cohort

    settings = settings or ScaleSettings()
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(work_dir) / "scale" if work_dir is not None else Path(tmp)
        largest = max(settings.scans)
        synth = SynthConfig(n_sites=settings.sites, subjects_per_site=settings.subjects, shape=settings.shape,
                            seed=settings.seed)
        generated = generate_cohort(root / "cohort", synth, overwrite=True)
        manifest = _copied_cohort(generated, largest, root / "copies")
        peaks: dict[tuple[str, int], float] = {}
        for scans in sorted(settings.scans):
            for cache in CACHES:
                cache_dir = root / f"cache-{cache}-{scans}"
                peaks[cache, scans] = _memory_in_fresh_process(manifest, scans, cache, cache_dir,
                                                               settings.loader_workers)
                rows.append({"measure": "memory", "scans": scans, "cache": cache, "peak_mb": peaks[cache, scans],
                             "mb_per_scan": peaks[cache, scans] / scans})
        preprocess_rows, identical, same_as_sharded = _preprocess_rows(settings, manifest, root)
    rows += [{"measure": "preprocess", **row} for row in preprocess_rows]
    small, large = min(settings.scans), max(settings.scans)
    growth = {cache: peaks[cache, large] / max(peaks[cache, small], 1e-9) for cache in CACHES}
    ratio = large / small
    flat = {cache: growth[cache] < ratio / 2 for cache in ("disk", "none")}
    two_jobs = next(r for r in preprocess_rows if r["run"] == "--jobs 2")
    result = BenchmarkResult(
        name="scale",
        title="Scale: memory against the number of scans, and parallel preprocessing",
        description=(
            f"Peak resident memory (above the process's memory before) of building a dataset of the first N of "
            f"{largest} scans of {settings.shape}³ (with labels; each its own files, copies of {settings.sites} "
            f"sites x {settings.subjects} generated scans in turn) and reading {EPOCHS} epochs of batches of {BATCH_SIZE} "
            f"({settings.loader_workers} loader workers), one fresh process per figure; then the preprocessing of the "
            f"first {settings.preprocess_scans} of those scans to {settings.target_shape} at "
            f"{settings.target_spacing} mm with 1 and 2 worker processes, and as 2 shards after the fit step (shards "
            "run one after another here; on a cluster they run at once). The load column is the machine's load "
            "average over the minute before each preprocessing run began."
        ),
        columns=[
            Column("measure", "measure"),
            Column("scans", "scans"),
            Column("cache", "dataset cache"),
            Column("peak_mb", "peak MiB", ".1f"),
            Column("mb_per_scan", "MiB / scan", ".3f"),
            Column("run", "preprocessing run"),
            Column("seconds", "seconds", ".1f"),
            Column("speedup", "speed-up", ".2f"),
            Column("same_bytes", "same bytes as --jobs 1"),
            Column("load", "load (1 min) at start", ".2f"),
        ],
        rows=rows,
        targets=[
            Target(f"streamed ('none') peak memory grows far slower than the scans ({small} -> {large} scans, "
                   f"{ratio:.0f}x)", flat["none"], f"{growth['none']:.2f}x (memory cache: {growth['memory']:.2f}x)"),
            Target("disk-cached peak memory grows far slower than the scans", flat["disk"],
                   f"{growth['disk']:.2f}x"),
            Target("check: --jobs 2 writes the same bytes as --jobs 1", identical,
                   "identical" if identical else "different"),
            Target("check: fit + 2 shards + merge write the same manifest and files as one run", same_as_sharded,
                   "identical" if same_as_sharded else "different"),
            Target("--jobs 2 at least 1.8x faster than --jobs 1 (issue #19, on 2 free cores)",
                   two_jobs["speedup"] >= 1.8, f"{two_jobs['speedup']:.2f}x", _jobs_why(preprocess_rows)),
        ],
        settings=asdict(settings),
    )
    return finish(result, start, report)
