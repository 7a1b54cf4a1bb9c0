"""The audit's figures: each writes a readable, NaN-free PNG of the expected pixel size, atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from harmonize.audit.features import FeatureSet
from harmonize.audit.plots import (
    DPI,
    PANEL_SIZE,
    TSNE_MAX_POINTS,
    comparison_bar_plot,
    embedding_grid,
    embedding_plot,
    grouped_bar_plot,
    interval_errors,
    per_site_error_plot,
    training_curves_plot,
)
from harmonize.errors import ConfigError

SITES = ("prisma", "discovery", "achieva")


def _feature_set(rng: np.random.Generator, site_shift: float, n: int = 48) -> FeatureSet:
    site = np.arange(n) % (len(SITES) + 1) - 1  # sites -1 (unseen), 0, 1, 2
    age = rng.uniform(20, 80, n)
    x = rng.normal(size=(n, 12)) + site_shift * site[:, None] + 0.03 * age[:, None]
    return FeatureSet(x.astype(np.float32), age[:, None], {"site": site, "age": age, "sex": rng.integers(0, 2, n)})


METRICS = {
    "none": {"age_mae": 5.4, "age_mae_per_site": dict(zip(SITES, (4.9, 5.3, 6.1))), "site_probe_bacc": 0.91,
             "chance": 1 / 3, "age_mae_unseen_sites": 8.2},
    "unlearning": {"age_mae": 5.1, "age_mae_per_site": dict(zip(SITES, (5.0, 5.1, 5.3))), "site_probe_bacc": 0.38,
                   "chance": 1 / 3, "age_mae_unseen_sites": 6.0},
    "combat": {"site_probe_bacc": 0.35, "chance": 1 / 3},
}


def _read(path: Path, rows: int, cols: int) -> np.ndarray:
    """Read a PNG back, check its size for ``rows x cols`` panels, that it is finite and not blank."""
    assert path.is_file() and path.stat().st_size > 1000
    image = mpimg.imread(path)
    assert image.shape == (round(rows * PANEL_SIZE[1] * DPI), round(cols * PANEL_SIZE[0] * DPI), 4)
    assert np.isfinite(image).all()
    assert image[..., :3].std() > 0.05  # something is drawn
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    return image


def test_embedding_plot_categorical_and_continuous(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fs = _feature_set(rng, 2.0)
    names = dict(enumerate(SITES))
    ax = embedding_plot(fs.features, fs.meta["site"], "by site", category_names=names, colour_label="site")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [*SITES, "unseen"]
    assert ax.get_title() == "by site" and ax.get_xlabel().startswith("PC1 (")
    ax.figure.savefig(tmp_path / "sites.png")
    _read(tmp_path / "sites.png", 1, 1)
    ax = embedding_plot(fs.features, fs.meta["age"], "by age", method="tsne", colour_label="age")
    assert len(ax.figure.axes) == 2  # the axes and the colour bar
    assert ax.figure.axes[1].get_ylabel() == "age"
    assert ax.get_xlabel() == "t-SNE 1"
    ax.figure.savefig(tmp_path / "age.png")
    _read(tmp_path / "age.png", 1, 1)


def test_embedding_plot_tsne_subsamples_and_small_sets() -> None:
    rng = np.random.default_rng(1)
    n = TSNE_MAX_POINTS + 40
    ax = embedding_plot(rng.normal(size=(n, 5)), np.arange(n) % 2, "many", method="tsne")
    assert sum(len(c.get_offsets()) for c in ax.collections) == TSNE_MAX_POINTS
    ax = embedding_plot(rng.normal(size=(5, 3)), np.array([0, 0, 1, 1, 1]), "five", method="tsne")
    assert sum(len(c.get_offsets()) for c in ax.collections) == 5
    ax = embedding_plot(rng.normal(size=(6, 1)), rng.uniform(size=6), "one feature", method="pca")
    assert np.isfinite(ax.collections[0].get_offsets()).all()


def test_embedding_plot_errors() -> None:
    x = np.random.default_rng(2).normal(size=(10, 3))
    with pytest.raises(ConfigError, match="method must be 'pca' or 'tsne', got 'umap'"):
        embedding_plot(x, np.zeros(10), "t", method="umap")
    with pytest.raises(ConfigError, match=r"got \(10, 3\) and \(9,\)"):
        embedding_plot(x, np.zeros(9), "t")
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN or Inf"):
        embedding_plot(bad, np.zeros(10), "t")
    with pytest.raises(ConfigError, match="at least 3 points, got 2"):
        embedding_plot(x[:2], np.zeros(2), "t")


def test_embedding_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sets = {"none": _feature_set(rng, 2.0), "unlearning": _feature_set(rng, 0.2)}
    path = embedding_grid(sets, tmp_path / "figs" / "grid.png", site_names=SITES)
    assert path == tmp_path / "figs" / "grid.png"
    _read(path, 2, 3)
    # writing again replaces the file
    first = path.read_bytes()
    embedding_grid({"none": sets["none"]}, path)
    assert path.read_bytes() != first
    _read(path, 1, 3)
    with pytest.raises(ConfigError, match="no feature sets"):
        embedding_grid({}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"feature sets of \['bare'\] have no 'site'"):
        embedding_grid({"bare": FeatureSet(np.zeros((4, 2)), None, {})}, tmp_path / "x.png")


def test_per_site_error_plot(tmp_path: Path) -> None:
    path = per_site_error_plot(METRICS, tmp_path / "per_site.png")
    # 4 groups (3 sites + unseen) x 2 methods with per-site errors: 2 panel widths
    _read(path, 1, 2)
    with pytest.raises(ConfigError, match="no method has 'age_mae_per_site'"):
        per_site_error_plot({"combat": METRICS["combat"]}, tmp_path / "x.png")


def test_grouped_bar_plot(tmp_path: Path) -> None:
    dice = {site: {"csf": 0.3 + 0.1 * i, "gm": 0.8, "wm": 0.85, "mean": 0.65} for i, site in enumerate(SITES)}
    dice["unseen (unseen)"] = {"csf": None, "gm": float("nan"), "wm": 0.7, "mean": 0.7}  # bars left out
    path = grouped_bar_plot(dice, tmp_path / "dice.png", ylabel="Dice", title="Dice per site", ylim=(0.0, 1.0))
    # 4 groups x 4 bars: 3 panel widths
    _read(path, 1, 3)
    with pytest.raises(ConfigError, match="grouped_bar_plot: no value to plot in 'empty'"):
        grouped_bar_plot({"a": {"csf": None}}, tmp_path / "x.png", ylabel="Dice", title="empty")


def test_training_curves_plot(tmp_path: Path) -> None:
    history = [{"epoch": e, "task_loss": 1 / e, "domain_acc_site": 0.9 - 0.05 * e} for e in range(1, 9)]
    for entry in history[2:]:  # no confusion loss during the heads' warm-up
        entry["confusion_loss_site"] = 1.3 - 0.02 * entry["epoch"]
    path = training_curves_plot({"none": [], "unlearning": history}, tmp_path / "curves.png", chance=1 / 3)
    _read(path, 1, 2)
    with pytest.raises(ConfigError, match="no history has 'domain_acc_site' or 'confusion_loss_site'"):
        training_curves_plot({"none": []}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"'chance' must be a finite number > 0 and < 1 or None, got 3 \(int\)"):
        training_curves_plot({"unlearning": history}, tmp_path / "x.png", chance=3)


def test_comparison_bar_plot(tmp_path: Path) -> None:
    path = comparison_bar_plot(METRICS, tmp_path / "comparison.png")
    _read(path, 1, 2)
    with pytest.raises(ConfigError, match="no metrics given"):
        comparison_bar_plot({}, tmp_path / "x.png")


def test_comparison_bar_plot_draws_the_probe_floor(tmp_path: Path) -> None:
    plain = _read(comparison_bar_plot(METRICS, tmp_path / "plain.png", chance=0.25), 1, 2)
    with_floor = {k: {**v, "site_probe_floor": 0.6} for k, v in METRICS.items()}
    floored = _read(comparison_bar_plot(with_floor, tmp_path / "floor.png", chance=0.25), 1, 2)
    changed = np.abs(plain - floored).sum(axis=-1) > 0.1
    # the dotted line at 0.6 and its legend entry are drawn in the left panel; the age panel is untouched
    width = plain.shape[1]
    assert changed[:, : width // 2].any() and not changed[:, int(0.55 * width) :].any()


def test_interval_errors_below_and_above_each_bar() -> None:
    errors = interval_errors([0.5, 0.3, np.nan, 0.4], [[0.4, 0.7], None, [0.1, 0.2], [0.45, 0.5]])
    # a bar without an interval or a value gets none; an interval that misses its mean is clipped at the bar
    np.testing.assert_allclose(errors, [[0.1, 0.0, 0.0, 0.0], [0.2, 0.0, 0.0, 0.1]])
    assert interval_errors([0.5, 0.3], [None, None]) is None


def test_comparison_bar_plot_draws_intervals(tmp_path: Path) -> None:
    plain = _read(comparison_bar_plot(METRICS, tmp_path / "plain.png", chance=0.25), 1, 2)
    with_ci = {k: {**v, "site_probe_bacc_ci": [v["site_probe_bacc"] - 0.1, v["site_probe_bacc"] + 0.05]}
               for k, v in METRICS.items()}
    with_ci["none"]["age_mae_ci"] = [4.0, 7.0]
    drawn = _read(comparison_bar_plot(with_ci, tmp_path / "ci.png", chance=0.25), 1, 2)
    changed = np.abs(plain - drawn).sum(axis=-1) > 0.1
    width = plain.shape[1]
    assert changed[:, : width // 2].any() and changed[:, width // 2 :].any()  # error bars in both panels
