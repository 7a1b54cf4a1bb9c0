"""Tests of harmonize.data.preprocess.shards: fit once, shards into one folder, merge as one run would."""

from __future__ import annotations

from pathlib import Path

import pytest

from harmonize.data.preprocess import (
    FitMismatchError,
    PreprocessConfig,
    Shard,
    ShardError,
    stages,
)
from harmonize.errors import ConfigError
from harmonize.io import TMP_TAG

from .conftest import run, tree_hashes


def _outputs_only(path: Path) -> bool:
    """Skip the shards' own folders and the bookkeeping of the folder claim."""
    return path.parts[0] == "shards" or path.name.startswith(".harmonize")


def test_two_shards_and_a_merge_write_what_one_run_writes(make_cohort, tmp_path):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=3, n_train=2)
    whole = run(manifest, tmp_path / "whole")
    out = tmp_path / "sharded"
    fit = run(manifest, out, fit_only=True)
    assert fit.manifest is None and fit.step == "fit" and (fit.processed, fit.cached) == (4, 0)  # the training scans
    assert not (out / "images").exists() and sorted(fit.landmarks) == ["siteA", "siteB"]
    first = run(manifest, out, shard="1/2")
    second = run(manifest, out, shard=Shard(2, 2))
    assert (first.processed, second.processed) == (3, 3) and first.step == "shard 1/2"
    part = first.manifest.read_text().splitlines()
    assert first.manifest == out / "shards" / "1-of-2" / "manifest.csv" and len(part) == 1 + 3
    assert part[1].startswith("siteA-00,") and "../../images/siteA-00.nii.gz" in part[1]
    merged = run(manifest, out, merge=True)
    assert merged.step == "merge" and (merged.processed, merged.cached) == (6, 0)
    assert merged.manifest.read_bytes() == whole.manifest.read_bytes()
    expected = tree_hashes(tmp_path / "whole", _outputs_only)
    assert len(expected) == 6 * 5 + 4 + 2  # per scan 5 files; 2 landmarks, index, fit; manifest, marker
    assert tree_hashes(out, _outputs_only) == expected
    again = run(manifest, out, shard="1/2")  # a shard run again reuses its outputs
    assert (again.processed, again.cached) == (0, 3)


def test_a_missing_or_outdated_shard_is_named_and_nothing_is_merged(make_cohort, tmp_path):
    manifest = make_cohort(per_site=3, n_train=2)
    out = tmp_path / "out"
    run(manifest, out, fit_only=True)
    run(manifest, out, shard="2/3")
    with pytest.raises(ShardError, match=r"Cannot merge the 3 shards in .*: 2 of them are missing") as err:
        run(manifest, out, merge=True)
    assert [p.split(":")[0] for p in err.value.problems] == ["shard 1/3", "shard 3/3"]
    assert err.value.problems[0] == (f"shard 1/3: missing ({out / 'shards' / '1-of-3' / 'shard.json'} does not "
                                     "exist: the shard has not run, failed, or still runs); run it (--shard 1/3)")
    assert not (out / "manifest.csv").exists()
    run(manifest, out, fit_only=True, overwrite=True)  # a new fit starts a new round: the old shards are gone
    assert not (out / "shards" / "2-of-3").exists()
    with pytest.raises(ShardError, match="holds no shard: run the shards"):
        run(manifest, out, merge=True)


def test_a_shard_refuses_to_run_without_a_matching_fit(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=1)
    out = tmp_path / "out"
    with pytest.raises(ShardError, match=rf"{out} holds no fitted landmarks: run 'harmonize preprocess .* --fit-only"):
        run(manifest, out, shard="1/2")
    run(manifest, out, fit_only=True)
    other = PreprocessConfig(target_spacing=1.5, target_shape=(12, 12, 12))
    with pytest.raises(FitMismatchError, match="fitted for another manifest or other settings") as err:
        run(manifest, out, other, shard="1/2")
    assert err.value.problems == ["target_shape: fitted with [16, 16, 16], this run has [12, 12, 12]"]
    manifest.write_text(manifest.read_text().replace("vendor0", "vendorX"))
    with pytest.raises(FitMismatchError) as err:
        run(manifest, out, shard="1/2")
    assert err.value.problems == [f"manifest: {manifest} changed since the landmarks were fitted (its content differs)"]
    assert not (out / "images").exists()  # nothing was written by the refused shards


def test_a_shard_killed_mid_write_leaves_no_partial_file_and_runs_again(make_cohort, tmp_path, monkeypatch):
    manifest = make_cohort(per_site=2, n_train=1)
    out = tmp_path / "out"
    run(manifest, out, fit_only=True)
    run(manifest, out, shard="1/2")
    real = stages.atomic_write

    def killed(path, write):
        if Path(path).parent.name == "images":  # half of the file reaches the disk, then the process dies
            full = tmp_path / "full.nii.gz"
            write(full)
            Path(path).with_name(f".{Path(path).name}{TMP_TAG}0123456789ab.nii.gz").write_bytes(full.read_bytes()[:99])
            raise KeyboardInterrupt
        return real(path, write)

    monkeypatch.setattr(stages, "atomic_write", killed)
    with pytest.raises(KeyboardInterrupt):
        run(manifest, out, shard="2/2")
    monkeypatch.undo()
    finished = sorted(p.name for p in (out / "images").iterdir() if TMP_TAG not in p.name)
    assert finished == ["siteA-00.nii.gz", "siteA-01.nii.gz"]  # shard 1/2's, and no half-written image
    with pytest.raises(ShardError, match="1 of them are missing"):
        run(manifest, out, merge=True)
    assert run(manifest, out, shard="2/2").processed == 2
    assert run(manifest, out, merge=True).manifest == out / "manifest.csv"
    assert list(out.rglob(f"*{TMP_TAG}*")) == []  # the merge removed the killed write's temporary file


@pytest.mark.parametrize(("text", "message"), [
    ("3/2", "must be K/N with 1 <= K <= N, not 3/2"),
    ("0/2", "must be K/N with 1 <= K <= N, not 0/2"),
    ("1-2", "must be K/N (e.g. 2/8: the second of 8 shards), not '1-2'"),
])
def test_a_malformed_shard_is_refused(text, message):
    with pytest.raises(ConfigError) as err:
        Shard.parse(text)
    assert message in str(err.value)


def test_shards_split_the_rows_into_contiguous_blocks():
    blocks = [list(Shard(k, 3).select(10)) for k in (1, 2, 3)]
    assert blocks == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert str(Shard.parse(" 2 / 8 ")) == "2/8" and Shard(2, 8).name == "2-of-8"
