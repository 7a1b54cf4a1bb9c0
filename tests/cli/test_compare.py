"""``harmonize compare``: the table and report from the command line; bad choices exit 1 with one message."""

from __future__ import annotations

import json

from harmonize.cli.main import main

TINY = ["--epochs", "1", "--channels", "8,8,8,8", "--permutations", "0"]


def test_compare_writes_the_table(tiny_cohort, tmp_path):
    out = tmp_path / "out"
    assert main(["-q", "compare", "--manifest", str(tiny_cohort), "--out", str(out), "--methods", "none,combat",
                 "--unseen-site", "site1", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unseen_site"] == "site1" and metrics["sites"] == ["site0", "site2"]
    assert metrics["settings"]["training"]["channels"] == [8, 8, 8, 8]
    assert metrics["settings"]["training"]["max_epochs"] == 1
    assert metrics["combat"]["unseen_site_handling"] == "passthrough"
    rows = [line.split("|")[1].strip() for line in (out / "comparison.md").read_text().splitlines()[2:]
            if line.startswith("|")]
    assert rows == ["none", "combat"]
    assert (out / "report.html").is_file() and (out / "models" / "none.pt").is_file()


def test_compare_errors(tiny_cohort, tmp_path, capsys):
    args = ["compare", "--manifest", str(tiny_cohort), "--out", str(tmp_path / "o"), *TINY]
    assert main([*args, "--methods", "none,combt"]) == 1
    err = capsys.readouterr().err
    assert "Argument 'methods'" in err and "combat" in err and "Traceback" not in err
    assert main([*args, "--unseen-site", "scanner9"]) == 1
    assert "'scanner9' is not a site of the manifest; its sites are ['site0', 'site1', 'site2']" in capsys.readouterr().err
    assert main([*args, "--combat-unseen", "drop"]) == 1
    assert "Argument 'combat_unseen'" in capsys.readouterr().err
