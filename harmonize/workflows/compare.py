"""Compare harmonisation methods on the same data: no unlearning, unlearning, DANN and ComBat, side by side.

:func:`compare_methods` (``harmonize compare``, and the last stage of ``harmonize demo``) trains the same brain-age
network once per training method (``none``, ``unlearning``, ``dann``) on the same scans with the same seed,
harmonises the ``none`` network's features with ComBat (neuroHarmonize, age and sex protected), audits each with
:func:`~harmonize.workflows.audit.audit_brain_age` and writes, into the output folder:

- ``metrics.json``: per method the audit figures (``site_probe_bacc``, ``site_probe_p``, ``age_mae``,
  ``unseen_site_mae``, ...), plus ``chance``, ``sites`` (trained on) and ``unseen_site``;
- ``comparison.md`` / ``comparison.json``: one table of the methods;
- ``figures/*.png`` and a self-contained ``report.html``;
- ``models/<method>.pt``: each trained network (:func:`~harmonize.workflows.model_file.save_model`), to audit
  again with ``harmonize audit --checkpoint``.

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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from harmonize import defaults
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, HarmonizeError, check_option
from harmonize.io import write_json_atomic
from harmonize.keys import HeldOutSite, Keys, Method, Split, UnseenSite
from harmonize.output_dir import releases_output_dirs
from harmonize.workflows.audit import (
    ALL_SPLITS,
    FIGURES_DIR,
    METRICS_FILE,
    READING_NOTES,
    UNSEEN_SUFFIX,
    audit_brain_age,
    input_files,
    prepare_output_dir,
    summary_line,
)
from harmonize.workflows.brain_age import TAP, BrainAgeModel, BrainAgeSettings
from harmonize.workflows.unlearning import UnlearningSettings

__all__ = ["MODELS_DIR", "CompareSettings", "ComparisonExtras", "compare_methods", "run_stage"]

logger = logging.getLogger(__name__)

#: Folder of the saved models in the output folder.
MODELS_DIR = "models"
#: Methods that train a network (ComBat harmonises the features of the ``none`` network after training).
TRAINED_METHODS = (Method.NONE, Method.UNLEARNING, Method.DANN)
#: Fewest training sites a comparison needs (a site probe and ComBat need two).
MIN_TRAINING_SITES = 2

T = TypeVar("T")


@dataclass
class CompareSettings:
    """What :func:`compare_methods` runs.

    Args:
        methods: methods to compare: ``none``, ``unlearning``, ``dann``, ``combat`` (ComBat needs ``none``).
        training: settings of every training run (network, epochs, taps, seed, ...); ``training.unlearning`` is
            the ``unlearning`` run's (its ``method`` is set per run). Default: the re-fitted adversary
            (:meth:`~harmonize.workflows.unlearning.UnlearningSettings.refit_adversary`), which removed more of
            the scanner from held-out features than the per-batch head (docs/unlearning.md).
        dann_beta: gradient-reversal strength of the DANN run, which unlearns the same confounds with the
            default DANN head (the unlearning run's adversary recipe is not carried over).
        unseen_site: the site kept out of training: ``"last"`` (the last in sorted order), ``"none"`` (no
            site held out) or a site's name.
        combat_unseen: what ComBat does with the unseen site's scans: ``"passthrough"`` (leave them unharmonised)
            or ``"error"`` (record the refusal); see :class:`~harmonize.keys.UnseenSite`.
        permutations: label permutations of each site probe's p-value (0: none).
        save_models: write each trained model to ``models/<method>.pt``.

    Raises:
        ConfigError: an unknown method or choice, ComBat without ``none``, or no method.
    """

    methods: Sequence[str] = (Method.NONE, Method.UNLEARNING, Method.DANN, Method.COMBAT)
    training: BrainAgeSettings = field(
        default_factory=lambda: BrainAgeSettings(unlearning=UnlearningSettings.refit_adversary())
    )
    dann_beta: float = defaults.DANN_BETA
    unseen_site: str = HeldOutSite.LAST
    combat_unseen: str = UnseenSite.PASSTHROUGH
    permutations: int = defaults.PROBE_PERMUTATIONS
    save_models: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = tuple(m.strip() for m in self.methods.split(",") if m.strip())
        methods = [check_option("methods", m, Method) for m in self.methods]
        self.methods = tuple(dict.fromkeys(methods))
        if not self.methods:
            raise ConfigError("Argument 'methods': give at least one of none, unlearning, dann, combat.")
        if Method.COMBAT in self.methods and Method.NONE not in self.methods:
            raise ConfigError(
                "Argument 'methods': 'combat' harmonises the features of the network trained without unlearning; "
                "add 'none' to the methods."
            )
        if isinstance(self.training, dict):
            self.training = BrainAgeSettings(**self.training)
        self.unseen_site = str(self.unseen_site)
        self.combat_unseen = check_option("combat_unseen", self.combat_unseen, UnseenSite)
        if self.permutations < 0:
            raise ConfigError(f"Argument 'permutations' must be >= 0, got {self.permutations}.")

    def run_settings(self, method: str, n_sites: int) -> BrainAgeSettings:
        """The training settings of one method, its batch a multiple of the ``n_sites`` training sites."""
        base = self.training
        batch = base.batch_size
        if base.balance_sites and batch % n_sites:
            batch = max(1, math.ceil(batch / n_sites)) * n_sites
        return replace(base, unlearning=self._unlearning(method), batch_size=batch)

    def _unlearning(self, method: str) -> UnlearningSettings:
        """``training.unlearning`` with ``method`` set; DANN keeps only what to unlearn, not the adversary's recipe."""
        chosen = self.training.unlearning
        if method != Method.DANN:
            return replace(chosen, method=method)
        return UnlearningSettings(
            method=Method.DANN, beta=self.dann_beta, confounds=chosen.confounds, betas=dict(chosen.betas),
            age_bins=chosen.age_bins, balanced_heads=chosen.balanced_heads, overlap_only=chosen.overlap_only,
            overlap_range=chosen.overlap_range, overlap_key=chosen.overlap_key,
            warmup_epochs=min(chosen.warmup_epochs, defaults.WARMUP_EPOCHS),
        )

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


def _combat_unseen(baseline: BrainAgeModel, training: pd.DataFrame, unseen: pd.DataFrame, site: str,
                   handling: str) -> dict[str, Any]:
    """ComBat's result on the unseen site's scans: the age error, or ComBat's refusal."""
    from harmonize.audit.combat import combat_feature_set
    from harmonize.workflows.brain_age import brain_age_features

    train = brain_age_features(baseline, training, (Split.TRAIN,), taps=(TAP,))
    scans = brain_age_features(baseline, unseen, ALL_SPLITS, taps=(TAP,))
    result: dict[str, Any] = {"unseen_site_handling": str(handling)}
    try:
        harmonised = combat_feature_set(train, scans, eb=defaults.COMBAT_FEATURES_EB, unseen=handling)
    except HarmonizeError as err:
        result["unseen_site_mae"] = None
        result["unseen_site_error"] = f"unseen site {site!r}: {err}"
        return result
    with torch.no_grad():
        features = torch.as_tensor(harmonised.features, dtype=torch.float32, device=baseline.settings.device)
        ages = baseline.network.eval().predict_from_features(features).cpu().numpy().reshape(-1)
    result["unseen_site_mae"] = float(np.nanmean(np.abs(ages - scans.meta[Keys.AGE].astype(float))))
    return result


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
    """Train, harmonise and audit every method of ``settings`` on one manifest; write the table and report.

    Args:
        manifest: the (preprocessed) manifest, a path or a frame from :func:`~harmonize.data.manifest.read_manifest`.
        out_dir: where the outputs go (see the module docstring); must be empty or absent unless ``overwrite``.
        settings: what to compare (default: every method, the default network, the last site held out).
        report: where progress lines go (the CLI prints them).
        overwrite: allow a non-empty ``out_dir`` (files of the same names are replaced).
        progress: show a progress bar of each training run.
        extras: title, notes, metrics, figures and tables a caller adds to the outputs.

    Returns:
        The metrics written to ``metrics.json``: one dictionary per method, ``chance`` (``1 / n`` training
        sites), ``sites``, ``unseen_site`` and ``settings`` (plus ``extras.metrics``).

    Raises:
        HarmonizeError: an unreadable manifest, a non-empty ``out_dir``, too few sites, or training that diverged.
    """
    from harmonize.data.manifest import read_manifest
    from harmonize.workflows.brain_age import evaluate_combat, train_brain_age
    from harmonize.workflows.model_file import save_model

    settings = settings or CompareSettings()
    extras = extras or ComparisonExtras()
    out = prepare_output_dir(out_dir, overwrite, inputs=input_files(manifest), command="harmonize compare")
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    held_out = _held_out_site(frame, settings.unseen_site)
    training, index = _training_frame(frame, held_out)
    seed = settings.training.seed
    report(f"training sites {list(index)}" + (f", unseen site {held_out!r} held out" if held_out else ""))

    metrics: dict[str, Any] = {}
    features: dict[str, Any] = {}
    histories: dict[str, list] = {}
    baseline = None
    for method in (m for m in settings.methods if m in TRAINED_METHODS):
        run = settings.run_settings(method, len(index))
        model = run_stage(f"train {method}", report,
                          partial(train_brain_age, training, run, site_index=index, progress=progress))
        baseline = model if method == Method.NONE else baseline
        if settings.save_models:
            save_model(model, out / MODELS_DIR / f"{method}.pt")
        metrics[method], features[method] = audit_brain_age(model, frame, settings.permutations, seed)
        histories[method] = model.history
        report(summary_line(method, metrics[method]))
    if Method.COMBAT in settings.methods and baseline is not None:
        def combat() -> dict[str, Any]:
            result = evaluate_combat(baseline, training, permutations=settings.permutations, seed=seed)
            if held_out is not None:
                result.update(_combat_unseen(baseline, training, frame[frame[Keys.SITE].astype(str) == held_out],
                                             held_out, settings.combat_unseen))
                if result["unseen_site_mae"] is not None:
                    result["age_mae_per_site"][f"{held_out}{UNSEEN_SUFFIX}"] = result["unseen_site_mae"]
            return result

        metrics[Method.COMBAT] = run_stage("combat", report, combat)
        report(summary_line(Method.COMBAT, metrics[Method.COMBAT]))
    metrics = {str(k): v for k, v in metrics.items()}
    metrics["chance"] = 1.0 / len(index)
    metrics["sites"] = list(index)
    metrics["unseen_site"] = held_out
    metrics["settings"] = settings.to_dict()
    metrics.update(extras.metrics)
    write_json_atomic(out / METRICS_FILE, metrics, indent=2, default=str)
    report(f"metrics written to {out / METRICS_FILE}")
    html = run_stage("report", report, lambda: _write_report(out, metrics, features, histories, settings, held_out,
                                                              index, extras))
    report(f"report written to {html}")
    return metrics


def _combat_sentence(combat: Mapping[str, Any], held_out: str) -> str:
    """What ComBat did with the unseen site, for the report."""
    if combat.get("unseen_site_handling") == UnseenSite.PASSTHROUGH:
        return (f"ComBat and the unseen site: ComBat estimates each site's effect from that site's own scans, so it "
                f"cannot harmonise {held_out!r}, which it was not fitted on. Its scans were left unharmonised "
                "(passthrough): ComBat's unseen-site MAE is that of the network without unlearning. To harmonise a "
                "new site, ComBat must be refitted with some of its scans; unlearning and DANN need no refit.")
    return (f"ComBat and the unseen site: ComBat refused the unseen site {held_out!r} (no number in the table): "
            f"{combat.get('unseen_site_error')}")


def _write_report(out: Path, metrics: dict[str, Any], features: dict[str, Any], histories: dict[str, list],
                  settings: CompareSettings, held_out: str | None, index: CategoryIndex,
                  extras: ComparisonExtras) -> Path:
    """Figures, comparison table (Markdown, JSON) and the self-contained report.html."""
    from harmonize.audit import plots
    from harmonize.audit.report import write_comparison_table, write_report

    methods = {k: v for k, v in metrics.items() if isinstance(v, dict) and "site_probe_bacc" in v}
    chance = metrics["chance"]
    figures = out / FIGURES_DIR
    pngs: dict[str, Any] = {
        "Site probe and age error": plots.comparison_bar_plot(methods, figures / "comparison.png", chance=chance),
        "Age error per site": plots.per_site_error_plot(methods, figures / "per_site_error.png"),
    }
    if features:
        title = "Features of held-out scans" + (" (the unseen site in grey)" if held_out else "")
        pngs[title] = plots.embedding_grid(features, figures / "embeddings.png", site_names=list(index),
                                           seed=settings.training.seed)
    trained = {k: h for k, h in histories.items() if h}
    if trained:
        pngs["Domain head during training"] = plots.training_curves_plot(trained, figures / "training.png",
                                                                          chance=chance)
    pngs.update(extras.plots)
    write_comparison_table(methods, out / "comparison.md", out / "comparison.json", chance=chance)
    notes = [*extras.notes, *READING_NOTES]
    first = next(iter(methods.values()), {})
    notes.append(f"Held-out scans of the training sites {list(index)}: {first.get('n_subjects', 0)} (val + test).")
    if held_out is not None:
        notes.append(f"Unseen site: every scan of {held_out!r} ({first.get('n_unseen', 0)} scans) was kept out of "
                     "training; 'Unseen-site MAE' is each method's age error on them.")
        if Method.COMBAT in methods:
            notes.append(_combat_sentence(methods[Method.COMBAT], held_out))
    if methods.get(Method.COMBAT, {}).get("age_probe_note"):
        notes.append(f"ComBat's age R\u00b2 from features: {methods[Method.COMBAT]['age_probe_note']}.")
    return write_report(out, methods, chance, plots=pngs, recon_table=extras.recon_table, title=extras.title,
                        notes=notes)
