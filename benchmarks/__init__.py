"""Benchmarks of harmonize: every claim of the project measured side by side, in one run (issue #8).

Run ``python -m benchmarks [name ...] [--quick] [--jobs N] [--threads N] [--device cpu|cuda] [--out F]
[--update]`` from the repository root. One module per benchmark, each with a settings dataclass
(``for_size("smallest" | "quick" | "full")``) and a ``run_<name>(settings, device, work_dir, report, workers)``
function that prints its table and returns a :class:`~benchmarks.common.BenchmarkResult` (rows, targets met or
missed); :mod:`benchmarks.common` holds the machine description, the parallel workers of independent trainings, the
interleaved timer and the markdown writer.
"""

from __future__ import annotations

__all__ = ["BENCHMARKS"]

#: Benchmark name -> (module, settings class, run function), in report order.
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "overhead": ("benchmarks.overhead", "OverheadSettings", "run_overhead"),
    "efficacy": ("benchmarks.efficacy", "EfficacySettings", "run_efficacy"),
    "sites": ("benchmarks.sites", "SitesSettings", "run_sites"),
    "recon": ("benchmarks.recon", "ReconSettings", "run_recon"),
    "forgetting": ("benchmarks.forgetting", "ForgettingSettings", "run_forgetting"),
    "preprocess": ("benchmarks.preprocess", "PreprocessSettings", "run_preprocess"),
    "scale": ("benchmarks.scale", "ScaleSettings", "run_scale"),
}
