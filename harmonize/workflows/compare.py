"""Compare harmonisation methods on the same data: no unlearning, unlearning, DANN, ComBat and erasure, side by side.

:func:`compare_methods` (``harmonize compare``, and the last stage of ``harmonize demo``) trains the same brain-age
network once per training method (``none``, ``unlearning``, ``dann``) and seed on the same scans, harmonises each
seed's ``none`` network's features with ComBat (neuroHarmonize, age and sex protected) and with LEACE erasure of the
site conditional on age (``erasure``; ``unlearning_erasure`` erases the unlearned network's), audits each with
:func:`~harmonize.workflows.audit.audit_held_out` and writes, into the output folder:

- ``metrics.json``: per method the audit figures (``site_probe_bacc``, ``site_probe_p``, ``age_mae``,
  ``unseen_site_mae``, ``site_bias_spread``, ...) as means over the seeds, each numeric one with ``<key>_ci``
  (its 95 % t-interval, ``None`` for one seed), ``per_seed`` (the figures of each seed) and, for every method but
  ``none``, ``vs_none`` (per figure the difference of the means and its paired p-value over seeds:
  :mod:`~harmonize.audit.seed_summary`); plus ``chance``, ``sites`` (trained on), ``unseen_site`` and ``seeds``;
- ``comparison.md`` / ``comparison.json``: one table of the methods (means and intervals);
- ``figures/*.png`` and a self-contained ``report.html``, which opens with a verdict the numbers support
  (:func:`~harmonize.audit.verdict.comparison_verdict`);
- ``models/<method>.pt``: each network trained on the first seed (:func:`~harmonize.workflows.model_file.save_model`),
  to audit again with ``harmonize audit --checkpoint``; with several seeds also ``models/<method>_seed<seed>.pt``
  for every seed.

The (method, seed) runs are independent: ``jobs`` of them train at once, each in its own process with its share of
the torch threads (:class:`~harmonize.workflows.workers.Workers`); a run's figures do not depend on ``jobs``.

One whole site is held out of training (``unseen_site``, by default the last one): no method sees any of its
scans, and each is scored on them (``unseen_site_mae``). ComBat cannot harmonise a site it was not fitted on (it
estimates each site's effect from that site's own scans): with ``combat_unseen='passthrough'`` (default) those
scans stay unharmonised, so ComBat's unseen-site error is the plain network's; with ``'error'`` the comparison
records neuroHarmonize-ComBat's refusal (``unseen_site_error``) instead of a number.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from harmonize import defaults
from harmonize.audit.features import FeatureSet
from harmonize.audit.seed_summary import SEED, paired_comparison, summarise_seeds
from harmonize.audit.site_bias import age_overlap_note, in_window_note
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, integer_problem, integers_problem, is_integer, option_value, raise_problems
from harmonize.io import write_json_atomic
from harmonize.keys import HeldOutSite, Keys, Method, Split, UnseenSite
from harmonize.output_dir import releases_output_dirs
from harmonize.workflows.audit import (
    FIGURES_DIR,
    METRICS_FILE,
    READING_NOTES,
    UNSEEN_SUFFIX,
    audit_held_out,
    input_files,
    prepare_output_dir,
    summary_line,
    training_age_ranges,
)
from harmonize.workflows.brain_age import BrainAgeSettings
from harmonize.workflows.unlearning import UnlearningSettings
from harmonize.workflows.workers import Workers

__all__ = ["MODELS_DIR", "PAIRED_KEY", "CompareSettings", "ComparisonExtras", "compare_methods", "run_stage"]

logger = logging.getLogger(__name__)

#: Folder of the saved models in the output folder.
MODELS_DIR = "models"
#: Methods that train a network.
TRAINED_METHODS = (Method.NONE, Method.UNLEARNING, Method.DANN)
#: Methods that harmonise a trained network's features afterwards, and the trained method whose network they take:
#: ComBat and LEACE erasure (conditional on age) of the plain network's, and erasure as a last stage of unlearning.
POSTHOC_METHODS = {
    Method.COMBAT: Method.NONE, Method.ERASURE: Method.NONE, Method.UNLEARNING_ERASURE: Method.UNLEARNING,
}
#: Fewest training sites a comparison needs (a site probe and ComBat need two).
MIN_TRAINING_SITES = 2
#: Key of a method's paired comparison with the network trained without unlearning, in ``metrics.json``.
PAIRED_KEY = f"vs_{Method.NONE}"

T = TypeVar("T")


@dataclass
class CompareSettings:
    """What :func:`compare_methods` runs.

    Args:
        methods: methods to compare: ``none``, ``unlearning``, ``dann``, ``combat`` and ``erasure`` (both need
            ``none``), ``unlearning_erasure`` (needs ``unlearning``).
        training: settings of every training run (network, epochs, taps, seed, ...); ``training.unlearning`` is
            the ``unlearning`` run's (its ``method`` is set per run). Default: the re-fitted adversary
            (:meth:`~harmonize.workflows.unlearning.UnlearningSettings.refit_adversary`), which removed more of
            the scanner from held-out features than the per-batch head (docs/unlearning.md). On sites whose age
            ranges only partly overlap, the ``unlearning`` run's age loss is instead
            :class:`~harmonize.losses.SiteAgreementLoss` (``training.site_agreement``, by default
            :data:`~harmonize.defaults.SITE_AGREEMENT`), with no adversary; ``none`` stays plain training.
        reversal_weight: gradient-reversal strength of the DANN run, which unlearns the same confounds with the
            default DANN head (the unlearning run's adversary recipe is not carried over).
        unseen_site: the site kept out of training: ``"last"`` (the last in sorted order), ``"none"`` (no
            site held out) or a site's name.
        combat_unseen: what ComBat does with the unseen site's scans: ``"passthrough"`` (leave them unharmonised)
            or ``"error"`` (record the refusal); see :class:`~harmonize.keys.UnseenSite`.
        permutations: label permutations of each site probe's p-value (0: none).
        save_models: write each trained model to ``models/<method>.pt`` (the first seed's) and, with several
            seeds, ``models/<method>_seed<seed>.pt``.
        seeds: how many seeds each method trains on (``training.seed``, ``training.seed + 1``, ...), or the seeds
            themselves; every method trains on the same ones, and each seed also seeds that run's probes.
        first_seed_only: methods run on the first seed only (an expensive or secondary baseline); their paired
            comparison with ``none`` is then over that seed.
        jobs: training runs at once, each in a worker process with ``torch.get_num_threads() // jobs`` torch
            threads (1: one after another in this process). The workers start fresh (``spawn``): a script that
            calls :func:`compare_methods` with ``jobs > 1`` must do so under ``if __name__ == "__main__":``.

    Raises:
        ConfigError: an unknown method or choice, ComBat without ``none``, no method, no seed or a seed given
            twice, or ``jobs`` below 1.
    """

    methods: Sequence[str] = (Method.NONE, Method.UNLEARNING, Method.DANN, Method.COMBAT)
    training: BrainAgeSettings = field(
        default_factory=lambda: BrainAgeSettings(unlearning=UnlearningSettings.refit_adversary())
    )
    reversal_weight: float = defaults.DANN_REVERSAL_WEIGHT
    unseen_site: str = HeldOutSite.LAST
    combat_unseen: str = UnseenSite.PASSTHROUGH
    permutations: int = defaults.PROBE_PERMUTATIONS
    save_models: bool = True
    seeds: int | Sequence[int] = 1
    jobs: int = 1
    first_seed_only: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = tuple(m.strip() for m in self.methods.split(",") if m.strip())
        chosen = [option_value("methods", m, Method) for m in self.methods]
        problems = [problem for _, problem in chosen]
        self.methods = tuple(dict.fromkeys(m for m, _ in chosen if m))
        if not self.methods and not any(problems):
            problems.append(f"Argument 'methods': give at least one of {', '.join(map(str, Method))}.")
        for method, base in POSTHOC_METHODS.items():
            if method in self.methods and base not in self.methods:
                problems.append(f"Argument 'methods': '{method}' harmonises the features of the network trained with "
                                f"'{base}'; add '{base}' to the methods.")
        if isinstance(self.training, dict):  # its problems join ours
            try:
                self.training = BrainAgeSettings(**self.training)
            except ConfigError as err:
                problems += err.problems or [err.message]
        self.unseen_site = str(self.unseen_site)
        combat_unseen, problem = option_value("combat_unseen", self.combat_unseen, UnseenSite)
        self.combat_unseen = combat_unseen or self.combat_unseen
        first = [option_value("first_seed_only", m, Method) for m in self.first_seed_only]
        self.first_seed_only = tuple(m for m, _ in first if m)
        problems += [problem, *(p for _, p in first), integer_problem("permutations", self.permutations, minimum=0)]
        if problem := integer_problem("jobs", self.jobs):
            problems.append(f"{problem}: the training runs at once")
        problems.append(self._seeds_problem())
        raise_problems("CompareSettings", problems)

    def _seeds_problem(self) -> str | None:
        """The problem with ``seeds`` (a number of seeds, or distinct seeds), or None; it is normalised when valid."""
        if is_integer(self.seeds):
            if problem := integer_problem("seeds", self.seeds):
                return f"{problem}: the number of seeds each method trains on"
            self.seeds = int(self.seeds)
        elif problem := integers_problem("seeds", self.seeds, least=1, distinct=True):
            return f"{problem}: give the number of seeds each method trains on, or the seeds themselves, each once"
        else:
            self.seeds = tuple(int(s) for s in self.seeds)
        return None

    def seed_values(self) -> tuple[int, ...]:
        """The seeds every method trains on: ``seeds`` if listed, else ``seeds`` of them from ``training.seed``."""
        if isinstance(self.seeds, int):
            return tuple(self.training.seed + k for k in range(self.seeds))
        return tuple(self.seeds)

    def run_settings(self, method: str, n_sites: int, biased: bool = False) -> BrainAgeSettings:
        """The training settings of one method, its batch a multiple of the ``n_sites`` training sites.

        Only the ``unlearning`` run trains with ``training.site_agreement``; on ``biased`` sites (age ranges that
        only partly overlap) it does so by default, with :data:`~harmonize.defaults.SITE_AGREEMENT`. With that
        loss it trains no adversary: the two together lost the task (docs/unlearning.md, session 13).
        """
        base = self.training
        batch = base.batch_size
        if base.balance_sites and batch % n_sites:
            batch = max(1, math.ceil(batch / n_sites)) * n_sites
        unlearning, agreement = self._unlearning(method), None
        if method == Method.UNLEARNING:
            agreement = base.site_agreement
            if agreement is None and biased:
                agreement = defaults.SITE_AGREEMENT
            if agreement is not None:
                unlearning = replace(unlearning, method=Method.NONE)
        return replace(base, unlearning=unlearning, batch_size=batch, site_agreement=agreement)

    def _unlearning(self, method: str) -> UnlearningSettings:
        """``training.unlearning`` with ``method`` set; DANN keeps only what to unlearn, not the adversary's recipe."""
        chosen = self.training.unlearning
        if method != Method.DANN:
            return replace(chosen, method=method)
        return UnlearningSettings.dann(**chosen.what(), reversal_weight=self.reversal_weight,
                                       warmup_epochs=min(chosen.warmup_epochs, defaults.WARMUP_EPOCHS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ComparisonExtras:
    """What a caller adds to the comparison's outputs (the demo adds its reconstruction experiment).

    Args:
        title: the report's title.
        notes: paragraphs shown first in the report.
        metrics: entries added to ``metrics.json`` (they replace the comparison's own of the same name).
        plots: figures (PNG) appended to the report, by title.
        recon_table: rows of a reconstruction-unlearning table shown in the report.
    """

    title: str = "harmonize compare: scanner harmonisation methods"
    notes: Sequence[str] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    plots: Mapping[str, str | os.PathLike] = field(default_factory=dict)
    recon_table: Sequence[Mapping[str, Any]] | None = None


def run_stage(name: str, report: Callable[[str], None], fn: Callable[[], T]) -> T:
    """Run ``fn``, reporting its start and its duration."""
    start = time.perf_counter()
    report(f"[{name}] ...")
    result = fn()
    report(f"[{name}] done in {time.perf_counter() - start:.1f} s")
    return result


def _held_out_site(frame: pd.DataFrame, choice: str) -> str | None:
    """The site to keep out of training, or ``None``.

    Raises:
        ConfigError: a site name the manifest does not hold (the sites are listed).
    """
    sites = sorted(frame[Keys.SITE].astype(str).unique())
    if choice == HeldOutSite.NONE:
        return None
    if choice == HeldOutSite.LAST:
        return sites[-1]
    if choice not in sites:
        raise ConfigError(
            f"Argument 'unseen_site': {choice!r} is not a site of the manifest; its sites are {sites} (or give "
            f"'{HeldOutSite.LAST}' or '{HeldOutSite.NONE}')."
        )
    return choice


def _training_frame(frame: pd.DataFrame, held_out: str | None) -> tuple[pd.DataFrame, CategoryIndex]:
    """The rows training may see and their site index (built from their ``train`` rows, in memory).

    Raises:
        ConfigError: fewer than two training sites remain.
    """
    rows = frame if held_out is None else frame[frame[Keys.SITE].astype(str) != held_out]
    from harmonize.data.manifest import MANIFEST_ATTR

    index = CategoryIndex.from_frame(rows, source=frame.attrs.get(MANIFEST_ATTR))
    if len(index) < MIN_TRAINING_SITES:
        kept = f" after holding out {held_out!r}" if held_out else ""
        raise ConfigError(
            f"The comparison needs at least {MIN_TRAINING_SITES} training sites{kept}, the manifest's training rows "
            f"hold {list(index)}. Add sites, or pass unseen_site='{HeldOutSite.NONE}'."
        )
    return rows, index


@dataclass
class _Run:
    """One training run of a comparison: a method on a seed, then its audit (and ComBat's after ``none``)."""

    method: str
    seed: int
    training: BrainAgeSettings
    frame: pd.DataFrame
    held_out: str | None
    index: CategoryIndex
    permutations: int
    posthoc: tuple[str, ...]
    combat_unseen: str
    model_files: tuple[Path, ...]
    keep_features: bool
    progress: bool


@dataclass
class _RunResult:
    """What a run sends back: its figures, its post-hoc methods', and the first seed's features and history."""

    metrics: dict[str, Any]
    posthoc: dict[str, dict[str, Any]]
    features: FeatureSet | None
    history: list
    seconds: float


def _train_and_audit(run: _Run) -> _RunResult:
    """Train one run, save its model, audit it (and its post-hoc methods); a worker process's task."""
    from harmonize.workflows.brain_age import train_brain_age
    from harmonize.workflows.brain_age_evaluation import combat_unseen_site, evaluate_combat, fit_site_eraser
    from harmonize.workflows.model_file import save_model

    start = time.perf_counter()
    frame, held_out = run.frame, run.held_out
    training = frame if held_out is None else frame[frame[Keys.SITE].astype(str) != held_out]
    model = train_brain_age(training, run.training, site_index=run.index, progress=run.progress)
    for path in run.model_files:
        save_model(model, path)
    metrics, features = audit_held_out(model, frame, run.permutations, run.seed)
    posthoc: dict[str, dict[str, Any]] = {}
    for method in run.posthoc:
        if method == Method.COMBAT:
            combat = evaluate_combat(model, training, permutations=run.permutations, seed=run.seed)
            if held_out is not None:
                combat.update(combat_unseen_site(model, training, frame[frame[Keys.SITE].astype(str) == held_out],
                                             held_out, run.combat_unseen))
                if combat["unseen_site_mae"] is not None:
                    combat["age_mae_per_site"][f"{held_out}{UNSEEN_SUFFIX}"] = combat["unseen_site_mae"]
            posthoc[method] = combat
        else:  # LEACE erasure, conditional on age
            started = time.perf_counter()
            eraser = fit_site_eraser(model, training)
            posthoc[method], _ = audit_held_out(model, frame, run.permutations, run.seed, harmonise=eraser)
            posthoc[method]["seconds"] = model.seconds + time.perf_counter() - started
    return _RunResult(metrics, posthoc, features if run.keep_features else None,
                      model.history if run.keep_features else [], time.perf_counter() - start)


@releases_output_dirs
def compare_methods(
    manifest: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    settings: CompareSettings | None = None,
    report: Callable[[str], None] = logger.info,
    overwrite: bool = False,
    progress: bool = False,
    extras: ComparisonExtras | None = None,
) -> dict[str, Any]:
    """Train, harmonise and audit every method of ``settings`` on each seed of one manifest; write the table and report.

    Args:
        manifest: the (preprocessed) manifest, a path or a frame from :func:`~harmonize.data.manifest.read_manifest`.
        out_dir: where the outputs go (see the module docstring); must be empty or absent unless ``overwrite``.
        settings: what to compare (default: every method, the default network, the last site held out, one seed).
        report: where progress lines go (the CLI prints them).
        overwrite: allow a non-empty ``out_dir`` (files of the same names are replaced).
        progress: show a progress bar of each training run (only when the runs go one after another).
        extras: title, notes, metrics, figures and tables a caller adds to the outputs.

    Returns:
        The metrics written to ``metrics.json``: one dictionary per method (means over seeds, ``<key>_ci``,
        ``per_seed`` and, but for ``none``, ``vs_none``), ``chance`` (``1 / n`` training sites), ``sites``,
        ``unseen_site``, ``seeds`` and ``settings`` (plus ``extras.metrics``).

    Raises:
        HarmonizeError: an unreadable manifest, a non-empty ``out_dir``, too few sites, or training that diverged.
    """
    from harmonize.data.manifest import read_manifest

    settings = settings or CompareSettings()
    extras = extras or ComparisonExtras()
    out = prepare_output_dir(out_dir, overwrite, inputs=input_files(manifest), command="harmonize compare")
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    held_out = _held_out_site(frame, settings.unseen_site)
    _, index = _training_frame(frame, held_out)
    seeds = settings.seed_values()
    report(f"training sites {list(index)}" + (f", unseen site {held_out!r} held out" if held_out else ""))
    ranges = training_age_ranges(frame, index)
    biased = age_overlap_note(list(ranges.values()), list(ranges))
    if biased:
        held = frame[frame[Keys.SPLIT] != Split.TRAIN]
        in_window = in_window_note(list(ranges.values()), list(ranges),
                                   pd.to_numeric(held[Keys.AGE], errors="coerce").to_numpy(float),
                                   held[Keys.SITE].astype(str).tolist())
        for note in (biased, in_window):
            if note:
                report(note)
                extras.notes = [*extras.notes, note]

    runs = _runs(frame, held_out, index, settings, out, progress, biased=biased is not None)
    workers = Workers(jobs=settings.jobs)
    if runs:
        report(f"{len(runs)} training runs ({', '.join(dict.fromkeys(r.method for r in runs))} on seeds "
               f"{list(seeds)}), {workers.describe(len(runs))}")

    def done(i: int, result: _RunResult) -> None:
        run = runs[i]
        label = run.method if len(seeds) == 1 else f"{run.method}, seed {run.seed}"
        report(f"[train {label}] done in {result.seconds:.1f} s")
        report(summary_line(label, result.metrics))
        for method, figures in result.posthoc.items():
            report(summary_line(method if len(seeds) == 1 else f"{method}, seed {run.seed}", figures))

    results = workers.map(_train_and_audit, [(run,) for run in runs], done=done)
    per_seed: dict[str, list[dict[str, Any]]] = {str(m): [] for m in settings.methods}
    features: dict[str, Any] = {}
    histories: dict[str, list] = {}
    for run, result in zip(runs, results):
        per_seed[run.method].append({SEED: run.seed, **result.metrics})
        for method, figures in result.posthoc.items():
            per_seed[method].append({SEED: run.seed, **figures})
        if result.features is not None:
            features[run.method], histories[run.method] = result.features, result.history
    metrics: dict[str, Any] = {m: summarise_seeds(entries) for m, entries in per_seed.items() if entries}
    for method in metrics:
        if method != Method.NONE and Method.NONE in metrics:
            metrics[method][PAIRED_KEY] = paired_comparison(per_seed[method], per_seed[str(Method.NONE)])
        if len(seeds) > 1:
            report(summary_line(f"{method} (mean of {len(seeds)} seeds)", metrics[method]))
    metrics["chance"] = 1.0 / len(index)
    metrics["sites"] = list(index)
    metrics["unseen_site"] = held_out
    metrics["seeds"] = list(seeds)
    metrics["settings"] = settings.to_dict()
    metrics.update(extras.metrics)
    write_json_atomic(out / METRICS_FILE, metrics, indent=2, default=str)
    report(f"metrics written to {out / METRICS_FILE}")
    html = run_stage("report", report, lambda: _write_report(out, metrics, features, histories, settings, held_out,
                                                              index, extras))
    report(f"report written to {html}")
    return metrics


def _runs(frame: pd.DataFrame, held_out: str | None, index: CategoryIndex, settings: CompareSettings, out: Path,
          progress: bool, biased: bool = False) -> list[_Run]:
    """The (method, seed) training runs, seed by seed; ComBat follows each ``none`` run."""
    seeds = settings.seed_values()
    trained = [m for m in settings.methods if m in TRAINED_METHODS]
    one_at_a_time = Workers(jobs=settings.jobs).jobs_for(len(seeds) * len(trained)) == 1
    runs = []
    for seed in seeds:
        for method in trained:
            if seed != seeds[0] and method in settings.first_seed_only:
                continue
            files: list[Path] = []
            if settings.save_models:
                files += [out / MODELS_DIR / f"{method}.pt"] if seed == seeds[0] else []
                files += [out / MODELS_DIR / f"{method}_seed{seed}.pt"] if len(seeds) > 1 else []
            runs.append(_Run(
                method=str(method), seed=seed,
                training=replace(settings.run_settings(method, len(index), biased), seed=seed),
                frame=frame, held_out=held_out, index=index, permutations=settings.permutations,
                posthoc=tuple(str(m) for m in settings.methods if POSTHOC_METHODS.get(m) == method
                              and (seed == seeds[0] or m not in settings.first_seed_only)),
                combat_unseen=settings.combat_unseen, model_files=tuple(files), keep_features=seed == seeds[0],
                progress=progress and one_at_a_time,
            ))
    return runs


def _write_report(out: Path, metrics: dict[str, Any], features: dict[str, Any], histories: dict[str, list],
                  settings: CompareSettings, held_out: str | None, index: CategoryIndex,
                  extras: ComparisonExtras) -> Path:
    """Figures, comparison table (Markdown, JSON) and the self-contained report.html."""
    from harmonize.audit import plots
    from harmonize.audit.report import write_comparison_table, write_report
    from harmonize.audit.report_notes import combat_unseen_note, seeds_note
    from harmonize.audit.verdict import comparison_verdict

    methods = {k: v for k, v in metrics.items() if isinstance(v, dict) and "site_probe_bacc" in v}
    chance = metrics["chance"]
    seeds = settings.seed_values()
    figures = out / FIGURES_DIR
    bars = "Site probe and age error" + (" (means; error bars: 95 % t-interval over seeds)" if len(seeds) > 1 else "")
    pngs: dict[str, Any] = {
        bars: plots.comparison_bar_plot(methods, figures / "comparison.png", chance=chance),
        "Age error per site": plots.per_site_error_plot(methods, figures / "per_site_error.png"),
    }
    if features:
        title = "Features of held-out scans" + (" (the unseen site in grey)" if held_out else "")
        title += f" (seed {seeds[0]})" if len(seeds) > 1 else ""
        pngs[title] = plots.embedding_grid(features, figures / "embeddings.png", site_names=list(index),
                                           seed=seeds[0])
    trained = {k: h for k, h in histories.items() if h}
    if trained:
        pngs["Domain head during training"] = plots.training_curves_plot(trained, figures / "training.png",
                                                                          chance=chance)
    pngs.update(extras.plots)
    write_comparison_table(methods, out / "comparison.md", out / "comparison.json", chance=chance)
    notes = [*extras.notes, seeds_note(seeds), *READING_NOTES]
    first = next(iter(methods.values()), {})
    notes.append(f"Held-out scans of the training sites {list(index)}: {first.get('n_subjects', 0)} (val + test).")
    if held_out is not None:
        notes.append(f"Unseen site: every scan of {held_out!r} ({first.get('n_unseen', 0)} scans) was kept out of "
                     "training; 'Unseen-site MAE' is each method's age error on them.")
        if Method.COMBAT in methods:
            notes.append(combat_unseen_note(methods[Method.COMBAT], held_out))
    if methods.get(Method.COMBAT, {}).get("age_probe_note"):
        notes.append(f"ComBat's age R\u00b2 from features: {methods[Method.COMBAT]['age_probe_note']}.")
    return write_report(out, methods, chance, plots=pngs, recon_table=extras.recon_table, title=extras.title,
                        notes=notes, verdict=comparison_verdict(methods))
