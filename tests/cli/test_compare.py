"""``harmonize compare``: the table and report from the command line; bad choices exit 1 with one message."""

from __future__ import annotations

import json

import pytest

from harmonize.cli.main import main

TINY = ["--epochs", "1", "--channels", "8,8,8,8", "--permutations", "0"]


def test_compare_writes_the_table(tiny_cohort, tmp_path):
    out = tmp_path / "out"
    assert main(["-q", "compare", "--manifest", str(tiny_cohort), "--out", str(out), "--methods", "none,combat",
                 "--unseen-site", "site1", "--seeds", "2", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and metrics["settings"]["jobs"] == 1
    assert [s["seed"] for s in metrics["combat"]["per_seed"]] == [0, 1] and len(metrics["combat"]["age_mae_ci"]) == 2
    assert sorted(p.name for p in (out / "models").iterdir()) == ["none.pt", "none_seed0.pt", "none_seed1.pt"]
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
    assert main([*args, "--amp"]) == 1  # mixed precision on the CPU
    assert "'amp' (mixed precision) needs a CUDA device" in capsys.readouterr().err
    for option in ("--seeds", "--jobs"):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, option, "0"])
        assert exit_info.value.code == 2 and option in capsys.readouterr().err


def test_scans_of_different_shapes_name_two_files_and_the_fix(tiny_cohort, tmp_path, capsys):
    """Unpreprocessed scans of two shapes: before, a stack error of the data loader."""
    import nibabel as nib
    import numpy as np

    from harmonize.data.manifest import read_manifest

    frame = read_manifest(tiny_cohort)
    frame = frame[[c for c in ("subject_id", "image", "site", "age", "sex", "split") if c in frame]].copy()
    odd = tmp_path / "odd.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 24, 24), np.float32), np.eye(4)), odd)
    first = frame["image"].iloc[0]
    frame.iloc[1, frame.columns.get_loc("image")] = str(odd)
    frame.to_csv(tmp_path / "m.csv", index=False)
    assert main(["compare", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = err[err.index("error:"):]
    assert err.startswith(f"error: The scans of {tmp_path / 'm.csv'} have 2 different shapes, and a batch needs one. "
                          f"Preprocess the manifest first: 'harmonize preprocess {tmp_path / 'm.csv'} --out DIR' "
                          "resamples and crops every scan to one grid (then use DIR/manifest.csv)")
    assert f" scan(s), rows 2, 4, 5, 6, 7 … (e.g. {first})" in err and "  - shape (24, 24, 24): " in err
    assert f"  - shape (20, 24, 24): 1 scan(s), rows 3 (e.g. {odd})" in err
    assert "Traceback" not in err
