"""One rule for numeric options: every subcommand refuses an out-of-range value by name, with the valid range
(argparse usage error, exit 2), before any work; values that only fail with the data are checked there."""

from __future__ import annotations

import argparse

import pytest

from harmonize.cli import options
from harmonize.cli.main import main

M = ["--manifest", "m.csv", "--out", "o"]


@pytest.mark.parametrize(
    "case, argv, expected",
    [
        ("permutations", ["audit", "--checkpoint", "c.pt", *M, "--permutations", "-5"],
         "argument --permutations: must be an integer from 0 to 100000, got '-5'"),
        ("audit seed", ["audit", "--checkpoint", "c.pt", *M, "--seed", "-1"],
         "argument --seed: must be an integer from 0 to 4294967295, got '-1'"),
        ("compare seed", ["compare", *M, "--seed", "-1"], "argument --seed: must be an integer from 0 to"),
        ("epochs", ["compare", *M, "--epochs", "0"], "argument --epochs: must be an integer from 1 to 100000, got '0'"),
        ("zero channels", ["compare", *M, "--channels", "8,0,8"],
         "argument --channels: item 2 of '8,0,8' must be an integer from 1 to 4096, got '0'"),
        ("negative channels", ["compare", *M, "--channels", "8,-16"], "item 2 of '8,-16' must be an integer from 1"),
        ("empty channel", ["compare", *M, "--channels", "8,,8"], "must be 1 to 12 comma-separated values"),
        ("too many blocks", ["compare", *M, "--channels", ",".join(["4"] * 13)], "must be 1 to 12 comma-separated"),
        ("spacing", ["preprocess", "m.csv", "--out", "o", "--spacing", "0"],
         "argument --spacing: must be a number > 0 and <= 20.0, got '0'"),
        ("nan spacing", ["preprocess", "m.csv", "--out", "o", "--spacing", "nan"], "must be a number > 0"),
        ("shape", ["preprocess", "m.csv", "--out", "o", "--shape", "96", "0", "96"],
         "argument --shape: must be an integer from 1 to 1024, got '0'"),
        ("synth shape", ["synth", "--out", "o", "--shape", "1000"],
         "argument --shape: must be an integer from 16 to 256, got '1000'"),
        ("synth sites", ["synth", "--out", "o", "--sites", "1"], "argument --sites: must be an integer from 2 to 64"),
        ("jobs", ["validate", "m.csv", "--workers", "0"], "argument --workers: must be an integer from 1 to 1024"),
        ("loader workers", ["compare", *M, "--loader-workers", "-1"],
         "argument --loader-workers: must be an integer from 0 to 1024, got '-1'"),
        ("audit loader workers", ["audit", "--checkpoint", "c.pt", *M, "--loader-workers", "x"],
         "argument --loader-workers: must be an integer from 0 to 1024, got 'x'"),
        ("cache limit", ["compare", *M, "--cache-limit-gb", "-2"], "argument --cache-limit-gb: must be a number >= 0"),
        ("dataset cache", ["compare", *M, "--dataset-cache", "ram"], "argument --dataset-cache: invalid choice: 'ram'"),
        ("preprocess jobs", ["preprocess", "m.csv", "--out", "o", "--jobs", "0"],
         "argument --jobs: must be an integer from 1 to 1024, got '0'"),
        ("demo seed", ["demo", "--out", "o", "--seed", "-3"], "argument --seed: must be an integer from 0"),
        ("not a number", ["audit", "--checkpoint", "c.pt", *M, "--permutations", "many"],
         "argument --permutations: must be an integer from 0 to 100000, got 'many'"),
    ],
)
def test_out_of_range_options_are_usage_errors(capsys, case, argv, expected):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert expected in capsys.readouterr().err


def test_the_factory_reads_values_in_range():
    assert options.number(int, 0, 10)("10") == 10
    assert options.number(float, 0, 1, low_open=True)(" 0.5 ") == 0.5
    assert options.numbers(int, 1)("8,16, 32") == (8, 16, 32)
    with pytest.raises(argparse.ArgumentTypeError, match="must be a number > 0 and <= 1, got '0'"):
        options.number(float, 0, 1, low_open=True)("0")


def test_too_many_blocks_for_the_scans_is_named(tiny_cohort, tmp_path, capsys):
    """Six blocks halve a 24^3 scan five times (it needs 32 voxels per axis): refused before training."""
    assert main(["compare", "--manifest", str(tiny_cohort), "--out", str(tmp_path / "o"), "--methods", "none",
                 "--channels", "4,4,4,4,4,4", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert ("Argument 'channels' (4,4,4,4,4,4): 6 blocks halve the scan 5 times, so every axis must be at least 32 "
            "voxels") in err
    assert "(24, 24, 24). Give at most 5 block(s) (e.g. --channels 4,4,4,4,4)" in err and "Traceback" not in err


def test_dataset_options_become_the_training_settings():
    from harmonize.cli.main import build_parser
    from harmonize.workflows.brain_age import BrainAgeSettings

    args = build_parser().parse_args(["compare", *M, "--dataset-cache", "disk", "--cache-dir", "/scratch/c",
                                      "--cache-limit-gb", "1.5", "--loader-workers", "4"])
    settings = BrainAgeSettings(**options.dataset_settings(args))
    assert (settings.cache, settings.cache_dir, settings.cache_limit_gb, settings.num_workers) == ("disk", "/scratch/c",
                                                                                                    1.5, 4)
    default = build_parser().parse_args(["compare", *M])
    assert options.dataset_settings(default) == {"cache": "memory", "cache_dir": None, "cache_limit_gb": None,
                                                 "num_workers": 0}
