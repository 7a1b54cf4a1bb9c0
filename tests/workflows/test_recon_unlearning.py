"""End-to-end test of the reconstruction-unlearning experiment at 32 x 32 with a few iterations."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError
from harmonize.keys import Keys, ReconMethod
from harmonize.metrics.reconstruction import TABLE_COLUMNS
from harmonize.workflows.recon_settings import ReconDataSettings, ReconStageSettings
from harmonize.workflows.recon_unlearning import (
    OUTPUT_FILES,
    ReconUnlearningSettings,
    format_markdown,
    run_recon_unlearning,
    stage_settings,
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("recon_unlearning")
    return run_recon_unlearning(ReconUnlearningSettings.tiny(), out), out


def test_table_rows_and_columns(result) -> None:
    res, _ = result
    methods = [r["method"] for r in res.table]
    assert methods == ["original", "oracle", "ft", "ga", "ga_l1", "ga_l1_ft", "nl", "nl_ft", "retrain_subset"]
    for row in res.table:
        assert [k for k in row if not k.endswith("_ci")] == [*TABLE_COLUMNS, "cpu_seconds", "iterations"]
        assert all(row[f"{k}_ci"] is None for k in TABLE_COLUMNS[1:])  # one seed: no interval
        assert all(math.isfinite(row[k]) for k in TABLE_COLUMNS[1:])
        assert 5.0 < row["bta_psnr"] < 60.0 and -1.0 <= row["bta_ssim"] <= 1.0
        assert row["seconds"] > 0 and row["cpu_seconds"] > 0
    assert res.sizes == {"retain_train": 12, "forget_train": 4, "retain_test": 4, "forget_test": 4}
    assert set(res.models) == set(methods)
    assert [(r["method"], r["fraction"]) for r in res.fraction_table] == [("ft", 0.5), ("ft", 1.0)]
    assert [k for k in res.zero_filled if not k.endswith("_ci")] == list(TABLE_COLUMNS)
    assert res.zero_filled["method"] == "zero_filled"
    assert res.zero_filled["seconds"] == 0.0 and math.isfinite(res.zero_filled["kta_psnr"])
    ft = next(r for r in res.table if r["method"] == "ft")
    assert res.fraction_table[0]["bta_psnr"] == ft["bta_psnr"]  # the main run is reused at its own fraction
    assert [len(t) for t in res.per_seed] == [len(res.table)] and {r["seed"] for r in res.per_seed[0]} == {0}


def test_iterations_count_the_batches_of_every_stage(result) -> None:
    res, _ = result
    # tiny: 12 retain + 4 forget training slices, batches of 4, 1 epoch everywhere, FT subset 50 % (6 slices, 2
    # batches); the forget stage of ga_l1_ft / nl_ft also sees that subset (10 slices, 3 batches)
    iterations = {r["method"]: r["iterations"] for r in res.table}
    assert iterations == {"original": 4, "oracle": 3, "ft": 2, "ga": 1, "ga_l1": 1, "ga_l1_ft": 5, "nl": 1,
                          "nl_ft": 5, "retrain_subset": 2}
    assert res.fraction_table[1]["iterations"] == 3  # ft on the whole retain set


def test_seeds_give_means_and_intervals() -> None:
    settings = ReconUnlearningSettings.tiny(seeds=2, seed=5, methods=(ReconMethod.FT,), fractions=(0.5,))
    res = run_recon_unlearning(settings)
    assert [[r["seed"] for r in t] for t in res.per_seed] == [[5, 5, 5], [6, 6, 6]]
    for i, row in enumerate(res.table):
        values = [t[i]["bta_psnr"] for t in res.per_seed]
        assert row["bta_psnr"] == pytest.approx(sum(values) / 2)
        low, high = row["bta_psnr_ci"]
        assert low < row["bta_psnr"] < high or values[0] == values[1]
        assert row["iterations"] == res.per_seed[0][i]["iterations"] and row["iterations_ci"] == [
            row["iterations"], row["iterations"]]
    assert [r["method"] for r in res.fraction_table] == ["ft"] and res.fraction_table[0]["seed"] == 5
    assert set(res.models) == {"original", "oracle", "ft"}
    text = format_markdown(res.table)
    assert "then over seeds: mean [95 % interval]" in text and f"| {res.table[0]['bta_psnr']:.2f} [" in text


def test_files_are_written(result) -> None:
    res, out = result
    assert {name: path.name for name, path in res.files.items()} == OUTPUT_FILES
    payload = json.loads((out / OUTPUT_FILES["json"]).read_text())
    assert payload["columns"] == list(TABLE_COLUMNS)
    assert [r["method"] for r in payload["table"]] == [r["method"] for r in res.table]
    assert payload["table"][0]["bta_psnr"] == pytest.approx(res.table[0]["bta_psnr"])
    assert payload["settings"]["data"]["size"] == 32
    markdown = (out / OUTPUT_FILES["markdown"]).read_text()
    assert "| method | BTA PSNR | BTA SSIM | KTA PSNR" in markdown and "| nl_ft |" in markdown
    assert "Retain-fraction sweep" in markdown and "Zero-filled input (no network): BTA" in markdown
    assert payload["zero_filled"]["method"] == "zero_filled"
    assert [r["seed"] for r in payload["per_seed"][0]] == [0] * len(res.table)
    for name in ("pareto_seconds", "pareto_fraction"):
        assert (out / OUTPUT_FILES[name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_markdown_shows_time_relative_to_the_oracle() -> None:
    rows = [dict.fromkeys(TABLE_COLUMNS, 1.0) | {"method": "oracle", "seconds": 10.0},
            dict.fromkeys(TABLE_COLUMNS, 1.0) | {"method": "ft", "seconds": 2.0}]
    text = format_markdown(rows)
    assert "| ft | 1.00 | 1.000 | 1.00 | 1.000 | 1.00 | 1.000 | 2.0 | 20 |\n" in text
    rows = [r | {"iterations": i} for r, i in zip(rows, (600, 56), strict=True)]
    assert "| ft | 1.00 | 1.000 | 1.00 | 1.000 | 1.00 | 1.000 | 2.0 | 20 | 56 | 9.3 |" in format_markdown(rows)


def test_site_scenario_from_a_manifest(tiny_cohort: Path) -> None:
    site = sorted(read_manifest(tiny_cohort)[Keys.SITE].unique())[0]
    data = dataclasses.replace(ReconUnlearningSettings.tiny().data, manifest=str(tiny_cohort), forget_site=site,
                               size=16)
    settings = ReconUnlearningSettings.tiny(data=data, methods=(ReconMethod.NL_FT,), fractions=())
    res = run_recon_unlearning(settings)
    assert [r["method"] for r in res.table] == ["original", "oracle", "nl_ft"] and res.fraction_table == []
    assert res.sizes["forget_train"] > 0 and res.files == {}


def test_varnet_runs_on_masked_kspace() -> None:
    data = dataclasses.replace(ReconUnlearningSettings.tiny().data, retain_train_volumes=2, forget_train_volumes=1)
    settings = ReconUnlearningSettings.tiny(network="varnet", methods=(ReconMethod.NL_FT,), fractions=(), data=data)
    assert settings.kspace.keep_kspace  # VarNet reads the k-space, so the samples keep it
    assert not ReconUnlearningSettings.tiny().kspace.keep_kspace
    res = run_recon_unlearning(settings)
    assert [r["method"] for r in res.table] == ["original", "oracle", "nl_ft"]
    assert all(math.isfinite(r["bta_psnr"]) for r in res.table)


def test_bad_settings_are_all_reported() -> None:
    with pytest.raises(ConfigError) as err:  # checked on construction, every problem at once
        ReconUnlearningSettings.tiny(
            data={"size": 0}, unlearning={"retain_fraction": 1.5}, fractions=(0.0,), network="resnet",
            methods=("ft", "original", "magic"), fraction_methods=("ga",), seeds=0,
        )
    text = str(err.value)
    for expected in ("'size' must be an integer >= 1, got 0 (int)",
                     "'retain_fraction' must be a finite number > 0 and <= 1, got 1.5 (float)",
                     "'fractions[0]' must be a finite number > 0 and <= 1, got 0.0 (float)",
                     "'network' must be one of ['unet', 'varnet']",
                     "'methods' holds 'original'", "'methods' holds 'magic'",
                     "'fraction_methods' holds 'ga', which does not use retain data", "'seeds' must be an integer >= 1, got 0 (int)"):
        assert expected in text
    with pytest.raises(ConfigError, match=r"'acceleration' must be a finite number > 1, got 1.0 \(float\)"):
        ReconUnlearningSettings.tiny(kspace={"acceleration": 1.0})
    # text from a bundle override ('--max_epochs two') is named, not a TypeError of the comparison
    with pytest.raises(ConfigError) as err:
        ReconUnlearningSettings.tiny(original_epochs="two", unlearning={"retain_fraction": "half"})
    assert err.value.problems == ["'retain_fraction' must be a finite number > 0 and <= 1, got 'half' (str)",
                                  "'original_epochs' must be an integer >= 1, got 'two' (str)"]
    # every part checks itself on construction, and its problems join the others when it is given as a dict
    with pytest.raises(ConfigError) as err:
        ReconStageSettings(l1_penalty=-1.0, loss_ceiling=0, noise_mode="salt", ga_learning_rate=0.0)
    assert err.value.message == "ReconStageSettings: invalid arguments."
    assert err.value.problems[:3] == ["'ga_learning_rate' must be a finite number > 0 or None, got 0.0 (float)",
                                      "'l1_penalty' must be a finite number >= 0, got -1.0 (float)",
                                      "'loss_ceiling' must be a finite number > 0 or None, got 0 (int)"]
    assert err.value.problems[3].startswith("Argument 'noise_mode'")
    with pytest.raises(ConfigError, match=r"'slices_per_volume' must be an integer >= 1, got 0 \(int\)"):
        ReconDataSettings(slices_per_volume=0)
    with pytest.raises(ConfigError) as err:
        ReconUnlearningSettings.tiny(data={"size": 0}, kspace={"num_coils": 0}, batch_size=0)
    assert err.value.problems == ["'size' must be an integer >= 1, got 0 (int)",
                                  "'num_coils' must be an integer >= 1, got 0 (int)",
                                  "'batch_size' must be an integer >= 1, got 0 (int)"]
    settings = ReconUnlearningSettings.tiny()
    settings.seeds = 0  # changed after construction: check() finds it
    with pytest.raises(ConfigError, match=r"'seeds' must be an integer >= 1, got 0 \(int\)"):
        settings.check()


@pytest.mark.parametrize(("with_retain", "retain_seen"), [(True, 6), (False, 0)])
def test_forget_stage_of_ga_l1_ft_also_descends_on_the_retain_subset(
    caplog: pytest.LogCaptureFixture, with_retain: bool, retain_seen: int
) -> None:
    stages = dataclasses.replace(ReconUnlearningSettings.tiny().unlearning, forget_with_retain=with_retain,
                                 retain_weight=0.5)
    settings = ReconUnlearningSettings.tiny(methods=(ReconMethod.GA_L1_FT,), fractions=(), unlearning=stages)
    assert stage_settings(settings).handler(ReconMethod.GA_L1).retain_weight == 0.5
    with caplog.at_level("INFO", logger="harmonize.handlers.machine_unlearning"):
        run_recon_unlearning(settings)
    # 4 forget slices (2 volumes x 2) + half of the 12 retain slices in batches of 4, 1 epoch
    ga = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ga_l1 stage done")]
    expected = (f"ga_l1 stage done after {3 if with_retain else 1} iterations: 4 forget and {retain_seen} "
                "retain samples seen, 0 forget samples dropped")
    assert ga == [expected]
