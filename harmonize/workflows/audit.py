"""Audit a trained model: can the scanner still be read from its features, and is the biology (and the task) kept?

:func:`audit_model` (``harmonize audit``) takes a model (a :class:`~harmonize.workflows.brain_age.BrainAgeModel`,
a :class:`~harmonize.workflows.segmentation_audit.SegmentationModel`, a model file written by
:func:`~harmonize.workflows.model_file.save_model`, or a MONAI bundle folder) and a manifest. :func:`audit_held_out`
measures it: the part every task shares (which scans, the unseen sites) is
:func:`~harmonize.audit.held_out.audit_held_out_scans`, and the network (:func:`audit_task`) picks the task's
adapter (:func:`task_audit`): :class:`BrainAgeAudit` (the age error) or
:class:`~harmonize.workflows.segmentation_audit.SegmentationAudit` (Dice per tissue). Both share the output
folder, the probes (:func:`~harmonize.audit.feature_probes.feature_probes`), the figures and the report. For a
brain-age model it measures, on the scans the model was not trained on:

- the **held-out scans** of the sites it was trained on (``val`` and ``test`` rows): a site probe (cross-validated
  logistic regression on the tapped features, balanced accuracy against the chance level ``1 / n_sites``, with a
  permutation p-value), age from the features (ridge R² and MAE), sex from the features, and the network's own
  age error, overall and per site;
- every scan of a site the model never saw (a site missing from its site index): the network's age error there
  (``unseen_site_mae``), the test of whether it generalises to a new scanner;

then writes ``metrics.json``, PNG figures (PCA and t-SNE of the features coloured by site and by age, age error per
site, and the domain head's training curves when the model has a history) and a self-contained ``report.html``.
:func:`audit_held_out` computes the figures without writing anything; ``harmonize compare`` calls it for each
method, so one model is audited the same way alone or in a comparison.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harmonize import defaults
from harmonize.audit.features import FeatureSet
from harmonize.audit.held_out import (
    ALL_SPLITS,
    UNSEEN_SUFFIX,
    TaskAudit,
    audit_held_out_scans,
    concat_feature_sets,
    held_out_rows,
)
from harmonize.audit.site_bias import shared_age_mask
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, HarmonizeError, integer_problem
from harmonize.io import write_json_atomic
from harmonize.keys import Keys, Split, Task
from harmonize.networks import BrainAgeRegressor, TissueSegmenter
from harmonize.output_dir import hold_output_dir, releases_output_dirs
from harmonize.workflows.brain_age_evaluation import brain_age_features, evaluate_brain_age
from harmonize.workflows.models import BrainAgeModel

if TYPE_CHECKING:
    from harmonize.workflows.models import SegmentationModel

__all__ = [
    "ALL_SPLITS",
    "FIGURES_DIR",
    "METRICS_FILE",
    "READING_NOTES",
    "SEGMENTATION_NOTES",
    "TASK_NETWORKS",
    "UNSEEN_SUFFIX",
    "BrainAgeAudit",
    "audit_held_out",
    "audit_model",
    "audit_task",
    "concat_feature_sets",
    "held_out_rows",
    "input_files",
    "prepare_output_dir",
    "summary_line",
    "task_audit",
]

logger = logging.getLogger(__name__)

#: Files and folders written into the output folder.
METRICS_FILE = "metrics.json"
FIGURES_DIR = "figures"
#: How to read the audit's figures, shown in every report.
READING_NOTES = (
    ("Site probe: a logistic regression, cross-validated on the held-out scans of the training sites, predicts the "
     "site from the network's features. Its balanced accuracy is compared with chance (1 / number of sites): near "
     "chance means the scanner cannot be read from the features (linearly). The permutation p-value is the share "
     "of label shufflings that score as well; a small p (< 0.05) means the probe still finds site information. "
     "When the sites' held-out scans differ in age, age alone tells them apart a little: 'Site from age & sex "
     "alone' is the same probe on age and sex only, the level a network that keeps age can reach, and 'Site "
     "probe, age & sex regressed out' asks for the scanner information beyond biology (reference: chance)."),
    ("Biology kept: the age MAE is the network's own error on held-out scans; age R\u00b2 (ridge regression) and "
     "the sex probe read age and sex from the same features: harmonisation should leave these close to the "
     "baseline."),
    ("Site bias spread: the mean signed age error (predicted - true age) of each training site's held-out scans "
     "whose age at least two training sites share, largest minus smallest (years). A network that takes the scanner as a shortcut to age predicts too old on one "
     "scanner and too young on another; 0 means no scanner shifts the predictions against another."),
)
#: How to read a segmentation audit's figures (with the site-probe note of :data:`READING_NOTES`).
SEGMENTATION_NOTES = (
    READING_NOTES[0],
    ("Task kept: Dice (MONAI's DiceMetric) of the network's segmentation (argmax of its logits) against the label "
     "maps, per tissue, on the held-out scans; a tissue absent from a scan's label map is left out of that scan's "
     "mean. Age R\u00b2 (ridge regression) and the sex probe read age and sex from the same features when the "
     "manifest has them: harmonisation should leave the Dice and these close to the baseline."),
)
#: Network classes :func:`audit_model` audits, by task (a subclass counts as its base class).
TASK_NETWORKS: dict[Task, type] = {Task.BRAIN_AGE: BrainAgeRegressor, Task.SEGMENTATION: TissueSegmenter}


def prepare_output_dir(out_dir: str | os.PathLike, overwrite: bool = False,
                       inputs: Sequence[str | os.PathLike] = (), command: str = "harmonize") -> Path:
    """Claim the output folder until the enclosing :func:`~harmonize.output_dir.releases_output_dirs` call ends.

    The folder is checked, created and locked, and ``--overwrite`` replaces only the files harmonize wrote there
    (:class:`~harmonize.output_dir.OutputDir`).

    Args:
        out_dir: the output folder.
        overwrite: allow a folder holding an earlier run's outputs (they are removed first).
        inputs: files the run reads (e.g. the manifest): the output may never be their folder, even with
            ``overwrite``, so that nothing written lands beside (or over) the user's files.
        command: what writes the folder, named to another run that finds it locked.

    Raises:
        OutputDirError: ``out_dir`` is a file or not writable, holds an input, is a non-empty folder without
            ``overwrite``, or holds files harmonize did not write.
        FolderLockedError: another run is writing ``out_dir``.
    """
    return hold_output_dir(out_dir, command, overwrite=overwrite, inputs=inputs)


def input_files(*given: Any) -> list[Path]:
    """The files among ``given`` (paths, or frames read from a manifest file) that a run reads."""
    from harmonize.data.manifest import MANIFEST_ATTR

    files = []
    for item in given:
        if isinstance(item, pd.DataFrame):
            item = item.attrs.get(MANIFEST_ATTR)
        if isinstance(item, (str, os.PathLike)) and Path(item).is_file():
            files.append(Path(item))
    return files


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def audit_task(network: Any) -> Task:
    """The task of a network (:data:`TASK_NETWORKS`), which chooses the audit's task figures.

    Raises:
        HarmonizeError: a network of another class, named with the classes the audit measures.
    """
    for task, cls in TASK_NETWORKS.items():
        if isinstance(network, cls):
            return task
    known = ", ".join(f"{cls.__name__} ({task})" for task, cls in TASK_NETWORKS.items())
    raise HarmonizeError(
        f"harmonize audit cannot audit a {type(network).__name__} network: it measures {known} networks. Give a "
        "bundle whose 'network_def' is one of them."
    )


@dataclass
class BrainAgeAudit:
    """The brain-age part of an audit (a :class:`~harmonize.audit.held_out.TaskAudit`): the network's age error.

    Args:
        harmonise: a post-hoc harmonisation of the features that also predicts age from them (e.g. a fitted
            :class:`~harmonize.audit.erasure.SiteEraser`), applied to every audited scan before it is measured.
    """

    harmonise: Callable[[FeatureSet], FeatureSet] | None = None

    def _features(self, model: BrainAgeModel, rows: pd.DataFrame, splits: Sequence[str]) -> FeatureSet:
        features = brain_age_features(model, rows, tuple(splits))
        return features if self.harmonise is None else self.harmonise(features)

    def held_out(self, model: BrainAgeModel, frame: pd.DataFrame, rows: pd.DataFrame, splits: Sequence[str],
                 permutations: int, seed: int) -> tuple[dict[str, Any], FeatureSet]:
        """The probes and age errors of :func:`~harmonize.workflows.brain_age_evaluation.evaluate_brain_age`."""
        features = self._features(model, rows, splits)
        if features.predictions is None or features.predictions.reshape(len(features), -1).shape[1] != 1:
            shape = None if features.predictions is None else tuple(features.predictions.shape[1:])
            raise HarmonizeError(
                f"The audit measures brain-age networks (one predicted age per scan); this network outputs {shape} "
                "per scan."
            )
        ranges = list(training_age_ranges(frame, model.site_index).values())
        metrics = evaluate_brain_age(model, rows, tuple(splits), permutations=permutations, seed=seed,
                                     features=features, bias_mask=shared_age_mask(features.meta[Keys.AGE], ranges))
        metrics["seconds"] = _finite_or_none(metrics.get("seconds"))
        return metrics, features

    def unseen_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Every row of an unseen site (all its splits)."""
        return rows

    def unseen(self, model: BrainAgeModel, rows: pd.DataFrame) -> tuple[FeatureSet, np.ndarray]:
        """The features and absolute age errors of unseen-site scans."""
        features = self._features(model, rows, ALL_SPLITS)
        return features, np.abs(features.predictions.reshape(-1) - features.meta[Keys.AGE].astype(float))

    def add_unseen(self, metrics: dict[str, Any], scores: np.ndarray, sites: np.ndarray) -> None:
        """``unseen_site_mae`` (all unseen scans) and each unseen site's MAE in ``age_mae_per_site``."""
        metrics["unseen_site_mae"] = float(np.nanmean(scores))
        for name in sorted(set(sites.tolist())):
            metrics["age_mae_per_site"][f"{name}{UNSEEN_SUFFIX}"] = float(np.nanmean(scores[sites == name]))


