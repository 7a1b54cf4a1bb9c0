"""The main job on the embedded cohort: generate, validate, preprocess, compare harmonisation methods, audit.

``harmonize demo --out DIR`` runs :func:`run_demo`. Every stage calls the same library functions a user calls
(``generate_cohort``, ``validate_manifest``, ``preprocess_manifest``, ``run_recon_unlearning`` and
:func:`~harmonize.workflows.compare.compare_methods`, which is ``harmonize compare``), and writes under ``DIR``:

- ``cohort/``: the synthetic multi-site cohort (NIfTI, ``manifest.csv``, ``cohort.json``);
- ``preprocessed/``: the per-site preprocessed scans and their manifest;
- ``recon/``: the reconstruction-unlearning experiment (tables and Pareto plots);
- ``models/``: the brain-age network of each method (``harmonize audit --checkpoint DIR/models/none.pt``);
- ``metrics.json``: for each method (``none``, ``unlearning``, ``dann``, ``combat``, ...) the site-probe balanced
  accuracy, the age MAE, the age MAE on the site held out of training (``unseen_site_mae``) and the other audit
  figures, plus ``chance``, ``unseen_site``, and ``recon`` (one entry per reconstruction-unlearning method with
  ``bta_psnr``, ``kta_psnr``, ``ua_psnr``, ``seconds``);
- ``comparison.md`` / ``comparison.json``, ``figures/`` and ``report.html``: the tables and figures, the report
  self-contained;
- ``biased/``: the biased scenario (sites whose age windows only partly overlap), with its own cohort,
  preprocessed scans, models, tables and report; its figures are also under ``metrics.json``'s ``biased`` key, in
  the same structure as the top level (the balanced scenario).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harmonize import defaults
from harmonize.errors import ConfigError, HarmonizeError, option_value, raise_problems
from harmonize.io import write_json_atomic
from harmonize.keys import HeldOutSite, Method, Split
from harmonize.output_dir import releases_output_dirs
from harmonize.workflows.audit import METRICS_FILE

if TYPE_CHECKING:
    from harmonize.data.preprocess import PreprocessConfig
    from harmonize.data.synth import SynthConfig
    from harmonize.workflows.compare import CompareSettings, ComparisonExtras

__all__ = ["DemoSettings", "run_demo"]

logger = logging.getLogger(__name__)

#: Figures of each reconstruction-unlearning method copied into ``metrics.json``.
RECON_KEYS = ("bta_psnr", "kta_psnr", "ua_psnr", "bta_ssim", "kta_ssim", "ua_ssim", "seconds", "iterations",
              "bta_psnr_ci", "kta_psnr_ci", "ua_psnr_ci")
#: How to read the reconstruction table of the report.
RECON_NOTE = ("Reconstruction unlearning (Xue et al.): PSNR on retain-test (BTA), forget-test (KTA) and forget-train "
              "(UA); forgetting means KTA/UA fall towards the oracle's while BTA stays.")
#: Folder and ``metrics.json`` key of the biased scenario.
BIASED_KEY = "biased"
#: Label permutations of the site probes' p-values in the quick demo (the full demo uses the default).
QUICK_PERMUTATIONS = 10
#: Held-out share of the quick demo's 12 subjects per site (the manifest default's val + test).
QUICK_HELD_OUT_FRACTION = 0.3


@dataclass
class DemoSettings:
    """Sizes of the demo: the defaults are sized for 2 CPU cores, ``quick()`` for a smoke test (their run times:
    docs/demo.md).

    Args:
        sites: scanners of the embedded cohort.
        subjects_per_site: subjects scanned on each.
        held_out_fraction: share of each training site's subjects kept out of training and audited (val + test).
        shape: cubic shape of the generated scans.
        preprocess_shape: shape after preprocessing (what the networks see).
        preprocess_spacing: isotropic voxel size after preprocessing (mm).
        max_epochs: training epochs of each brain-age model.
        channels: the brain-age encoder's channels.
        norm: the brain-age encoder's normalisation.
        methods: methods to compare (training methods, and the post-hoc ``erasure`` / ``unlearning_erasure``).
        combat: also harmonise the baseline's features with ComBat (needs ``none`` among the methods).
        taps: layers of the brain-age network that are unlearned and audited.
        recon: also run the reconstruction-unlearning experiment (Xue et al.) on one seed and report it.
        recon_quick: the tiny reconstruction settings (for tests; its numbers are not meaningful).
        beta: confusion weight of the unlearning run (its adversary is the re-fitted linear head,
            :meth:`~harmonize.workflows.unlearning.UnlearningSettings.refit_adversary`).
        reversal_weight: gradient-reversal strength of the DANN run.
        warmup_epochs: epochs during which only the domain heads learn.
        unseen_site: the site kept out of training and scored as a new scanner (``last``, ``none`` or a name).
        permutations: label permutations of the site probes' p-values.
        seed: seed of everything.
        seeds: how many seeds every brain-age method trains on (``seed``, ``seed + 1``, ...;
            :class:`~harmonize.workflows.compare.CompareSettings`).
        jobs: brain-age training runs at once, each in its own process.
        biased: also run the biased scenario into ``OUT/biased/``: the sites' *training* subjects lie in age
            windows that only partly overlap, so a network can read age from the scanner, while the held-out
            subjects of every site span all ages (Dinsdale et al.'s design), where that shortcut does harm; its
            figures go under ``metrics.json``'s ``biased`` key.
        biased_overlap: fraction of a site's age window shared with the next site's in the biased scenario.
        first_seed_only: methods that run on the first seed only
            (:class:`~harmonize.workflows.compare.CompareSettings`).
        biased_skip: methods left out of the biased scenario (to keep the demo's time).

    Raises:
        ConfigError: on construction, every setting out of range at once, as the cohort, preprocessing and
            comparison settings it builds (:meth:`synth_config`, :meth:`preprocess_config`, :meth:`compare_settings`)
            name them.
    """

    sites: int = defaults.DEMO_SITES
    subjects_per_site: int = defaults.DEMO_SUBJECTS_PER_SITE
    held_out_fraction: float = defaults.DEMO_HELD_OUT_FRACTION
    shape: int = defaults.SYNTH_SHAPE
    preprocess_shape: tuple[int, int, int] = defaults.DEMO_SHAPE
    preprocess_spacing: float = defaults.DEMO_SPACING
    max_epochs: int = defaults.DEMO_EPOCHS
    channels: tuple[int, ...] = defaults.DEMO_CHANNELS
    norm: str | tuple = defaults.AGE_NORM
    methods: tuple[str, ...] = (Method.NONE, Method.UNLEARNING, Method.DANN, Method.ERASURE,
                                Method.UNLEARNING_ERASURE)
    combat: bool = True
    taps: tuple[str, ...] = defaults.AGE_TAPS
    recon: bool = True
    recon_quick: bool = False
    beta: float = defaults.REFIT_BETA
    reversal_weight: float = defaults.DANN_REVERSAL_WEIGHT
    warmup_epochs: int = defaults.REFIT_WARMUP_EPOCHS
    unseen_site: str = HeldOutSite.LAST
    permutations: int = defaults.DEMO_PERMUTATIONS
    seed: int = defaults.SEED
    seeds: int = defaults.DEMO_SEEDS
    jobs: int = defaults.DEMO_JOBS
    biased: bool = True
    biased_overlap: float = defaults.DEMO_BIASED_OVERLAP
    first_seed_only: tuple[str, ...] = (Method.DANN,)
    biased_skip: tuple[str, ...] = (Method.DANN,)

    def __post_init__(self) -> None:
        from harmonize.workflows.brain_age import BrainAgeSettings
        from harmonize.workflows.unlearning import UnlearningSettings

        problems: list[str | None] = [option_value("biased_skip", m, Method)[1] for m in self.biased_skip]

        def part(what: str, build: Callable[[], Any], fallback: Any = None) -> Any:
            """A part the settings build, or ``fallback`` with the part's problems listed among the others."""
            try:
                return build()
            except ConfigError as err:
                problems.extend(f"{what}: {p}" for p in err.problems or [err.message])
                return fallback

        unlearning = part("the unlearning run", self._unlearning, UnlearningSettings())
        training = part("the training", lambda: self._training(unlearning), BrainAgeSettings())
        part("the comparison", lambda: self._comparison(training))
        part("the cohort", lambda: self.synth_config(self.biased))
        part("the preprocessing", self.preprocess_config)
        raise_problems("DemoSettings", problems)

    @classmethod
    def quick(cls) -> DemoSettings:
        """A demo small enough for a test: 3 sites x 12 subjects (one held out), 3 epochs (1 of warm-up), 1 seed."""
        return cls(sites=3, subjects_per_site=12, held_out_fraction=QUICK_HELD_OUT_FRACTION, shape=32,
                   preprocess_shape=(32, 32, 32), max_epochs=3, warmup_epochs=1, channels=(8, 8, 8, 16, 16),
                   recon_quick=True, permutations=QUICK_PERMUTATIONS, seeds=1, jobs=1)

    def synth_config(self, biased: bool) -> SynthConfig:
        """The settings of a scenario's synthetic cohort (``biased``: the sites' training ages only partly overlap)."""
        from harmonize.data.synth import SynthConfig, held_out_split

        return SynthConfig(n_sites=self.sites, subjects_per_site=self.subjects_per_site, shape=self.shape,
                           seed=self.seed, biased=biased, biased_overlap=self.biased_overlap,
                           biased_splits=(Split.TRAIN,), **held_out_split(self.held_out_fraction))

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing of the cohort's scans to what the networks see."""
        from harmonize.data.preprocess import PreprocessConfig

        return PreprocessConfig(target_spacing=self.preprocess_spacing, target_shape=self.preprocess_shape)

    def compare_settings(self) -> CompareSettings:
        """The settings of the demo's comparison of harmonisation methods."""
        return self._comparison(self._training(self._unlearning()))

    def _unlearning(self) -> Any:
        from harmonize.workflows.unlearning import UnlearningSettings

        return UnlearningSettings.refit_adversary(beta=self.beta, warmup_epochs=self.warmup_epochs)

    def _training(self, unlearning: Any) -> Any:
        from harmonize.workflows.brain_age import BrainAgeSettings

        return BrainAgeSettings(unlearning=unlearning, max_epochs=self.max_epochs, channels=self.channels,
                                norm=self.norm, taps=self.taps, seed=self.seed)

    def _comparison(self, training: Any) -> CompareSettings:
        from harmonize.workflows.compare import CompareSettings

        methods = tuple(self.methods) + ((Method.COMBAT,) if self.combat else ())
        return CompareSettings(methods=methods, training=training, reversal_weight=self.reversal_weight,
                               unseen_site=self.unseen_site, permutations=self.permutations, seeds=self.seeds,
                               jobs=self.jobs, first_seed_only=self.first_seed_only)


@releases_output_dirs
def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, overwrite: bool = False,
             report: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Run the whole demo into ``out_dir`` and return the metrics it wrote to ``metrics.json``.

    Args:
        out_dir: where everything goes; must be empty or absent unless ``overwrite``.
        settings: sizes of the demo.
        overwrite: allow an existing, non-empty ``out_dir`` (its cohort is regenerated).
        report: where progress lines go (the CLI prints them).
    """
    from harmonize.workflows.audit import prepare_output_dir
    from harmonize.workflows.compare import ComparisonExtras, run_stage

    settings = settings or DemoSettings()
    compare = settings.compare_settings()  # checked before anything runs
    out = prepare_output_dir(out_dir, overwrite, command="harmonize demo")
    started = time.perf_counter()

    extras = ComparisonExtras(title="harmonize demo: scanner unlearning and machine unlearning",
                              notes=[_cohort_note(settings, biased=False)], metrics={"settings": asdict(settings)})
    if settings.recon:
        recon = run_stage("reconstruction unlearning", report, lambda: _run_recon(out, settings))
        extras.metrics["recon"] = {row["method"]: {k: row.get(k) for k in RECON_KEYS} for row in recon.table}
        extras.recon_table = recon.table
        extras.plots = {"Reconstruction unlearning: retain PSNR vs time": out / "recon" / "pareto_seconds.png"}
        extras.notes = [*extras.notes, RECON_NOTE]
        for row in recon.table:
            report(f"  {row['method']}: retain-test {row['bta_psnr']:.2f} dB, forget-test {row['kta_psnr']:.2f} dB, "
                   f"forget-train {row['ua_psnr']:.2f} dB, {row['seconds']:.1f} s")
    if settings.biased:
        extras.notes = [*extras.notes, f"The biased scenario (sites whose age windows only partly overlap) is in "
                                       f"{BIASED_KEY}/report.html."]
        report("scenario: balanced (every site spans most of the age range)")
    metrics = _scenario(out, settings, compare, False, overwrite, report, extras)
    if settings.biased:
        report("scenario: biased (the sites' age windows only partly overlap)")
        biased_extras = ComparisonExtras(title="harmonize demo: scanner unlearning on biased sites",
                                         notes=[_cohort_note(settings, biased=True)])
        biased = prepare_output_dir(out / BIASED_KEY, overwrite, command="harmonize demo")
        kept = tuple(m for m in compare.methods if m not in settings.biased_skip)
        metrics[BIASED_KEY] = _scenario(biased, settings, replace(compare, methods=kept), True, overwrite, report,
                                        biased_extras)
    metrics["seconds"] = time.perf_counter() - started
    path = write_json_atomic(out / METRICS_FILE, metrics, indent=2, default=str)
    report(f"demo finished in {metrics['seconds']:.1f} s; metrics in {path}, report in {out / 'report.html'}")
    return metrics


def _scenario(out: Path, settings: DemoSettings, compare: CompareSettings, biased: bool, overwrite: bool,
              report: Callable[[str], None], extras: ComparisonExtras) -> dict[str, Any]:
    """Generate, validate and preprocess one scenario's cohort into ``out``, then compare the methods on it."""
    from harmonize.data.manifest import validate_manifest
    from harmonize.data.preprocess import preprocess_manifest
    from harmonize.data.synth import generate_cohort
    from harmonize.workflows.compare import compare_methods, run_stage

    synth = settings.synth_config(biased)
    manifest = run_stage("cohort", report, lambda: generate_cohort(out / "cohort", synth, overwrite=overwrite))
    validation = run_stage("validate", report, lambda: validate_manifest(manifest))
    report(validation.format())
    if not validation.ok:
        raise HarmonizeError(f"The generated cohort failed validation ({manifest}); this is a bug, please report it.")
    config = settings.preprocess_config()
    prep = run_stage("preprocess", report,
                     lambda: preprocess_manifest(manifest, out / "preprocessed", config, overwrite=overwrite))
    report(f"preprocessed {prep.processed} scans, {prep.cached} from cache")
    return compare_methods(prep.manifest, out, compare, report=report, overwrite=True, progress=True, extras=extras)


def _cohort_note(settings: DemoSettings, biased: bool) -> str:
    ages = (f"training subjects in age windows that overlap the next site's by {settings.biased_overlap:.0%} "
            "(held-out subjects of every age)" if biased else "overlapping age ranges")
    return (f"Embedded cohort: {settings.sites} simulated scanners x {settings.subjects_per_site} subjects with "
            f"{ages}, brain age from {settings.preprocess_shape[0]}^3 scans; held-out scans (val + test) of the "
            "training sites audited.")


def _run_recon(out: Path, settings: DemoSettings):
    from harmonize.workflows.recon_unlearning import (
        ReconUnlearningSettings,
        run_recon_unlearning,
    )

    recon = ReconUnlearningSettings.tiny() if settings.recon_quick else ReconUnlearningSettings.demo()
    # one seed keeps the demo short (docs/reconstruction.md, "Over seeds"); the three-seed figures are the benchmark's
    return run_recon_unlearning(replace(recon, seed=settings.seed, seeds=1), out / "recon")
