"""Tests of harmonize.data.site_index: CategoryIndex / SiteIndex."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from harmonize.data.site_index import (
    SITE_INDEX_FILENAME,
    CategoryIndex,
    SiteIndex,
    UnknownCategoryError,
    index_filename,
)
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys


@pytest.fixture
def frame() -> pd.DataFrame:
    """A manifest-like frame indexed by CSV line number (header = 1), as read_manifest returns it."""
    return pd.DataFrame(
        {
            Keys.SITE.value: ["siteC", "siteA", "siteB", "siteA", "siteZ", "siteB"],
            Keys.SPLIT.value: ["train", "train", "train", "val", "test", "train"],
            Keys.SEX.value: ["M", "F", "M", "F", "M", "F"],
        },
        index=pd.Index([2, 3, 4, 5, 6, 7], name="row"),
    )


def test_built_from_training_rows_sorted(frame):
    index = SiteIndex.from_frame(frame)
    assert index.categories == ("siteA", "siteB", "siteC")  # siteZ is test-only: no class of its own
    assert dict(index) == {"siteA": 0, "siteB": 1, "siteC": 2}
    assert index.name == "site"
    # the same rows in another order give the same mapping
    assert SiteIndex.from_frame(frame.iloc[::-1]) == index


def test_site_index_is_category_index_for_any_column(frame):
    assert SiteIndex is CategoryIndex
    sex = CategoryIndex.from_frame(frame, column=Keys.SEX)
    assert (sex.name, sex.categories) == ("sex", ("F", "M"))
    every_split = CategoryIndex.from_frame(frame, split=None)
    assert every_split.categories == ("siteA", "siteB", "siteC", "siteZ")


def test_save_and_load_round_trip(tmp_path, frame):
    index = SiteIndex.from_frame(frame)
    path = index.save(tmp_path / SITE_INDEX_FILENAME)
    assert path.name == "site_index.json" == index_filename("site")
    content = json.loads(path.read_text())
    assert content["name"] == "site" and content["categories"] == ["siteA", "siteB", "siteC"]
    assert SiteIndex.load(path) == index
    assert [p.name for p in tmp_path.iterdir()] == ["site_index.json"]  # no temporary file left


def test_load_or_build_reuses_the_saved_index_for_new_data(tmp_path, frame):
    path = tmp_path / SITE_INDEX_FILENAME
    first = SiteIndex.load_or_build(path, frame)
    assert path.is_file()
    new_data = pd.DataFrame({"site": ["siteB", "siteAA"], "split": ["train", "train"]})
    reused = SiteIndex.load_or_build(path, new_data)
    assert reused == first  # the saved mapping wins; new data never renumbers the sites
    assert reused["siteB"] == 1


def test_unknown_site_names_site_row_and_known_sites(frame):
    index = SiteIndex.from_frame(frame)
    with pytest.raises(UnknownCategoryError) as err:
        index.index("siteZ", row=6)
    message = str(err.value)
    assert "Unknown site 'siteZ' in row 6" in message
    assert "['siteA', 'siteB', 'siteC']" in message
    assert isinstance(err.value, HarmonizeError) and isinstance(err.value, KeyError)
    assert index.get("siteZ") is None and "siteZ" not in index and "siteA" in index


def test_encode_lists_every_bad_value(frame):
    index = SiteIndex.from_frame(frame)
    with pytest.raises(UnknownCategoryError) as err:
        index.encode(list(frame["site"]) + [None], rows=list(frame.index) + [8])
    assert err.value.problems == ["unknown site 'siteZ' in row 6", "missing site in row 8"]
    assert "known sites: ['siteA', 'siteB', 'siteC']" in str(err.value)


def test_encode_with_replacements_for_missing_and_unknown(frame, caplog):
    index = SiteIndex.from_frame(frame)
    with caplog.at_level(logging.WARNING, logger="harmonize.data.site_index"):
        codes = index.encode(["siteB", "siteZ", float("nan"), ""], missing=-1, unknown=-2)
    np.testing.assert_array_equal(codes, [1, -2, -1, -1])
    assert codes.dtype == np.int64
    assert "['siteZ']" in caplog.text and "index -2" in caplog.text


def test_category_is_the_inverse(frame):
    index = SiteIndex.from_frame(frame)
    assert [index.category(i) for i in range(len(index))] == list(index)
    with pytest.raises(IndexError, match="site index 3 is out of range 0..2"):
        index.category(3)


@pytest.mark.parametrize(
    ("categories", "expected"),
    [
        ([], "no 'site' values given"),
        (["a", "b", "a"], "'site' value 'a' is listed more than once"),
        (["a", " "], "empty 'site' value at position 1"),
    ],
)
def test_bad_categories_rejected(categories, expected):
    with pytest.raises(HarmonizeError) as err:
        CategoryIndex(categories)
    assert expected in err.value.problems


def test_no_training_rows(frame):
    with pytest.raises(HarmonizeError, match="no rows with split 'train' with a 'site' value") as err:
        SiteIndex.from_frame(frame[frame["split"] != "train"], source="m.csv")
    assert "m.csv" in str(err.value) and "site_index.json" in str(err.value)
    with pytest.raises(HarmonizeError, match="has no 'scanner' column"):
        CategoryIndex.from_frame(frame, column="scanner")


def test_load_errors_name_the_file(tmp_path, frame):
    with pytest.raises(HarmonizeError, match="does not exist"):
        SiteIndex.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HarmonizeError, match=r"bad\.json cannot be read as JSON"):
        SiteIndex.load(bad)
    bad.write_text('{"name": "site"}')
    with pytest.raises(HarmonizeError, match="has no 'categories' list"):
        SiteIndex.load(bad)
    sex_file = CategoryIndex.from_frame(frame, column="sex").save(tmp_path / "sex_index.json")
    with pytest.raises(HarmonizeError, match="holds the 'sex' index, not the 'site' index"):
        SiteIndex.load_or_build(sex_file, frame)