def task_audit(model: BrainAgeModel | SegmentationModel,
               harmonise: Callable[[FeatureSet], FeatureSet] | None = None) -> TaskAudit:
    """The per-task part of the audit of ``model``, chosen by its network (:func:`audit_task`).

    Raises:
        HarmonizeError: a network the audit does not measure.
        ConfigError: ``harmonise`` for a segmentation model (post-hoc harmonisation predicts ages).
    """
    if audit_task(model.network) == Task.BRAIN_AGE:
        return BrainAgeAudit(harmonise)
    if harmonise is not None:
        raise ConfigError("Argument 'harmonise': a post-hoc harmonisation predicts ages; a segmentation model has "
                          "no age to predict. Audit it without harmonise.")
    from harmonize.workflows.segmentation_audit import SegmentationAudit

    return SegmentationAudit()


def audit_held_out(
    model: BrainAgeModel | SegmentationModel,
    manifest: str | os.PathLike | pd.DataFrame,
    permutations: int = defaults.PROBE_PERMUTATIONS,
    seed: int = defaults.SEED,
    splits: Sequence[str] = (Split.VAL, Split.TEST),
    harmonise: Callable[[FeatureSet], FeatureSet] | None = None,
) -> tuple[dict[str, Any], FeatureSet]:
    """Probe and task figures of a model, of either task, on the scans it did not train on (see the module docstring).

    The shared part is :func:`~harmonize.audit.held_out.audit_held_out_scans`; the task's part is
    :func:`task_audit`'s adapter (:class:`BrainAgeAudit`, or
    :class:`~harmonize.workflows.segmentation_audit.SegmentationAudit`).

    Args:
        model: the model to audit.
        manifest: a manifest path or frame; its sites that the model's site index lacks count as unseen.
        permutations: label permutations of the site probe's p-value (0: no p-value).
        seed: seed of the probes' folds and permutations.
        splits: held-out splits of the training sites.
        harmonise: brain age only: a post-hoc harmonisation of the features that also predicts age from them (e.g.
            a fitted :class:`~harmonize.audit.erasure.SiteEraser`), applied to every audited scan.

    Returns:
        ``(metrics, features)``. For a brain-age model, ``metrics`` holds the keys of
        :func:`~harmonize.audit.age_audit.audit_feature_set` (``site_probe_bacc``, ``site_probe_p``,
        ``chance``, ``age_mae``, ``age_mae_per_site``, ``age_probe_r2``, ``sex_probe_bacc``, ...), plus, when the
        manifest holds unseen sites, ``unseen_site_mae`` (age MAE over all their scans), ``unseen_sites`` and
        ``n_unseen`` (unseen sites also appear in ``age_mae_per_site`` as ``"<site> (unseen)"``); for a
        segmentation model, those of :class:`~harmonize.workflows.segmentation_audit.SegmentationAudit`.
        ``features`` are those of every audited scan, unseen ones with site index -1.

    Raises:
        HarmonizeError: no held-out scan of a training site (nothing to probe), a network the audit does not
            measure, or a brain-age network whose output is not one age per scan.
    """
    from harmonize.data.manifest import read_manifest

    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    return audit_held_out_scans(model, frame, task_audit(model, harmonise), permutations, seed, splits)


