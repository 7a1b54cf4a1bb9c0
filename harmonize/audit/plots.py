"""Figures of the audit: feature embeddings, per-site age error or Dice, training curves and a method comparison.

Every figure is a :class:`matplotlib.figure.Figure` drawn without ``pyplot``, so no window ever opens, no global
backend is switched and nothing leaks between calls; PNGs are rendered by matplotlib's Agg canvas and written
atomically. Figures have a fixed size (``inches x DPI``), so their pixel size is known in advance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harmonize.audit.features import FeatureSet
from harmonize.errors import ConfigError, number_problem
from harmonize.io import atomic_write
from harmonize.keys import Keys, StateKeys

__all__ = [
    "DPI",
    "PANEL_SIZE",
    "comparison_bar_plot",
    "embedding_grid",
    "embedding_plot",
    "grouped_bar_plot",
    "interval_errors",
    "per_site_error_plot",
    "training_curves_plot",
]

#: Resolution of the PNGs (dots per inch).
DPI = 100
#: Width and height (inches) of one panel; a figure of ``r`` rows and ``c`` columns is ``c*w x r*h``.
PANEL_SIZE = (4.0, 3.4)
#: Most points a t-SNE embedding is computed on (a random subset above it), so that it takes seconds.
TSNE_MAX_POINTS = 200
#: Largest t-SNE perplexity; smaller sets use ``(n - 1) / 3`` (sklearn needs perplexity < n).
TSNE_MAX_PERPLEXITY = 30.0
TSNE_MIN_PERPLEXITY = 1.0
#: Fewest points an embedding is drawn for.
MIN_POINTS = 3
#: Colour maps of categories (sites) and of continuous values (age), and the colours of methods.
CATEGORY_CMAP = "tab10"
CONTINUOUS_CMAP = "viridis"
METHOD_CMAP = "tab10"
#: Site index of a site unseen in training (drawn in grey).
UNSEEN_SITE = -1
UNSEEN_COLOUR = "0.55"
#: Marker size of scatter plots.
MARKER_SIZE = 14
#: Group label of the scans of sites unseen in training in the per-site error plot.
UNSEEN_LABEL = "unseen sites"


def _figure(rows: int, cols: int) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(cols * PANEL_SIZE[0], rows * PANEL_SIZE[1]), dpi=DPI, layout="constrained")


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Render ``fig`` to a PNG at ``path`` atomically (:func:`harmonize.io.atomic_write`)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _method_colours(methods: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps[METHOD_CMAP]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _is_categorical(values: np.ndarray) -> bool:
    return values.dtype.kind in "iubUSO"


def _category_key(value: Any) -> tuple:
    """Sort categories numerically (strings after numbers, by name) with the unseen site last."""
    if isinstance(value, str):
        return (False, 1, 0.0, value)
    return (value == UNSEEN_SITE, 0, float(value), "")


def _embed(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str, str]:
    """2-D embedding of standardised features, with the axis labels."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    z = StandardScaler().fit_transform(x)
    if method == "pca":
        k = min(2, z.shape[0], z.shape[1])
        pca = PCA(n_components=k, random_state=seed)
        y = pca.fit_transform(z)
        ratio = list(pca.explained_variance_ratio_) + [0.0] * (2 - k)
        if k < 2:
            y = np.concatenate([y, np.zeros((len(y), 2 - k))], axis=1)
        return y, f"PC1 ({100 * ratio[0]:.0f}%)", f"PC2 ({100 * ratio[1]:.0f}%)"
    perplexity = float(np.clip((len(z) - 1) / 3.0, TSNE_MIN_PERPLEXITY, TSNE_MAX_PERPLEXITY))
    # One OpenMP thread for the duration of the call: on a few hundred points threads only add overhead, and on a
    # busy machine they oversubscribe the cores (the timings: docs/audit.md, "Speed choices").
    with threadpool_limits(limits=1, user_api="openmp"):
        y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    return y, "t-SNE 1", "t-SNE 2"


