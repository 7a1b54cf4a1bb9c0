"""forget_rows / mark_forget: the withdrawn subjects of a manifest, checked, or drawn per site."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harmonize.data.forget_list import forget_rows, mark_forget
from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError, ManifestError
from harmonize.keys import Keys, Split

HEADER = "subject_id,image,site,age,sex,split,forget\n"
#: (site, split) of six scans; rows 2..7 of the CSV.
DESIGN = [("A", "train"), ("A", "train"), ("A", "test"), ("B", "train"), ("B", "val"), ("B", "train")]


def manifest(tmp_path: Path, forget: list[str]) -> Path:
    lines = [f"s{i},s{i}.nii.gz,{site},{30 + i},F,{split},{flag}\n"
             for i, ((site, split), flag) in enumerate(zip(DESIGN, forget))]
    path = tmp_path / "manifest.csv"
    path.write_text(HEADER + "".join(lines))
    return path


def test_forget_rows_are_the_training_rows_flags(tmp_path):
    frame = read_manifest(manifest(tmp_path, ["true", "", "false", "no", "0", "yes"]))
    flags = forget_rows(frame)
    assert list(flags.index) == [2, 3, 5, 7]  # the CSV's line numbers of the train rows
    assert list(flags) == [True, False, False, True]


@pytest.mark.parametrize(
    "forget, message",
    [
        (["true", "", "true", "", "true", ""], "row(s) 4, 6 are marked 'forget' but are not 'train' rows"),
        (["", "", "", "", "", ""], "no training row is marked 'forget' (4 training rows)"),
        (["1", "1", "", "1", "", "1"], "all 4 training rows are marked 'forget': nothing is left to retain"),
    ],
    ids=["outside", "none", "all"],
)
def test_bad_forget_lists(tmp_path, forget, message):
    path = manifest(tmp_path, forget)
    with pytest.raises(ManifestError) as caught:
        forget_rows(read_manifest(path))
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_value_that_is_not_a_boolean_is_refused_naming_its_row(tmp_path):
    path = manifest(tmp_path, ["maybe", "", "", "", "", ""])
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    assert "row 2" in str(caught.value) and "'maybe' is not true or false" in str(caught.value)


def test_no_forget_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("subject_id,image,site,age,sex,split\ns0,a.nii.gz,A,30,F,train\n")
    with pytest.raises(ManifestError, match="has no 'forget' column: add one"):
        forget_rows(read_manifest(path))


def test_mark_forget_draws_a_share_of_each_sites_training_rows():
    rows = [(f"s{i}", f"site{i % 3}", Split.TRAIN if i < 30 else Split.TEST) for i in range(36)]
    frame = pd.DataFrame(rows, columns=[Keys.SUBJECT_ID, Keys.SITE, Keys.SPLIT], index=range(2, 38))
    frame[Keys.FORGET] = True  # replaced, not kept
    marked = mark_forget(frame, 0.2, seed=1)
    assert frame[Keys.FORGET].all()  # the input is unchanged
    per_site = marked[marked[Keys.FORGET]].groupby(Keys.SITE).size()
    assert per_site.to_dict() == {"site0": 2, "site1": 2, "site2": 2}  # 20 % of 10 training rows each
    assert not marked.loc[marked[Keys.SPLIT] != Split.TRAIN, Keys.FORGET].any()
    assert list(forget_rows(marked)[lambda s: s].index) == list(marked.index[marked[Keys.FORGET]])
    assert mark_forget(frame, 0.2, seed=1).equals(marked) and not mark_forget(frame, 0.2, seed=2).equals(marked)


def test_mark_forget_keeps_a_row_per_site_and_checks_the_fraction():
    frame = pd.DataFrame({Keys.SUBJECT_ID: ["a", "b", "c"], Keys.SITE: ["A", "A", "B"],
                          Keys.SPLIT: [Split.TRAIN] * 3})
    marked = mark_forget(frame, 0.9, seed=0)
    assert marked[Keys.FORGET].tolist().count(True) == 1  # site A keeps one row; site B's only row is kept
    assert not marked.loc[marked[Keys.SITE] == "B", Keys.FORGET].any()
    for fraction in (0.0, 1.0):
        with pytest.raises(ConfigError, match=f"'fraction' must be a finite number > 0 and < 1, got {fraction}"):
            mark_forget(frame, fraction)


def test_validate_warns_of_forget_rows_outside_training(tmp_path):
    from harmonize.data.manifest import validate_manifest

    held_out = validate_manifest(manifest(tmp_path, ["", "", "true", "", "", ""]), check_images=False)
    assert any("row(s) 4 are marked forget but are not 'train' rows" in str(w) for w in held_out.warnings)
    every = validate_manifest(manifest(tmp_path, ["1", "1", "", "1", "", "1"]), check_images=False)
    assert any("every training row is marked forget" in str(w) for w in every.warnings)
    fine = validate_manifest(manifest(tmp_path, ["1", "", "", "", "", ""]), check_images=False)
    assert not [w for w in fine.warnings if "forget" in str(w)]
