"""``harmonize demo --quick``: the whole pipeline end to end, writing metrics.json."""

from __future__ import annotations

import json

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


def test_demo_refuses_a_non_empty_output(demo_dir, capsys):
    assert main(["demo", "--out", str(demo_dir), "--quick"]) == 1
    err = capsys.readouterr().err
    assert str(demo_dir) in err and "--overwrite" in err and "Traceback" not in err
