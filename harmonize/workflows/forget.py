"""Make a trained brain-age or segmentation model forget withdrawn subjects, and check it (``harmonize forget``).

:func:`forget_model` takes a trained model (a brain-age model file of ``harmonize compare`` / :func:`save_model`, or
a MONAI bundle folder with ``models/model.pt``: a brain-age or a tissue-segmentation bundle) and a manifest whose
``forget`` column marks the withdrawn subjects' training rows (:func:`~harmonize.data.forget_list.forget_rows`). It
runs one machine-unlearning method by name through the same stages as reconstruction unlearning
(:func:`~harmonize.workflows.machine_unlearning.run_unlearning`: a ``SupervisedTrainer`` with a
:class:`~harmonize.handlers.MachineUnlearningHandler` per stage) on a copy of the network, with the task's loss
(:meth:`~harmonize.workflows.forget_settings.ForgetSettings.stages`: the standardised age error, or Dice +
cross-entropy):

- FT fine-tunes on the retained subjects (the withdrawn never reach a forward pass); GA / GA-L1 ascend the loss
  of the withdrawn subjects, NL trains on them with noisy ages (brain age only);
- the BatchNorm statistics are then recomputed on the retained subjects only
  (:func:`~harmonize.networks.recalibrate_batchnorm`), so they hold no average over a withdrawn scan.

It measures the original, the unlearned model and, with ``oracle=True``, one retrained on the retained subjects
(:func:`~harmonize.workflows.forget_measure.measure_model`):

- the task error (age error, or Dice) on the retained training scans, on the withdrawn scans and on the held-out
  (val/test) scans;
- the site probe of the held-out scans' features (:func:`~harmonize.workflows.audit.audit_held_out`): forgetting
  should not give back the scanner information a harmonised model unlearnt;
- a membership-inference audit (:func:`~harmonize.audit.membership.membership_inference`): the loss-threshold
  attack's AUC separating the withdrawn subjects from held-out subjects of the same sites, with its bootstrap
  interval; a model that forgot them is near the oracle's;
- the time of the forgetting against that of retraining (the oracle's, else the original's training time), in
  wall seconds and, against an oracle retrained here, in CPU seconds of the process.

Outputs in ``out_dir``: the unlearned model (``models/<method>.pt``, or ``bundle_<method>/``: the bundle's configs
with the new ``models/model.pt``), the oracle's with ``oracle=True``, ``metrics.json``, ``report.md``,
``figures/*.png`` and ``report.html``. The original model is only read.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from harmonize import defaults
from harmonize.audit.report import Column, format_value, metrics_table
from harmonize.data.forget_list import forget_rows
from harmonize.data.manifest import MANIFEST_ATTR, read_manifest
from harmonize.errors import ConfigError, HarmonizeError, ManifestError
from harmonize.io import write_json_atomic, write_text_atomic
from harmonize.keys import Keys, ReconMethod
from harmonize.output_dir import releases_output_dirs
from harmonize.workflows.brain_age import BrainAgeModel, train_brain_age
from harmonize.workflows.forget_measure import measure_model, membership_rows
from harmonize.workflows.forget_settings import (
    FORGET_METHODS,
    ForgetSettings,
    ForgetTargetd,
    retrain_segmentation,
    unlearn_brain_age,
    unlearn_model,
)
from harmonize.workflows.machine_unlearning import Stopwatch
from harmonize.workflows.models import SegmentationModel

__all__ = [
    "FORGET_COLUMNS",
    "FORGET_METHODS",
    "SEGMENTATION_FORGET_COLUMNS",
    "ForgetSettings",
    "ForgetTargetd",
    "forget_model",
    "measure_model",
    "unlearn_brain_age",
    "unlearn_model",
]

logger = logging.getLogger(__name__)

#: Row names of the reference models in the report.
ORIGINAL, ORACLE = str(ReconMethod.ORIGINAL), str(ReconMethod.ORACLE)
#: Columns of the report's table (``better="oracle"``: closest to the oracle's row is best).
FORGET_COLUMNS: tuple[Column, ...] = (
    Column("mia_auc", "Membership-inference AUC", 3, "oracle"),
    Column("forget_mae", "Withdrawn-scan MAE (years)", 2, "oracle"),
    Column("retain_mae", "Retained-scan MAE (years)", 2, "low"),
    Column("age_mae", "Held-out MAE (years)", 2, "low"),
    Column("site_probe_bacc", "Site-probe bacc", 3, "chance"),
    Column("seconds", "Seconds", 1, "low"),
)
#: The same for a segmentation model: Dice instead of the age error.
SEGMENTATION_FORGET_COLUMNS: tuple[Column, ...] = (
    FORGET_COLUMNS[0],
    Column("forget_dice", "Withdrawn-scan Dice", 3, "oracle"),
    Column("retain_dice", "Retained-scan Dice", 3, "high"),
    Column("mean_dice", "Held-out Dice", 3, "high"),
    *FORGET_COLUMNS[-2:],
)
#: The membership figure's axis label of the per-scan losses, by task.
BRAIN_AGE_LOSS_LABEL = "loss (age error, years)"
SEGMENTATION_LOSS_LABEL = "loss (Dice + cross-entropy)"
#: Subjects named at most in an error message.
MAX_NAMED = 10
#: Files written into the output folder.
METRICS_FILE = "metrics.json"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
MODELS_DIR = "models"
#: How to read the report.
NOTES = (
    ("Membership inference: a loss-threshold attack calls a subject a training member when the model's age error on "
     "it is small. Its AUC separates the withdrawn subjects' training scans (members) from held-out scans of the same "
     "sites (non-members): 0.5 means the model fits the withdrawn subjects no better than subjects it never saw. The "
     "interval is a stratified bootstrap. A model that forgot them is near the oracle (retrained without them); an "
     "AUC well below the oracle's means they are now fitted worse than unseen subjects, which also gives them away."),
    ("Task kept: the age MAE on the retained training scans and on the held-out (val/test) scans should stay near the "
     "original's. Site probe: a cross-validated logistic regression reads the site from the held-out scans' "
     "features (balanced accuracy against chance); forgetting should not raise it above the original's."),
    ("Time: the unlearning stages and the BatchNorm recalibration, against retraining (the oracle's time with "
     "--oracle, else the original model's recorded training time)."),
)
#: How to read a segmentation model's report (its time note is :data:`NOTES`' last).
SEGMENTATION_NOTES = (
    ("Membership inference: a loss-threshold attack calls a subject a training member when the model's loss (Dice + "
     "cross-entropy of its segmentation) on it is small. Its AUC separates the withdrawn subjects' training scans "
     "(members) from held-out scans of the same sites (non-members): 0.5 means the model fits the withdrawn "
     "subjects no better than subjects it never saw. The interval is a stratified bootstrap. A model that forgot "
     "them is near the oracle (trained from scratch without them)."),
    ("Task kept: the mean Dice (MONAI's DiceMetric, background excluded) on the retained training scans and on the "
     "held-out (val/test) scans should stay near the original's. Site probe: a cross-validated logistic regression "
     "reads the site from the held-out scans' features (balanced accuracy against chance); forgetting should not "
     "raise it above the original's."),
    NOTES[-1],
)


def _load(
    model: BrainAgeModel | SegmentationModel | str | os.PathLike, frame: pd.DataFrame, device: str | None
) -> tuple[BrainAgeModel | SegmentationModel, str]:
    """The model, read from its file or bundle folder if given as a path, on ``device``, and what it was.

    Raises:
        HarmonizeError: a network that is neither a brain-age regressor nor a tissue segmenter.
    """
    from harmonize.workflows.audit import TASK_NETWORKS, _loaded

    loaded, source = _loaded(model, frame, device)
    if not isinstance(loaded.network, tuple(TASK_NETWORKS.values())):
        known = ", ".join(f"{task} ({cls.__name__})" for task, cls in TASK_NETWORKS.items())
        raise HarmonizeError(f"{source}: harmonize forget forgets subjects of {known} models; this is a "
                             f"{type(loaded.network).__name__}.")
    if device is not None:
        if isinstance(loaded, BrainAgeModel):
            loaded.settings.device = device
        else:
            loaded.device = device
        loaded.network.to(device)
    return loaded, source


def _save(model: BrainAgeModel | SegmentationModel, name: str, source: Any, out: Path) -> Path:
    """Write ``model`` as its source was: a model file, or a bundle folder with the source's configs.

    A segmentation model in memory (no bundle) is written as its network's ``state_dict`` (``models/<name>.pt``,
    the weights of a bundle).
    """
    from harmonize.io import atomic_write
    from harmonize.workflows.model_file import BUNDLE_WEIGHTS, save_model

    def write_weights(path: Path) -> Path:
        state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
        return atomic_write(path, lambda tmp: torch.save(state, tmp))

    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = out / f"bundle_{name}"
        shutil.copytree(Path(source) / "configs", folder / "configs")
        for extra in ("site_index.json", "preprocessing.json"):
            if (Path(source) / "models" / extra).is_file():
                (folder / "models").mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(source) / "models" / extra, folder / "models" / extra)
        model.site_index.save(folder / "models" / "site_index.json")
        write_weights(folder / BUNDLE_WEIGHTS)
        return folder
    if isinstance(model, SegmentationModel):
        return write_weights(out / MODELS_DIR / f"{name}.pt")
    return save_model(model, out / MODELS_DIR / f"{name}.pt")


def _oracle(
    model: BrainAgeModel | SegmentationModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings
) -> BrainAgeModel | SegmentationModel:
    """The original's training run, from scratch, on every row but the withdrawn ones.

    :func:`~harmonize.workflows.brain_age.train_brain_age` reads the scans as the manifest gives them: a bundle's
    ``transforms`` (e.g. intensity normalisation) is not applied to a brain-age oracle, which is trained and measured
    without it. A segmentation model's oracle is :func:`~harmonize.workflows.forget_settings.retrain_segmentation`
    (with the model's transform).
    """
    if isinstance(model, SegmentationModel):
        return retrain_segmentation(model, frame, flags, settings)[0]
    withdrawn = flags.index[flags]
    kept = frame.drop(index=withdrawn)
    kept.attrs.update(frame.attrs)
    trained = copy.deepcopy(model.settings)
    trained.seed = settings.seed
    trained.device = str(model.settings.device)
    logger.info("oracle: retraining from scratch on %d of %d training scans (%d epochs)",
                int((~flags).sum()), len(flags), trained.max_epochs)
    return train_brain_age(kept, trained, site_index=model.site_index)


def _markdown(rows: list[dict[str, Any]], chance: float | None, columns: Sequence[Column] = FORGET_COLUMNS) -> str:
    header = "| Model | " + " | ".join(c.header for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        cells = []
        for column in columns:
            text = format_value(column, row.get(column.key))
            interval = row.get(f"{column.key}_ci")
            if interval:
                text += f" [{interval[0]:.{column.digits}f}, {interval[1]:.{column.digits}f}]"
            cells.append(text)
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    if chance is not None:
        lines.append(f"\nSite-probe chance level: {chance:.3f}. Intervals: {defaults.MIA_CONFIDENCE:.0%} bootstrap.")
    return "\n".join(lines) + "\n"


def _time_line(seconds: float, retrain: float | None) -> str:
    ratio = "" if not retrain else f", {100 * seconds / retrain:.1f} % of retraining ({retrain:.1f} s)"
    return f"{seconds:.1f} s{ratio}"


@releases_output_dirs
def _check_labels(frame: pd.DataFrame, flags: pd.Series, held: pd.DataFrame) -> None:
    """Raise unless every training and held-out row of a segmentation model's run has a label map.

    Raises:
        ManifestError: rows without a ``label`` path, named by subject.
    """
    rows = pd.concat([frame.loc[flags.index], held])
    labels = rows[Keys.LABEL] if Keys.LABEL in rows else pd.Series(pd.NA, index=rows.index)
    missing = rows.loc[labels.isna(), Keys.SUBJECT_ID].astype(str).tolist()
    if missing:
        raise ManifestError(
            f"{len(missing)} training or held-out row(s) have no '{Keys.LABEL}' (label map) path: forgetting from a "
            "segmentation model trains on the retained scans' label maps and measures the Dice of every scan. Add "
            f"the label maps of subjects {missing[:MAX_NAMED]}{' ...' if len(missing) > MAX_NAMED else ''}."
        )


def _figures_line(m: dict[str, Any]) -> str:
    """One model's task figures, as the progress lines give them."""
    if "age_mae" in m:
        return (f"held-out MAE {m['age_mae']:.2f} y, retained MAE {m['retain_mae']:.2f} y, withdrawn MAE "
                f"{m['forget_mae']:.2f} y")
    return (f"held-out Dice {m['mean_dice']:.3f}, retained Dice {m['retain_dice']:.3f}, withdrawn Dice "
            f"{m['forget_dice']:.3f}")


def forget_model(
    model: BrainAgeModel | SegmentationModel | str | os.PathLike,
    manifest: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    settings: ForgetSettings | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] = logger.info,
    methods: Sequence[ReconMethod | str] | None = None,
    source: str | None = None,
    oracle_model: BrainAgeModel | SegmentationModel | str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Forget a manifest's withdrawn subjects from a trained brain-age or segmentation model; write the model(s) and
    the report.

    Args:
        model: a model in memory, a brain-age model file (:func:`~harmonize.workflows.model_file.save_model`) or a
            MONAI bundle folder (:func:`~harmonize.workflows.bundle_model.load_bundle_model`: a brain-age or a
            tissue-segmentation bundle); only read.
        manifest: the manifest the model was trained on, with the ``forget`` column marking withdrawn training rows.
        out_dir: the output folder (absent or empty unless ``overwrite``; never the model's or manifest's folder).
        settings: method and schedule (default :class:`ForgetSettings`).
        overwrite: replace an earlier run's outputs in ``out_dir``.
        report: where progress lines go (the CLI prints them).
        methods: several methods to run from the same original, compared in one report with one oracle
            (default: ``settings.method``).
        source: what the report calls the model (default: its path, or "a model in memory").
        oracle_model: a model already retrained without the withdrawn subjects (in memory, a model file or a bundle
            folder), measured as the oracle instead of retraining one (``settings.oracle`` must then be False); its
            recorded training time is the retraining time.

    Returns:
        The figures written to ``metrics.json``: ``methods``, ``model``, ``manifest``, ``n_forget``, ``n_retain``,
        ``retrain_seconds`` (the oracle's training time, else the original's recorded one; ``None`` when unknown),
        ``settings`` and ``models``: the figures of :func:`measure_model` for ``original``, each method (with
        ``seconds``, ``time_ratio``: forgetting / retraining, ``cpu_seconds``, ``cpu_time_ratio``: the same in CPU
        seconds of this process, against the oracle's retraining here, else ``None``, and ``saved``: the unlearned
        model's path) and, with the oracle, ``oracle`` (its ``cpu_seconds`` cover reading the retained scans too).

    Raises:
        ManifestError: the forget list is missing, empty, marks every training row or marks non-training rows; for
            a segmentation model, training or held-out rows without label maps.
        HarmonizeError: an unreadable model, a network of another task, an oracle of another task than the model,
            or nothing to audit (fewer than 2 held-out scans of the withdrawn subjects' sites).
        ConfigError: an unknown method, a method the model's task cannot run (``nl`` for segmentation), settings
            of the other task, or both ``settings.oracle`` and ``oracle_model``.
    """
    from harmonize.audit import plots
    from harmonize.audit.membership import membership_plot
    from harmonize.audit.report import write_report
    from harmonize.workflows.audit import input_files, prepare_output_dir

    settings = settings or ForgetSettings()
    if settings.oracle and oracle_model is not None:
        raise ConfigError("Give either oracle=True (retrain the oracle here) or oracle_model (one retrained before), "
                          "not both.")
    runs = [replace(settings, method=m) for m in dict.fromkeys(methods or (settings.method,))]
    frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    flags = forget_rows(frame)  # before any work: a bad list is refused at once
    inputs = input_files(manifest, model, oracle_model)
    for given in (model, oracle_model):
        if isinstance(given, (str, os.PathLike)) and Path(given).is_dir():
            inputs.append(Path(given) / "models" / "model.pt")
    out = prepare_output_dir(out_dir, overwrite, inputs=inputs, command="harmonize forget")
    original, loaded_from = _load(model, frame, settings.device)
    source = source or loaded_from
    segmentation = isinstance(original, SegmentationModel)
    _, held = membership_rows(frame, flags)
    if segmentation:
        _check_labels(frame, flags, held)
    for run in runs:  # a method or setting the model's task cannot take is refused before any work
        run.stages(original)
    if oracle_model is not None:
        given_oracle, oracle_source = _load(oracle_model, frame, settings.device)
        if isinstance(given_oracle, SegmentationModel) != segmentation:
            raise HarmonizeError(f"The oracle {oracle_source} is a {type(given_oracle.network).__name__}, the model "
                                 f"{source} a {type(original.network).__name__}: give an oracle of the same task.")
    names = [str(r.method) for r in runs]
    report(f"forgetting {int(flags.sum())} of {len(flags)} training subjects from {source} with {', '.join(names)}")
    models: dict[str, BrainAgeModel | SegmentationModel] = {ORIGINAL: original}
    seconds: dict[str, float | None] = {ORIGINAL: None}
    cpu: dict[str, float | None] = {ORIGINAL: None}
    saved: dict[str, str] = {}
    for run in runs:
        name = str(run.method)
        models[name], watch = unlearn_model(original, frame, flags, run)
        seconds[name], cpu[name] = watch.wall, watch.cpu
        saved[name] = str(_save(models[name], name, model, out))
        report(f"  {name}: forgot in {seconds[name]:.1f} s; model written to {saved[name]}")
    retrain = original.seconds if math.isfinite(original.seconds) else None
    retrain_cpu = None
    if settings.oracle:
        with Stopwatch() as watch:
            models[ORACLE] = _oracle(original, frame, flags, settings)
        retrain = seconds[ORACLE] = models[ORACLE].seconds
        retrain_cpu = cpu[ORACLE] = watch.cpu
        saved[ORACLE] = str(_save(models[ORACLE], ORACLE, model, out))
        report(f"  oracle: retrained in {retrain:.1f} s; model written to {saved[ORACLE]}")
    elif oracle_model is not None:
        models[ORACLE] = given_oracle
        seconds[ORACLE] = models[ORACLE].seconds if math.isfinite(models[ORACLE].seconds) else None
        cpu[ORACLE] = None
        retrain = seconds[ORACLE] or retrain
        report(f"  oracle: {oracle_source}, retrained in "
               f"{'an unknown time' if seconds[ORACLE] is None else format(seconds[ORACLE], '.1f') + ' s'}")
    figures: dict[str, dict[str, Any]] = {}
    losses = {}
    for name, each in models.items():
        figures[name], losses[name] = measure_model(each, frame, flags, settings)
        m = figures[name]
        m["seconds"], m["cpu_seconds"] = seconds[name], cpu[name]
        if name in saved:
            m["saved"] = saved[name]
        if name not in (ORIGINAL, ORACLE):
            m["time_ratio"] = seconds[name] / retrain if retrain else None
            m["cpu_time_ratio"] = cpu[name] / retrain_cpu if retrain_cpu else None
        ci = m["mia_auc_ci"]
        report(f"  {name}: membership AUC {m['mia_auc']:.3f}"
               f"{'' if ci is None else f' [{ci[0]:.3f}, {ci[1]:.3f}]'}, {_figures_line(m)}, "
               f"site probe {m['site_probe_bacc']:.3f} (chance {m['chance']:.3f})")
    metrics = {
        "methods": names, "model": source, "manifest": str(frame.attrs.get(MANIFEST_ATTR, "a frame")),
        "n_forget": int(flags.sum()), "n_retain": int((~flags).sum()), "retrain_seconds": retrain,
        "settings": {k: (str(v) if k == "method" else v) for k, v in asdict(settings).items()},
        "models": figures,
    }
    columns, notes = (SEGMENTATION_FORGET_COLUMNS, SEGMENTATION_NOTES) if segmentation else (FORGET_COLUMNS, NOTES)
    rows = metrics_table(figures, columns=columns)
    chance = next((r["chance"] for r in rows if r.get("chance") is not None), None)
    pngs = {
        "Membership inference (withdrawn vs held-out subjects of the same sites)": membership_plot(
            figures, losses, out / FIGURES_DIR / "membership.png",
            loss_label=SEGMENTATION_LOSS_LABEL if segmentation else BRAIN_AGE_LOSS_LABEL),
    }
    if not segmentation:
        pngs["Site probe and held-out age error"] = plots.comparison_bar_plot(
            figures, out / FIGURES_DIR / "comparison.png", chance=chance)
    write_json_atomic(out / METRICS_FILE, metrics, indent=2, default=str)
    times = "; ".join(f"{n} {_time_line(seconds[n], retrain if n != ORACLE else None)}" for n in names)
    summary = (f"{source}: {metrics['n_forget']} of {len(flags)} training subjects withdrawn. Time of forgetting: "
               f"{times}.")
    title = f"harmonize forget: {', '.join(names)}"
    write_text_atomic(out / REPORT_MD, f"# {title}\n\n{summary}\n\n{_markdown(rows, chance, columns)}")
    html = write_report(out, figures, chance, plots=pngs, title=title, notes=[summary, *notes], columns=columns)
    report(f"  metrics in {out / METRICS_FILE}, report in {html}")
    return metrics