def embedding_plot(
    features: np.ndarray,
    colour_by: np.ndarray,
    title: str,
    method: str = "pca",
    ax: Any = None,
    categorical: bool | None = None,
    colour_label: str | None = None,
    category_names: Mapping[Any, str] | None = None,
    seed: int = 0,
) -> Any:
    """Scatter a 2-D PCA or t-SNE embedding of (standardised) features, coloured by a variable.

    Categories (e.g. site indices) get distinct colours and a legend (site ``-1``, unseen in training, is grey);
    continuous values (e.g. age) get a colour map and a colour bar. t-SNE runs on at most ``TSNE_MAX_POINTS``
    randomly chosen points, with its perplexity adapted to their number.

    Args:
        features: ``(n, d)`` features.
        colour_by: ``(n,)`` values to colour by.
        title: the panel's title.
        method: ``"pca"`` or ``"tsne"``.
        ax: axes to draw in (default: a new figure's); the figure is ``ax.figure``.
        categorical: colour by category (default: integer, boolean and string values are categories).
        colour_label: legend or colour-bar title.
        category_names: display names of categories (e.g. ``{0: "scanner A"}``).
        seed: seed of the t-SNE subset and embedding.

    Returns:
        The axes drawn in.

    Raises:
        ConfigError: bad shapes, non-finite features, fewer than ``MIN_POINTS`` points, or an unknown method.
    """
    if method not in ("pca", "tsne"):
        raise ConfigError(f"embedding_plot: method must be 'pca' or 'tsne', got {method!r}.")
    x = np.asarray(features, dtype=float)
    c = np.asarray(colour_by)
    if x.ndim != 2 or c.shape != (x.shape[0],):
        raise ConfigError(f"embedding_plot: features must be (n, d) and colour_by (n,), got {x.shape} and {c.shape}.")
    if not np.isfinite(x).all():
        raise ConfigError("embedding_plot: features hold NaN or Inf.")
    if len(x) < MIN_POINTS:
        raise ConfigError(f"embedding_plot: needs at least {MIN_POINTS} points, got {len(x)}.")
    categorical = _is_categorical(c) if categorical is None else categorical
    if method == "tsne" and len(x) > TSNE_MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), TSNE_MAX_POINTS, replace=False))
        x, c = x[keep], c[keep]
    y, xlabel, ylabel = _embed(x, method, seed)
    if ax is None:
        ax = _figure(1, 1).add_subplot()
    if categorical:
        from matplotlib import colormaps

        cmap = colormaps[CATEGORY_CMAP]
        names = dict(category_names or {})
        categories = sorted(set(c.tolist()), key=_category_key)
        for i, value in enumerate(categories):
            inside = c == value
            unseen = value == UNSEEN_SITE
            ax.scatter(
                y[inside, 0],
                y[inside, 1],
                s=MARKER_SIZE,
                color=UNSEEN_COLOUR if unseen else cmap(i % cmap.N),
                marker="x" if unseen else "o",
                label=names.get(value, "unseen" if unseen else str(value)),
                alpha=0.85,
            )
        ax.legend(title=colour_label, fontsize="x-small", title_fontsize="x-small", markerscale=0.8, loc="best")
    else:
        values = c.astype(float)
        points = ax.scatter(y[:, 0], y[:, 1], s=MARKER_SIZE, c=values, cmap=CONTINUOUS_CMAP, alpha=0.9)
        bar = ax.figure.colorbar(points, ax=ax, fraction=0.05, pad=0.02)
        if colour_label:
            bar.set_label(colour_label, fontsize="small")
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel, fontsize="small")
    ax.set_ylabel(ylabel, fontsize="small")
    ax.tick_params(labelsize="x-small")
    return ax