def training_age_ranges(frame: pd.DataFrame, site_index: CategoryIndex) -> dict[str, tuple[float, float]]:
    """``{site: (min, max)}`` age of the ``train`` rows of each site in ``site_index`` (sites without an age are
    skipped)."""
    train = frame[(frame[Keys.SPLIT] == Split.TRAIN) & frame[Keys.SITE].astype(str).isin(list(site_index))]
    ages = train.assign(**{Keys.AGE: pd.to_numeric(train[Keys.AGE], errors="coerce")}).dropna(subset=[Keys.AGE])
    grouped = ages.groupby(ages[Keys.SITE].astype(str))[Keys.AGE]
    return {str(site): (float(low), float(high)) for site, low, high in zip(grouped.min().index, grouped.min(),
                                                                           grouped.max())}


def _loaded(
    model: BrainAgeModel | SegmentationModel | str | os.PathLike, frame: pd.DataFrame, device: str | None
) -> tuple[BrainAgeModel | SegmentationModel, str]:
    """The model to audit, read from its file or bundle folder if given as a path, and what it was."""
    from harmonize.workflows.bundle_model import load_bundle_model
    from harmonize.workflows.model_file import load_model
    from harmonize.workflows.models import SegmentationModel

    if isinstance(model, (BrainAgeModel, SegmentationModel)):
        return model, "a model in memory"
    path = Path(model)
    loaded = load_bundle_model(path, frame, device or "cpu") if path.is_dir() else load_model(path, device)
    return loaded, str(model)


