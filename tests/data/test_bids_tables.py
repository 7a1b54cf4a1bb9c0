"""SiteFrom: where a BIDS scan's site is read, checked on construction with every problem at once."""

from __future__ import annotations

import pytest

from harmonize.data.bids_tables import SiteFrom
from harmonize.errors import ConfigError


def test_site_from_parses_and_normalises():
    site = SiteFrom.parse("sidecar: Manufacturer ,ManufacturersModelName")
    assert (site.source, site.fields) == ("sidecar", ("Manufacturer", "ManufacturersModelName"))
    assert str(site) == "sidecar:Manufacturer,ManufacturersModelName"


@pytest.mark.parametrize(
    "source, fields, first",
    [
        ("sidecar", (), "name at least one field, e.g. sidecar:Manufacturer"),
        ("sesions", ("scanner",), "Argument '--site-from source': By 'sesions', did you mean 'sessions'?"),
    ],
)
def test_each_problem_is_named(source, fields, first):
    with pytest.raises(ConfigError) as err:
        SiteFrom(source, fields)
    assert err.value.message == "--site-from: invalid arguments."
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(first)


def test_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        SiteFrom("sesions", (" ",))
    assert [p.split(":")[0] for p in err.value.problems] == [
        "Argument '--site-from source'", "name at least one field, e.g. participants"]
    with pytest.raises(ConfigError, match="is not SOURCE:FIELDS"):
        SiteFrom.parse("scanner")