def embedding_grid(
    feature_sets: Mapping[str, FeatureSet],
    path: str | os.PathLike,
    site_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Path:
    """One row per method: PCA coloured by site, PCA coloured by age, t-SNE coloured by site.

    Args:
        feature_sets: features of held-out scans by method; metadata ``site`` is required, ``age`` optional.
        path: the PNG to write.
        site_names: names of the site indices, for the legends.
        seed: seed of the t-SNE embeddings.

    Returns:
        ``path``.
    """
    if not feature_sets:
        raise ConfigError("embedding_grid: no feature sets given.")
    missing = [m for m, fs in feature_sets.items() if Keys.SITE not in fs.meta]
    if missing:
        raise ConfigError(f"embedding_grid: feature sets of {missing} have no '{Keys.SITE}' metadata.")
    names = dict(enumerate(site_names)) if site_names is not None else None
    fig = _figure(len(feature_sets), 3)
    axes = fig.subplots(len(feature_sets), 3, squeeze=False)
    for row, (method, fs) in zip(axes, feature_sets.items()):
        site = np.asarray(fs.meta[Keys.SITE])
        embedding_plot(fs.features, site, f"{method}: PCA by site", "pca", row[0], True, "site", names, seed)
        if Keys.AGE in fs.meta:
            age = np.asarray(fs.meta[Keys.AGE], float)
            embedding_plot(fs.features, age, f"{method}: PCA by age", "pca", row[1], False, "age", seed=seed)
        else:
            row[1].set_axis_off()
            row[1].text(0.5, 0.5, f"{method}: no age metadata", ha="center", va="center")
        embedding_plot(fs.features, site, f"{method}: t-SNE by site", "tsne", row[2], True, "site", names, seed)
    return _save(fig, path)


def _bar_labels(ax: Any, bars: Any, fmt: str) -> None:
    ax.bar_label(bars, labels=[format(b.get_height(), fmt) for b in bars], fontsize="x-small", padding=2)


def per_site_error_plot(metrics: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Grouped bars of the age MAE per site (one bar per method), plus scans of unseen sites when measured.

    Args:
        metrics: metrics dictionaries by method, with ``age_mae_per_site`` (``{site: mae}``) and optionally
            ``age_mae_unseen_sites`` and ``age_mae``.
        path: the PNG to write.

    Returns:
        ``path``.

    Raises:
        ConfigError: no method has per-site errors.
    """
    methods = [m for m, v in metrics.items() if v.get("age_mae_per_site")]
    if not methods:
        raise ConfigError("per_site_error_plot: no method has 'age_mae_per_site' to plot.")
    groups: list[str] = []
    for m in methods:
        for site in metrics[m]["age_mae_per_site"]:
            if str(site) not in groups:
                groups.append(str(site))
    if any(metrics[m].get("age_mae_unseen_sites") is not None for m in methods):
        groups.append(UNSEEN_LABEL)
    colours = _method_colours(list(metrics))
    fig = _figure(1, max(2, math.ceil(len(groups) * len(methods) / 6)))
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        per_site = {str(k): v for k, v in metrics[m]["age_mae_per_site"].items()}
        per_site[UNSEEN_LABEL] = metrics[m].get("age_mae_unseen_sites")
        xs = [g for g, group in enumerate(groups) if per_site.get(group) is not None]
        heights = [float(per_site[groups[g]]) for g in xs]
        overall = metrics[m].get("age_mae")
        label = m if overall is None else f"{m} (all: {float(overall):.2f})"
        offset = (i - (len(methods) - 1) / 2) * width
        bars = ax.bar(np.asarray(xs) + offset, heights, width, label=label, color=colours[m])
        _bar_labels(ax, bars, ".1f")
    ax.set_xticks(range(len(groups)), groups, fontsize="small")
    ax.set_xlabel("site")
    ax.set_ylabel("age MAE (years)")
    ax.set_title("Age error per site (held-out scans)")
    ax.margins(y=0.15)
    # below the axes, so that it never hides a bar
    ax.legend(
        fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(methods), 4), frameon=False
    )
    return _save(fig, path)


def grouped_bar_plot(
    values: Mapping[str, Mapping[str, float | None]],
    path: str | os.PathLike,
    ylabel: str,
    title: str,
    xlabel: str = "site",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Grouped bars: one group per outer key (e.g. a site), one bar per inner key (e.g. a tissue's Dice).

    Args:
        values: ``{group: {series: value}}``; a ``None`` or non-finite value leaves its bar out.
        path: the PNG to write.
        ylabel: the y axis's label.
        title: the figure's title.
        xlabel: the x axis's label.
        ylim: limits of the y axis (default: matplotlib's, with room for the bar labels).

    Returns:
        ``path``.

    Raises:
        ConfigError: no value to plot.
    """
    groups = [str(g) for g in values]
    series: list[str] = []
    for inner in values.values():
        series += [str(k) for k in inner if str(k) not in series]
    if not any(v is not None and np.isfinite(float(v)) for inner in values.values() for v in inner.values()):
        raise ConfigError(f"grouped_bar_plot: no value to plot in {title!r}.")
    colours = _method_colours(series)
    fig = _figure(1, max(2, math.ceil(len(groups) * len(series) / 6)))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        points = [(g, float(inner[name])) for g, inner in enumerate(values.values())
                  if inner.get(name) is not None and np.isfinite(float(inner[name]))]
        if not points:
            continue
        xs, heights = zip(*points)
        offset = (i - (len(series) - 1) / 2) * width
        bars = ax.bar(np.asarray(xs) + offset, heights, width, label=name, color=colours[name])
        _bar_labels(ax, bars, ".2f")
    ax.set_xticks(range(len(groups)), groups, fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(ylim[0], ylim[1] + 0.1 * (ylim[1] - ylim[0]))  # room for the bar labels
    else:
        ax.margins(y=0.15)
    ax.legend(
        fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(series), 6), frameon=False
    )
    return _save(fig, path)


def training_curves_plot(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | os.PathLike,
    chance: float | None = None,
    confound: str = Keys.SITE,
) -> Path:
    """Domain-head accuracy and confusion loss over epochs, one line per method.

    The chance accuracy (``1 / N`` sites) is a dashed line on the accuracy panel; on the confusion-loss panel the
    dashed line is its minimum, ``log N``, reached when the head is at chance (for a mean-reduced loss).

    Args:
        histories: per-epoch dictionaries by method (``epoch``, ``domain_acc_<confound>``,
            ``confusion_loss_<confound>``); methods with an empty history (no domain head) are listed, not drawn.
        path: the PNG to write.
        chance: chance accuracy of the domain head, ``1 / N``.
        confound: which confound's head to plot.

    Returns:
        ``path``.

    Raises:
        ConfigError: no history holds the domain accuracy or confusion loss of ``confound``.
    """
    acc_key = f"{StateKeys.DOMAIN_ACC}_{confound}"
    loss_key = f"{StateKeys.CONFUSION_LOSS}_{confound}"
    drawn = [m for m, h in histories.items() if any(acc_key in e or loss_key in e for e in h)]
    if not drawn:
        raise ConfigError(f"training_curves_plot: no history has '{acc_key}' or '{loss_key}' to plot.")
    if problem := number_problem("chance", chance, maximum=1, strict_maximum=True, optional=True):
        raise ConfigError("training_curves_plot: invalid argument.", problems=[problem])
    colours = _method_colours(list(histories))
    fig = _figure(1, 2)
    acc_ax, loss_ax = fig.subplots(1, 2)
    for m in drawn:
        epochs = np.array([float(e.get("epoch", i + 1)) for i, e in enumerate(histories[m])])
        for ax, key in ((acc_ax, acc_key), (loss_ax, loss_key)):
            values = np.array([float(e.get(key, np.nan)) for e in histories[m]])
            if np.isfinite(values).any():
                ax.plot(epochs, values, marker="o", markersize=3, color=colours[m], label=m)
    if chance is not None:
        acc_ax.axhline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
        minimum = math.log(1 / chance)
        loss_ax.axhline(minimum, color="0.3", linestyle="--", linewidth=1, label=f"log N ({minimum:.2f})")
    acc_ax.set_title(f"Domain-head accuracy ({confound})")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1.02)
    loss_ax.set_title(f"Confusion loss ({confound})")
    loss_ax.set_ylabel("loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    skipped = [m for m in histories if m not in drawn]
    if skipped:
        fig.suptitle(f"no domain head: {', '.join(skipped)}", fontsize="small", color="0.35")
    return _save(fig, path)


def interval_errors(values: Sequence[float], intervals: Sequence[Any]) -> np.ndarray | None:
    """Matplotlib's ``yerr`` (2 x n: below, above) of bars ``values`` with intervals ``[low, high]``.

    A bar without an interval (``None``) or without a value gets no error bar (zeros); ``None`` when no bar has one.
    """
    errors = np.zeros((2, len(values)))
    for i, (value, interval) in enumerate(zip(values, intervals)):
        if interval is None or value is None or not np.isfinite(value):
            continue
        low, high = (np.nan if v is None else float(v) for v in interval)
        if np.isfinite(low) and np.isfinite(high):
            errors[:, i] = (max(0.0, value - low), max(0.0, high - value))
    return errors if errors.any() else None


def comparison_bar_plot(
    metrics: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, chance: float | None = None
) -> Path:
    """Side by side per method: the site probe's balanced accuracy against chance, and the age MAE.

    Args:
        metrics: metrics dictionaries by method (``site_probe_bacc``, ``age_mae``, optionally ``chance`` and
            ``site_probe_floor``, drawn as a dotted line: what age and sex alone tell about the site); a figure's
            interval over seeds (``site_probe_bacc_ci``, ``age_mae_ci``: ``[low, high]``) is drawn as an error bar.
        path: the PNG to write.
        chance: chance level of the site probe (default: the first ``chance`` in ``metrics``).

    Returns:
        ``path``.

    Raises:
        ConfigError: no metrics given.
    """
    if not metrics:
        raise ConfigError("comparison_bar_plot: no metrics given.")
    methods = list(metrics)
    if chance is None:
        chance = next((float(v["chance"]) for v in metrics.values() if v.get("chance") is not None), None)
    colours = [_method_colours(methods)[m] for m in methods]
    fig = _figure(1, 2)
    probe_ax, mae_ax = fig.subplots(1, 2)
    for ax, key, title, ylabel in (
        (probe_ax, "site_probe_bacc", "Site probe (lower = less site information)", "balanced accuracy"),
        (mae_ax, "age_mae", "Age error (held-out scans)", "age MAE (years)"),
    ):
        values = [metrics[m].get(key) for m in methods]
        heights = [np.nan if v is None else float(v) for v in values]
        bars = ax.bar(range(len(methods)), np.nan_to_num(heights), color=colours)
        labels = ["n/a" if not np.isfinite(h) else format(h, ".2f") for h in heights]
        errors = interval_errors(heights, [metrics[m].get(f"{key}_ci") for m in methods])
        if errors is None:
            ax.bar_label(bars, labels=labels, fontsize="x-small", padding=2)
        else:  # the error bars rise above the bars: the values go inside them
            ax.errorbar(range(len(methods)), np.nan_to_num(heights), yerr=errors, fmt="none", ecolor="0.15",
                        elinewidth=1, capsize=4)
            ax.bar_label(bars, labels=labels, fontsize="x-small", label_type="center",
                         bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize="small")
        ax.set_title(title, fontsize="medium")
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
    if chance is not None:
        probe_ax.axhline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    floor = next((float(v["site_probe_floor"]) for v in metrics.values() if v.get("site_probe_floor") is not None),
                 None)
    if floor is not None:  # the methods of one comparison audit the same scans, so they share their floor
        probe_ax.axhline(floor, color="0.3", linestyle=":", linewidth=1, label=f"age & sex alone ({floor:.2f})")
    if chance is not None or floor is not None:
        probe_ax.legend(fontsize="x-small")
    probe_ax.set_ylim(0, 1.08)
    return _save(fig, path)
