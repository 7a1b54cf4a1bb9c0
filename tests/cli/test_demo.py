"""``harmonize demo --quick``: the whole pipeline end to end, writing metrics.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harmonize.cli.main import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    return out


def test_demo_writes_metrics_for_every_method(demo_dir):
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    assert metrics["unseen_site"] == "site2"  # the last of 3 sites is held out of training
    assert metrics["chance"] == pytest.approx(1 / 2)
    for method in ("none", "unlearning", "dann", "combat"):
        m = metrics[method]
        assert 0.0 <= m["site_probe_bacc"] <= 1.0
        assert m["age_mae"] >= 0 and m["unseen_site_mae"] >= 0
    assert metrics["combat"]["unseen_site_handling"] == "passthrough"
    assert set(metrics["recon"]) >= {"original", "oracle", "ft"}
    assert sorted(p.name for p in (demo_dir / "models").iterdir()) == ["dann.pt", "none.pt", "unlearning.pt"]
    assert '<td class="method">combat</td>' in (demo_dir / "report.html").read_text()
    assert (demo_dir / "cohort" / "manifest.csv").is_file()
    assert (demo_dir / "preprocessed" / "manifest.csv").is_file()


def test_demo_runs_the_biased_scenario_too(demo_dir):
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    biased = metrics["biased"]
    assert biased["unseen_site"] == "site2" and biased["sites"] == metrics["sites"]
    for method in ("none", "unlearning", "combat", "erasure", "unlearning_erasure"):
        assert set(biased[method]) >= {"site_probe_bacc", "site_probe_floor", "age_mae", "site_bias_spread", "per_seed"}
    assert "dann" not in biased  # left out of the biased scenario, for the demo's time
    assert json.loads((demo_dir / "biased" / "metrics.json").read_text())["none"] == biased["none"]
    assert (demo_dir / "biased" / "report.html").is_file() and "recon" not in biased
    # compare recognises the biased design by itself and says so; the balanced scenario's report does not
    assert "Biased sites: the training sites&#x27; ages only partly overlap" in (demo_dir / "biased" / "report.html").read_text()
    assert "Biased sites" not in (demo_dir / "report.html").read_text()
    assert "in their own site&#x27;s training age range" not in (demo_dir / "biased" / "report.html").read_text()
    ages = {}
    for scenario in (demo_dir, demo_dir / "biased"):
        frame = pd.read_csv(scenario / "cohort" / "manifest.csv")
        train = frame[frame["split"] == "train"]
        ranges = train.groupby("site")["age"].agg(["min", "max"])
        ages[scenario.name] = (ranges["max"] - ranges["min"]).mean()
    assert ages["biased"] < 0.7 * ages[demo_dir.name]  # the biased sites' training age windows are narrower


def test_demo_passes_seeds_and_jobs_to_the_comparison(monkeypatch, tmp_path, capsys):
    import harmonize.workflows.demo as demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda out, settings, **kwargs: seen.append(settings))
    assert main(["demo", "--out", str(tmp_path / "a"), "--quick", "--seeds", "3", "--jobs", "2", "--seed", "5"]) == 0
    compare = seen[0].compare_settings()
    assert (seen[0].seeds, seen[0].jobs, compare.jobs) == (3, 2, 2)
    assert compare.seed_values() == (5, 6, 7)
    assert main(["demo", "--out", str(tmp_path / "b"), "--quick"]) == 0
    assert (seen[1].seeds, seen[1].jobs) == (1, 1)
    monkeypatch.undo()
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path / "c"), "--quick", "--seeds", "0"])
    assert exit_info.value.code == 2 and "--seeds: must be an integer from 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_demo_refuses_a_non_empty_output(demo_dir, capsys):
    assert main(["demo", "--out", str(demo_dir), "--quick"]) == 1
    err = capsys.readouterr().err
    assert str(demo_dir) in err and "--overwrite" in err and "Traceback" not in err
