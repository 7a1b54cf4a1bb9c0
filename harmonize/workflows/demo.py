"""The main job on the embedded cohort: generate, validate, preprocess, train with and without unlearning, audit.

``harmonize demo --out DIR`` runs :func:`run_demo`. Every stage calls the same library functions a user calls
(``generate_cohort``, ``validate_manifest``, ``preprocess_manifest``, ``train_brain_age``,
``evaluate_brain_age``), and writes its outputs under ``DIR``:

- ``cohort/``: the synthetic multi-site cohort (NIfTI, ``manifest.csv``, ``cohort.json``);
- ``preprocessed/``: the per-site preprocessed scans and their manifest;
- ``metrics.json``: for each method (``none``, ``unlearning``, ...) the site-probe balanced accuracy, the age
  MAE and the other audit figures, plus ``chance``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harmonize import defaults
from harmonize.errors import HarmonizeError
from harmonize.keys import Method

__all__ = ["DemoSettings", "run_demo"]

logger = logging.getLogger(__name__)

#: Name of the metrics file the demo writes.
METRICS_FILE = "metrics.json"


@dataclass
class DemoSettings:
    """Sizes of the demo. The defaults finish in under 15 minutes on 2 CPU cores; ``quick()`` in about one.

    Args:
        sites: scanners of the embedded cohort.
        subjects_per_site: subjects scanned on each.
        shape: cubic shape of the generated scans.
        preprocess_shape: shape after preprocessing (what the networks see).
        preprocess_spacing: isotropic voxel size after preprocessing (mm).
        max_epochs: training epochs of each brain-age model.
        channels: the brain-age encoder's channels.
        methods: training methods to compare.
        beta: confusion weight of the unlearning run.
        seed: seed of everything.
    """

    sites: int = defaults.SYNTH_SITES
    subjects_per_site: int = defaults.SYNTH_SUBJECTS_PER_SITE
    shape: int = defaults.SYNTH_SHAPE
    preprocess_shape: tuple[int, int, int] = defaults.DEMO_SHAPE
    preprocess_spacing: float = defaults.DEMO_SPACING
    max_epochs: int = defaults.DEMO_EPOCHS
    channels: tuple[int, ...] = defaults.DEMO_CHANNELS
    methods: tuple[str, ...] = (Method.NONE, Method.UNLEARNING, Method.DANN)
    beta: float = defaults.BETA
    seed: int = defaults.SEED
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoSettings:
        """A demo small enough for a test: 3 sites x 12 subjects, 2 epochs."""
        return cls(sites=3, subjects_per_site=12, shape=32, preprocess_shape=(32, 32, 32), max_epochs=2,
                   channels=(8, 8, 8, 16, 16, 16))


def _stage(name: str, report: Callable[[str], None]) -> Callable:
    def wrap(fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        report(f"[{name}] ...")
        result = fn()
        report(f"[{name}] done in {time.perf_counter() - start:.1f} s")
        return result

    return wrap


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, overwrite: bool = False,
             report: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Run the whole demo into ``out_dir`` and return the metrics it wrote to ``metrics.json``.

    Args:
        out_dir: where everything goes; must be empty or absent unless ``overwrite``.
        settings: sizes of the demo.
        overwrite: allow an existing, non-empty ``out_dir`` (its cohort is regenerated).
        report: where progress lines go (the CLI prints them).
    """
    from harmonize.data.manifest import validate_manifest
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest
    from harmonize.data.synth import SynthConfig, generate_cohort
    from harmonize.workflows.brain_age import BrainAgeSettings, evaluate_brain_age, train_brain_age
    from harmonize.workflows.unlearning import UnlearningSettings

    settings = settings or DemoSettings()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HarmonizeError(f"Output directory {out} is not empty. Choose another --out, or pass --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    synth = SynthConfig(n_sites=settings.sites, subjects_per_site=settings.subjects_per_site,
                        shape=settings.shape, seed=settings.seed)
    manifest = _stage("cohort", report)(lambda: generate_cohort(out / "cohort", synth, overwrite=overwrite))
    validation = _stage("validate", report)(lambda: validate_manifest(manifest))
    report(validation.format())
    if not validation.ok:
        raise HarmonizeError(f"The generated cohort failed validation ({manifest}); this is a bug, please report it.")
    config = PreprocessConfig(target_spacing=settings.preprocess_spacing, target_shape=settings.preprocess_shape)
    prep = _stage("preprocess", report)(
        lambda: preprocess_manifest(manifest, out / "preprocessed", config, overwrite=overwrite)
    )
    report(f"preprocessed {prep.processed} scans, {prep.cached} from cache")

    metrics: dict[str, Any] = {}
    for method in settings.methods:
        unlearning = UnlearningSettings(method=method, beta=settings.beta)
        run = BrainAgeSettings(unlearning=unlearning, max_epochs=settings.max_epochs, channels=settings.channels,
                               seed=settings.seed, batch_size=_batch_size(settings.sites))
        model = _stage(f"train {method}", report)(lambda: train_brain_age(prep.manifest, run, progress=True))
        metrics[str(method)] = evaluate_brain_age(model, prep.manifest, seed=settings.seed)
        m = metrics[str(method)]
        report(f"  {method}: site probe {m['site_probe_bacc']:.3f} (chance {m['chance']:.3f}), "
               f"age MAE {m['age_mae']:.2f} y")
    metrics["chance"] = 1.0 / settings.sites
    metrics["settings"] = {k: v for k, v in asdict(settings).items() if k != "extra"}
    metrics["seconds"] = time.perf_counter() - started
    path = out / METRICS_FILE
    path.write_text(json.dumps(metrics, indent=2, default=str))
    report(f"metrics written to {path}")
    return metrics


def _batch_size(sites: int) -> int:
    """The smallest multiple of the number of sites that is at least the default batch size."""
    per_site = max(1, -(-defaults.BATCH_SIZE // sites))
    return per_site * sites
