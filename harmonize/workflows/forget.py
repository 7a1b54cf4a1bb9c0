"""Make a trained brain-age model forget withdrawn subjects, and check that it did (``harmonize forget``).

:func:`forget_model` takes a trained model (a model file of ``harmonize compare`` / :func:`save_model`, or a MONAI
bundle folder with ``models/model.pt``) and a manifest whose ``forget`` column marks the withdrawn subjects'
training rows (:func:`~harmonize.data.forget_list.forget_rows`). It runs one machine-unlearning method by name
through the same stages as reconstruction unlearning (:func:`~harmonize.workflows.machine_unlearning.run_unlearning`:
a ``SupervisedTrainer`` with a :class:`~harmonize.handlers.MachineUnlearningHandler` per stage) on a copy of the
network, with the age loss (:class:`~harmonize.losses.StandardisedMSELoss`):

- FT fine-tunes on the retained subjects (the withdrawn never reach a forward pass); GA / GA-L1 ascend the loss
  of the withdrawn subjects, NL trains on them with noisy ages;
- the BatchNorm statistics are then recomputed on the retained subjects only
  (:func:`~harmonize.networks.recalibrate_batchnorm`), so they hold no average over a withdrawn scan.

It measures the original, the unlearned model and, with ``oracle=True``, one retrained on the retained subjects:

- the age error on the retained training scans, on the withdrawn scans and on the held-out (val/test) scans;
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
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harmonize import defaults
from harmonize.audit.membership import membership_inference
from harmonize.audit.report import Column, format_value, metrics_table
from harmonize.data.dataset import make_dataloader, make_dataset
from harmonize.data.forget_list import forget_rows
from harmonize.data.manifest import MANIFEST_ATTR, read_manifest
from harmonize.errors import ConfigError, HarmonizeError, integer_problem, number_problem, option_value
from harmonize.io import write_json_atomic, write_text_atomic
from harmonize.keys import Keys, ReconMethod, Split
from harmonize.losses import StandardisedMSELoss
from harmonize.networks import recalibrate_batchnorm
from harmonize.output_dir import releases_output_dirs
from harmonize.workflows.brain_age import (
    BrainAgeModel,
    brain_age_features,
    train_brain_age,
)
from harmonize.workflows.machine_unlearning import (
    MachineUnlearningSettings,
    Stopwatch,
    run_unlearning,
)

__all__ = [
    "FORGET_COLUMNS",
    "FORGET_METHODS",
    "ForgetSettings",
    "ForgetTargetd",
    "forget_model",
    "measure_model",
    "unlearn_brain_age",
]

logger = logging.getLogger(__name__)

#: The methods ``harmonize forget`` runs (the single stages and the two-stage methods of reconstruction).
FORGET_METHODS: tuple[ReconMethod, ...] = (
    ReconMethod.FT, ReconMethod.GA, ReconMethod.GA_L1, ReconMethod.GA_L1_FT, ReconMethod.NL, ReconMethod.NL_FT,
)
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


@dataclass
class ForgetSettings:
    """How a brain-age model forgets (defaults: :mod:`harmonize.defaults`, measured in docs/forgetting.md).

    Attributes:
        method: ``ft``, ``ga``, ``ga_l1``, ``ga_l1_ft``, ``nl`` or ``nl_ft`` (:data:`FORGET_METHODS`).
        ft_epochs: epochs of the FT stage over the retained training subjects.
        forget_epochs: epochs of the GA / GA-L1 / NL stage over the withdrawn subjects.
        learning_rate: Adam learning rate of the FT and NL stages.
        ga_learning_rate: Adam learning rate of the GA stages.
        l1_penalty: GA-L1's weight penalty.
        noise_std: NL's noise, in units of the network's age scale (standard deviations of the training ages).
        loss_ceiling: per-subject ceiling of the withdrawn subjects' loss under GA / GA-L1, in squared age standard
            deviations (0.1: an error of 0.32 standard deviations of the training ages): a subject whose loss
            reached it no longer pushes the ascent (``None``: no ceiling).
        batch_size: scans per batch (``None``: the model's training batch size).
        oracle: also retrain from scratch without the withdrawn subjects (the reference; slow).
        bootstrap: bootstrap replicates of the membership-inference interval.
        permutations: label permutations of the site probe's p-value (0: none).
        seed: seed of the batch order, the noise, the oracle and the bootstrap.
        device: where to run (``None``: the model's device).
    """

    method: ReconMethod | str = defaults.FORGET_METHOD
    ft_epochs: int = defaults.FORGET_FT_EPOCHS
    forget_epochs: int = defaults.FORGET_FORGET_EPOCHS
    learning_rate: float = defaults.FORGET_LEARNING_RATE
    ga_learning_rate: float = defaults.FORGET_GA_LEARNING_RATE
    l1_penalty: float = defaults.RECON_L1_PENALTY
    noise_std: float = 1.0
    loss_ceiling: float | None = defaults.FORGET_LOSS_CEILING
    batch_size: int | None = None
    oracle: bool = False
    bootstrap: int = defaults.MIA_BOOTSTRAP
    permutations: int = 0
    seed: int = defaults.SEED
    device: str | None = None

    def __post_init__(self) -> None:
        method, problem = option_value("method", self.method, ReconMethod)
        if method is not None and ReconMethod(method) not in FORGET_METHODS:
            problem = (f"Argument 'method': '{method}' is not a forgetting method; choose one of "
                       f"{[str(m) for m in FORGET_METHODS]} (the oracle is asked for with oracle=True / --oracle).")
        self.method = ReconMethod(method) if method is not None else self.method
        problems = [problem] + [integer_problem(n, getattr(self, n)) for n in ("ft_epochs", "forget_epochs")]
        problems += [number_problem(n, getattr(self, n)) for n in ("learning_rate", "ga_learning_rate", "noise_std")]
        problems.append(number_problem("loss_ceiling", self.loss_ceiling, optional=True))
        if self.batch_size is not None and (problem := integer_problem("batch_size", self.batch_size)):
            problems.append(f"{problem}; or None (the training batch size)")
        problems += [integer_problem(n, getattr(self, n), minimum=0) for n in ("bootstrap", "permutations")]
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError("Invalid ForgetSettings.", problems=problems)

    def stages(self, model: BrainAgeModel) -> MachineUnlearningSettings:
        """The settings of :func:`~harmonize.workflows.machine_unlearning.run_unlearning` for ``model``."""
        scale = float(getattr(model.network, "age_scale", 1.0))
        return MachineUnlearningSettings(
            loss_function=StandardisedMSELoss(scale),
            learning_rate=self.learning_rate,
            ga_learning_rate=self.ga_learning_rate,
            ft_epochs=self.ft_epochs,
            ga_epochs=self.forget_epochs,
            nl_epochs=self.forget_epochs,
            l1_penalty=self.l1_penalty,
            noise_std=self.noise_std * scale,
            loss_ceiling=self.loss_ceiling,
            input_keys=(Keys.IMAGE,),
            target_key=Keys.TARGET,
            forget_key=Keys.FORGET,
            id_key=Keys.SUBJECT_ID,
            device=str(model.settings.device),
            seed=self.seed,
        )


class ForgetTargetd:
    """Dictionary transform: the age as a one-element ``target`` and the subject's ``forget`` flag.

    Args:
        forget_ids: the withdrawn subjects' ids.
        before: a transform applied first (the model's preprocessing), or ``None``.
    """

    def __init__(self, forget_ids: set[str], before: Callable[[Mapping[Hashable, Any]], Any] | None = None) -> None:
        self.forget_ids = frozenset(map(str, forget_ids))
        self.before = before

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(self.before(data) if self.before is not None else data)
        out[Keys.TARGET.value] = torch.as_tensor(out[Keys.AGE.value], dtype=torch.float32).reshape(1)
        out[Keys.FORGET.value] = torch.tensor(str(out[Keys.SUBJECT_ID.value]) in self.forget_ids)
        return out


def _loader(model: BrainAgeModel, rows: pd.DataFrame, forget_ids: set[str], batch_size: int, shuffle: bool,
            seed: int) -> Any:
    dataset = make_dataset(rows, site_index=model.site_index, transform=ForgetTargetd(forget_ids, model.transform),
                           cache=True)
    return make_dataloader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed)


def unlearn_brain_age(
    model: BrainAgeModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings,
    stopwatch: Stopwatch | None = None,
) -> tuple[BrainAgeModel, float]:
    """The unlearned copy of ``model`` and the seconds it took (stages and BatchNorm recalibration).

    Args:
        model: the trained model (not changed).
        frame: the manifest frame.
        flags: :func:`~harmonize.data.forget_list.forget_rows` of ``frame``.
        settings: the method and its schedule.
        stopwatch: also adds the same work's wall and CPU seconds to this
            :class:`~harmonize.workflows.machine_unlearning.Stopwatch` (reading the scans is not timed).
    """
    train = frame.loc[flags.index]
    forget_ids = set(train.loc[flags, Keys.SUBJECT_ID].astype(str))
    batch_size = settings.batch_size or model.settings.batch_size
    retain_rows, forget_rows_ = train.loc[~flags], train.loc[flags]
    retain = _loader(model, retain_rows, forget_ids, batch_size, True, settings.seed)
    forget = _loader(model, forget_rows_, forget_ids, min(batch_size, len(forget_rows_)), True, settings.seed + 1)
    recalibration = _loader(model, retain_rows, forget_ids, batch_size, False, settings.seed)
    stages = settings.stages(model)
    timed = Stopwatch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        with timed:
            network, _ = run_unlearning(settings.method, model.network, retain, forget, stages)
            recalibrate_batchnorm(network, recalibration, stages.device)
    seconds = timed.wall
    if stopwatch is not None:
        stopwatch.add(timed)
    network.eval()
    bad = [n for n, p in network.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise HarmonizeError(
            f"Forgetting with {settings.method} diverged: parameters {bad[:5]} hold NaN or Inf. Lower the learning "
            "rate of the forget stage (--ga-lr) or give a loss ceiling (--loss-ceiling)."
        )
    unlearned = replace(model, network=network, seconds=seconds, history=list(model.history))
    logger.info("%s: forgot %d subject(s) in %.1f s", settings.method, len(forget_ids), seconds)
    return unlearned, seconds


def _errors(model: BrainAgeModel, rows: pd.DataFrame) -> np.ndarray:
    """Absolute age error (years) of each of ``rows``' scans, in their order."""
    fs = brain_age_features(model, rows, splits=tuple(rows[Keys.SPLIT].unique()))
    order = {str(s): i for i, s in enumerate(fs.meta[Keys.SUBJECT_ID])}
    pred = fs.predictions.reshape(-1)
    error = np.abs(pred - fs.meta[Keys.AGE].astype(float))
    return np.array([error[order[str(s)]] for s in rows[Keys.SUBJECT_ID]])


def measure_model(
    model: BrainAgeModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The figures of one model: age errors, site probe and membership inference (see the module docstring).

    Returns:
        ``(metrics, losses)``: ``metrics`` holds ``retain_mae``, ``forget_mae``, ``age_mae`` (held-out),
        ``site_probe_bacc``, ``chance`` and the rest of :func:`~harmonize.workflows.audit.audit_held_out`'s figures,
        and the ``mia_*`` figures of :class:`~harmonize.audit.membership.MembershipResult`; ``losses`` the members'
        and non-members' errors (``member``, ``nonmember``).

    Raises:
        HarmonizeError: no held-out scan of the withdrawn subjects' sites.
    """
    from harmonize.workflows.audit import audit_held_out

    train = frame.loc[flags.index]
    forgotten = train.loc[flags]
    sites = set(forgotten[Keys.SITE].astype(str))
    held = frame[frame[Keys.SPLIT].isin([str(Split.VAL), str(Split.TEST)]) & frame[Keys.SITE].astype(str).isin(sites)]
    if len(held) < 2:
        raise HarmonizeError(
            f"The manifest has {len(held)} held-out (val/test) scan(s) of the withdrawn subjects' sites "
            f"{sorted(sites)}: "
            "the membership-inference audit compares the withdrawn subjects with at least 2 held-out subjects of "
            "the same sites. Add val/test rows of those sites."
        )
    metrics, _ = audit_held_out(model, frame, permutations=settings.permutations, seed=settings.seed)
    member, nonmember = _errors(model, forgotten), _errors(model, held)
    metrics["retain_mae"] = float(np.mean(_errors(model, train.loc[~flags])))
    metrics["forget_mae"] = float(np.mean(member))
    result = membership_inference(member, nonmember, bootstrap=settings.bootstrap, seed=settings.seed)
    metrics.update(result.to_dict())
    return metrics, {"member": member, "nonmember": nonmember}


def _load(
    model: BrainAgeModel | str | os.PathLike, frame: pd.DataFrame, device: str | None
) -> tuple[BrainAgeModel, str]:
    from harmonize.keys import Task
    from harmonize.workflows.audit import _loaded, audit_task

    loaded, source = _loaded(model, frame, device)
    if audit_task(loaded.network) != Task.BRAIN_AGE or not isinstance(loaded, BrainAgeModel):
        raise HarmonizeError(
            f"{source}: harmonize forget forgets subjects of brain-age models (BrainAgeRegressor) so far; this is a "
            f"{type(loaded.network).__name__}. Segmentation models are not supported yet."
        )
    if device is not None:
        loaded.settings.device = device
        loaded.network.to(device)
    return loaded, source


def _save(model: BrainAgeModel, name: str, source: Any, out: Path) -> Path:
    """Write ``model`` as its source was: a model file, or a bundle folder with the source's configs."""
    from harmonize.workflows.model_file import BUNDLE_WEIGHTS, save_model

    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = out / f"bundle_{name}"
        shutil.copytree(Path(source) / "configs", folder / "configs")
        for extra in ("site_index.json", "preprocessing.json"):
            if (Path(source) / "models" / extra).is_file():
                (folder / "models").mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(source) / "models" / extra, folder / "models" / extra)
        model.site_index.save(folder / "models" / "site_index.json")
        from harmonize.io import atomic_write

        state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
        atomic_write(folder / BUNDLE_WEIGHTS, lambda tmp: torch.save(state, tmp))
        return folder
    return save_model(model, out / MODELS_DIR / f"{name}.pt")


def _oracle(model: BrainAgeModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings) -> BrainAgeModel:
    """The original's training run, from scratch, on every row but the withdrawn ones.

    :func:`~harmonize.workflows.brain_age.train_brain_age` reads the scans as the manifest gives them: a bundle's
    ``transforms`` (e.g. intensity normalisation) is not applied to the oracle, which is trained and measured
    without it.
    """
    withdrawn = flags.index[flags]
    kept = frame.drop(index=withdrawn)
    kept.attrs.update(frame.attrs)
    trained = copy.deepcopy(model.settings)
    trained.seed = settings.seed
    trained.device = str(model.settings.device)
    logger.info("oracle: retraining from scratch on %d of %d training scans (%d epochs)",
                int((~flags).sum()), len(flags), trained.max_epochs)
    return train_brain_age(kept, trained, site_index=model.site_index)


def _markdown(rows: list[dict[str, Any]], chance: float | None) -> str:
    header = "| Model | " + " | ".join(c.header for c in FORGET_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(FORGET_COLUMNS) + 1)]
    for row in rows:
        cells = []
        for column in FORGET_COLUMNS:
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
def forget_model(
    model: BrainAgeModel | str | os.PathLike,
    manifest: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    settings: ForgetSettings | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] = logger.info,
    methods: Sequence[ReconMethod | str] | None = None,
    source: str | None = None,
    oracle_model: BrainAgeModel | str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Forget a manifest's withdrawn subjects from a trained brain-age model; write the model(s) and the report.

    Args:
        model: a model in memory, a model file (:func:`~harmonize.workflows.model_file.save_model`) or a MONAI
            bundle folder (:func:`~harmonize.workflows.model_file.load_bundle_model`); only read.
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
        ManifestError: the forget list is missing, empty, marks every training row or marks non-training rows.
        HarmonizeError: an unreadable model, a model that is not a brain-age network, or nothing to audit.
        ConfigError: an unknown method, or both ``settings.oracle`` and ``oracle_model``.
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
    names = [str(r.method) for r in runs]
    report(f"forgetting {int(flags.sum())} of {len(flags)} training subjects from {source} with {', '.join(names)}")
    models: dict[str, BrainAgeModel] = {ORIGINAL: original}
    seconds: dict[str, float | None] = {ORIGINAL: None}
    cpu: dict[str, float | None] = {ORIGINAL: None}
    saved: dict[str, str] = {}
    for run in runs:
        name = str(run.method)
        watch = Stopwatch()
        models[name], seconds[name] = unlearn_brain_age(original, frame, flags, run, stopwatch=watch)
        cpu[name] = watch.cpu
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
        models[ORACLE], oracle_source = _load(oracle_model, frame, settings.device)
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
               f"{'' if ci is None else f' [{ci[0]:.3f}, {ci[1]:.3f}]'}, held-out MAE {m['age_mae']:.2f} y, "
               f"retained MAE {m['retain_mae']:.2f} y, withdrawn MAE {m['forget_mae']:.2f} y, "
               f"site probe {m['site_probe_bacc']:.3f} (chance {m['chance']:.3f})")
    metrics = {
        "methods": names, "model": source, "manifest": str(frame.attrs.get(MANIFEST_ATTR, "a frame")),
        "n_forget": int(flags.sum()), "n_retain": int((~flags).sum()), "retrain_seconds": retrain,
        "settings": {k: (str(v) if k == "method" else v) for k, v in asdict(settings).items()},
        "models": figures,
    }
    rows = metrics_table(figures, columns=FORGET_COLUMNS)
    chance = next((r["chance"] for r in rows if r.get("chance") is not None), None)
    pngs = {
        "Membership inference (withdrawn vs held-out subjects of the same sites)": membership_plot(
            figures, losses, out / FIGURES_DIR / "membership.png"),
        "Site probe and held-out age error": plots.comparison_bar_plot(
            figures, out / FIGURES_DIR / "comparison.png", chance=chance),
    }
    write_json_atomic(out / METRICS_FILE, metrics, indent=2, default=str)
    times = "; ".join(f"{n} {_time_line(seconds[n], retrain if n != ORACLE else None)}" for n in names)
    summary = (f"{source}: {metrics['n_forget']} of {len(flags)} training subjects withdrawn. Time of forgetting: "
               f"{times}.")
    title = f"harmonize forget: {', '.join(names)}"
    write_text_atomic(out / REPORT_MD, f"# {title}\n\n{summary}\n\n{_markdown(rows, chance)}")
    html = write_report(out, figures, chance, plots=pngs, title=title, notes=[summary, *NOTES],
                        columns=FORGET_COLUMNS)
    report(f"  metrics in {out / METRICS_FILE}, report in {html}")
    return metrics