def _task_figures_and_notes(
    model: BrainAgeModel | SegmentationModel, metrics: dict[str, Any], features: FeatureSet, source: str,
    figures: Path, segmentation: bool,
) -> tuple[dict[str, Path], list[str]]:
    """The task figure and report notes of an audited model: age error per site, or Dice per site and tissue."""
    from harmonize.audit import plots

    scans = f"{metrics['n_subjects']} held-out scans of the training sites {list(model.site_index)}"
    unseen = f"Sites unseen in training ({', '.join(metrics.get('unseen_sites', ()))}): {metrics.get('n_unseen')} scans"
    if not segmentation:
        pngs = {"Age error per site": plots.per_site_error_plot({model.method: metrics},
                                                                figures / "per_site_error.png")}
        notes = [f"Model: {source} (method {model.method}); audited on {scans}.", *READING_NOTES]
        if "unseen_site_mae" in metrics:
            notes.append(f"{unseen}, age MAE {metrics['unseen_site_mae']:.2f} years (column 'Unseen-site MAE').")
        return pngs, notes
    png = plots.grouped_bar_plot(metrics["dice_per_site"], figures / "per_site_dice.png", ylabel="Dice",
                                 title="Dice per site and tissue (held-out scans)", ylim=(0.0, 1.0))
    notes = [(f"Model: {source} (method {model.method}, tissue segmentation of {', '.join(metrics['tissues'])}); "
              f"audited on {scans} ({metrics['n_labelled']} with a label map)."), *SEGMENTATION_NOTES]
    if "unseen_site_dice" in metrics:
        dice = metrics["unseen_site_dice"]
        notes.append(f"{unseen}, mean Dice {'not measured' if dice is None else format(dice, '.3f')} "
                     "(column 'Unseen-site Dice').")
    if Keys.AGE in features.meta and not np.isfinite(features.meta[Keys.AGE].astype(float)).any():
        features.meta.pop(Keys.AGE)  # no age to colour the embedding by
    return {"Dice per site and tissue": png}, notes


@releases_output_dirs
def audit_model(
    model: BrainAgeModel | SegmentationModel | str | os.PathLike,
    manifest: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    permutations: int = defaults.PROBE_PERMUTATIONS,
    seed: int = defaults.SEED,
    device: str | None = None,
    report: Callable[[str], None] = logger.info,
    check_inputs: bool = True,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Audit a model on a manifest's held-out and unseen-site scans; write metrics, figures and a report.

    The network decides the task (:func:`audit_task`): both are measured by :func:`audit_held_out`; a brain-age
    network gets an age-error figure, a tissue segmenter a Dice figure; both get the feature embeddings, the training curves when the model has a history, ``metrics.json`` and ``report.html``.

    Args:
        model: a trained model, a model file (:func:`~harmonize.workflows.model_file.save_model`, brain age) or a
            MONAI bundle folder (:func:`~harmonize.workflows.bundle_model.load_bundle_model`, either task).
        manifest: the (preprocessed) manifest of the scans to audit (with label maps for a segmentation model).
        out_dir: where ``metrics.json``, ``figures/*.png`` and ``report.html`` go; must be empty or absent unless
            ``overwrite``.
        overwrite: allow a non-empty ``out_dir`` (files of the same names are replaced).
        permutations: label permutations of the site probe's p-value.
        seed: seed of the probes and of the t-SNE embedding.
        device: where to run a model read from a file (default: the CPU, or the GPU it was saved on if present).
        report: where progress lines go (the CLI prints them).
        check_inputs: refuse scans whose grid (shape, spacing) or intensity standardisation differs from the
            training scans the model records (a model file's ``inputs``, a bundle's ``models/preprocessing.json``)
            (:func:`~harmonize.workflows.input_check.check_inputs`); ``False`` audits them anyway.
        num_workers: data-loader processes that read the scans ahead of the network (default: the brain-age
            model's training setting, else 0); the scans are read per item, never all held in memory.

    Returns:
        The metrics written to ``metrics.json``: those of :func:`audit_held_out`,
        plus ``method``, ``model`` (what was audited), ``manifest`` and ``sites`` (the training sites).

    Raises:
        HarmonizeError: an unreadable model or manifest, a network that is neither a brain-age network nor a tissue
            segmenter, a non-empty ``out_dir``, nothing to audit, or (with ``check_inputs``) scans not
            preprocessed as the model's training scans were.
    """
    from harmonize.audit import plots
    from harmonize.audit.report import write_report
    from harmonize.data.manifest import MANIFEST_ATTR, read_manifest
    from harmonize.workflows.segmentation_audit import segmentation_columns

    problems = [p for p in (integer_problem("permutations", permutations, 0), integer_problem("seed", seed, 0)) if p]
    if problems:
        raise ConfigError("Invalid audit arguments.", problems=problems)
    out = prepare_output_dir(out_dir, overwrite, inputs=input_files(manifest, model), command="harmonize audit")
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    model, source = _loaded(model, frame, device)
    if num_workers is not None:  # a copy: a model given in memory is not changed
        model = (replace(model, settings=replace(model.settings, num_workers=num_workers))
                 if isinstance(model, BrainAgeModel) else replace(model, num_workers=num_workers))
    task = audit_task(model.network)
    segmentation = task == Task.SEGMENTATION
    if segmentation and isinstance(model, BrainAgeModel):
        raise HarmonizeError(
            f"{source}: a {type(model.network).__name__} held as a brain-age model; audit it as a "
            "harmonize.workflows.segmentation_audit.SegmentationModel or from its bundle folder."
        )
    if check_inputs:
        from harmonize.workflows.input_check import check_inputs as check_scans

        check_scans(model.inputs, frame, source)
    elif not check_inputs:
        logger.warning("%s: the scans' grid and intensities are not checked against the model's training scans "
                       "(check_inputs=False): a mismatch reads as a scanner difference.", source)
    method = str(model.method)
    report(f"auditing {source} ({method}, taps {list(model.taps)}, sites {list(model.site_index)})")
    figures = out / FIGURES_DIR
    metrics, features = audit_held_out(model, frame, permutations=permutations, seed=seed)
    task_pngs, notes = _task_figures_and_notes(model, metrics, features, source, figures, segmentation)
    metrics = {"method": method, "model": source, "manifest": str(frame.attrs.get(MANIFEST_ATTR, "a frame")),
               "sites": list(model.site_index), **metrics}
    report(summary_line(method, metrics))
    site_names = list(model.site_index)
    pngs = {
        "Features of held-out scans (PCA and t-SNE; unseen sites grey)": plots.embedding_grid(
            {method: features}, figures / "embeddings.png", site_names=site_names, seed=seed),
        **task_pngs,
    }
    if model.history:
        pngs["Domain head during training"] = plots.training_curves_plot(
            {method: model.history}, figures / "training.png", chance=1.0 / len(site_names))
    write_json_atomic(out / METRICS_FILE, metrics, indent=2, default=str)
    columns = {"columns": segmentation_columns(metrics)} if segmentation else {}
    html = write_report(out, {method: metrics}, metrics["chance"], plots=pngs, title=f"harmonize audit: {method}",
                        notes=notes, **columns)
    report(f"metrics written to {out / METRICS_FILE}, report to {html}")
    return metrics


def summary_line(method: str, m: dict[str, Any]) -> str:
    """One progress line summarising a model's audit figures (age error, or Dice for a segmentation audit)."""
    p, floor = m.get("site_probe_p"), m.get("site_probe_floor")
    line = (f"  {method}: site probe {m['site_probe_bacc']:.3f} (chance {m['chance']:.3f}"
            f"{'' if floor is None else f', from age & sex alone {floor:.3f}'}{'' if p is None else f', p {p:.3f}'})")
    if "mean_dice" in m:
        dice = m["mean_dice"]
        line += f", mean Dice {'n/a' if dice is None else format(dice, '.3f')}"
        if m.get("age_probe_r2") is not None:
            line += f", age R2 from features {m['age_probe_r2']:.2f}"
        if m.get("unseen_site_dice") is not None:
            line += f", unseen-site Dice {m['unseen_site_dice']:.3f}"
        return line
    r2 = m.get("age_probe_r2")
    line += f", age MAE {m['age_mae']:.2f} y, age R2 from features {'n/a' if r2 is None else format(r2, '.2f')}"
    if m.get("unseen_site_mae") is not None:
        line += f", unseen-site MAE {m['unseen_site_mae']:.2f} y"
    if m.get("site_bias_spread") is not None:
        line += f", site bias spread {m['site_bias_spread']:.2f} y"
    if (agreement := m.get("site_agreement")) is not None:
        line += f", age loss with site agreement (weight {agreement:g})"
    if (evidence := m.get("site_evidence")) is not None:
        line += (f", {'' if m.get('site_unlearned', True) else 'site NOT unlearned: '}the training features told the "
                 f"site {evidence:+.3f} beyond age & sex")
    if (loss := m.get("final_task_loss")) is not None and loss >= defaults.TASK_NOT_LEARNT_LOSS:
        line += (f"; AGE NOT LEARNT: the last epoch's age loss was {loss:.2f} (1 = the mean age), the adversary may "
                 "have won before the task was learnt")
    return line
