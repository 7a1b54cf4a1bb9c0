"""The tables of a BIDS dataset: ``participants.tsv`` and each participant's ``sessions.tsv`` (private to
:mod:`harmonize.data.bids`, which builds a manifest from them), and :class:`SiteFrom`, where a scan's site is read.

Every problem of a table is collected with its file, row, participant and column, so that one run names them all.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonize.errors import ConfigError, ManifestError, option_value, raise_problems
from harmonize.keys import Sex, SiteSource

__all__ = ["BIDS_AGE", "BIDS_NA", "BIDS_SEX", "SEX_MAP", "SiteFrom"]

#: The participants table of a BIDS dataset, its id column and its missing-value marker.
PARTICIPANTS_FILE = "participants.tsv"
PARTICIPANT_ID = "participant_id"
BIDS_NA = "n/a"
#: A participant's sessions table (``sub-XX/sub-XX_sessions.tsv``) and its id column.
SESSIONS_SUFFIX = "_sessions.tsv"
SESSION_ID = "session_id"
#: BIDS column names of age and sex in participants.tsv (and of age in sessions.tsv).
BIDS_AGE = "age"
BIDS_SEX = "sex"
#: Entity prefixes and the T1w suffix of BIDS file names.
SUBJECT_PREFIX = "sub-"
SESSION_PREFIX = "ses-"
#: Joins the values of several site fields into one site id.
SITE_JOIN = "_"

#: Default mapping of sex values (keys lower-case) to the manifest's F/M.
SEX_MAP: Mapping[str, Sex] = {
    "f": Sex.FEMALE, "female": Sex.FEMALE, "0": Sex.FEMALE,
    "m": Sex.MALE, "male": Sex.MALE, "1": Sex.MALE,
}


@dataclass(frozen=True)
class SiteFrom:
    """Where each scan's site is read: a :class:`~harmonize.keys.SiteSource` and the fields to join.

    Args:
        source: ``participants``, ``sessions`` or ``sidecar``.
        fields: the columns (participants, sessions) or JSON fields (sidecar); their values are joined
            with ``_`` into the site id.

    Raises:
        ConfigError: an unknown source and no field, both at once.
    """

    source: str
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        source, problem = option_value("--site-from source", self.source, SiteSource)
        fields = tuple(str(f).strip() for f in self.fields if str(f).strip())
        example = f"{source or 'participants'}:{'Manufacturer' if source == SiteSource.SIDECAR else 'scanner'}"
        raise_problems("--site-from", [problem, None if fields else f"name at least one field, e.g. {example}"])
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "fields", fields)

    @classmethod
    def parse(cls, text: str) -> SiteFrom:
        """``"sidecar:Manufacturer,ManufacturersModelName"`` -> ``SiteFrom("sidecar", (...))``.

        Raises:
            ConfigError: text without ``SOURCE:FIELDS``, an unknown source or no field.
        """
        source, sep, fields = str(text).partition(":")
        if not sep:
            raise ConfigError(f"--site-from '{text}' is not SOURCE:FIELDS; e.g. participants:scanner, "
                              "sessions:scanner or sidecar:Manufacturer,ManufacturersModelName")
        return cls(source.strip(), tuple(fields.split(",")))

    def __str__(self) -> str:
        return f"{self.source}:{','.join(self.fields)}"


@dataclass(frozen=True)
class _Participant:
    line: int
    age: float | None
    age_problem: str | None
    sex: Sex
    site: str | None
    extra: dict[str, str]


@dataclass(frozen=True)
class _Sessions:
    path: Path
    header: list[str]
    rows: dict[str, tuple[int, dict[str, str]]]


def _where(path: Path, line: int, pid: str | None = None, column: str | None = None) -> str:
    where = f"{path} row {line}"
    if pid:
        where += f" ({pid})"
    if column:
        where += f", column '{column}'"
    return where


def _parse_age(text: str, where: str) -> tuple[float | None, str | None]:
    """``(age, None)`` or ``(None, problem)``."""
    try:
        age = float(text)
        if not np.isfinite(age) or age < 0:
            raise ValueError(text)
    except ValueError:
        return None, f"{where}: '{text}' is not an age in years"
    return age, None


def _join_site(values: Sequence[str]) -> str:
    return SITE_JOIN.join(values)


def _read_tsv(path: Path, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, cells)`` of the non-empty rows of a BIDS TSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read {path} as UTF-8 text: {err}") from err
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    if not rows:
        raise ManifestError(f"{path} is empty: it needs a header row ({what})")
    header = [h.strip() for h in rows[0]]
    body = [(line, cells) for line, cells in enumerate(rows[1:], start=2) if any(c.strip() for c in cells)]
    return header, body


def _read_participants(bids_dir: Path, site_from: SiteFrom, age_column: str, sex_column: str,
                       extra_columns: Sequence[str], sex_map: Mapping[str, Sex],
                       problems: list[str]) -> tuple[dict[str, _Participant], set[str]]:
    """Read participants.tsv: the usable rows ``{participant_id: _Participant}`` and every id listed."""
    path = bids_dir / PARTICIPANTS_FILE
    site_columns = site_from.fields if site_from.source == SiteSource.PARTICIPANTS else ()
    if not path.is_file():
        raise ManifestError(f"{path} not found: a BIDS dataset needs a participants.tsv with participant_id, "
                            f"{age_column} and {sex_column}" +
                            (f" and the site column(s) {', '.join(site_columns)}" if site_columns else ""))
    header, body = _read_tsv(path, f"participant_id, {age_column}, ...")
    wanted = (PARTICIPANT_ID, *site_columns, age_column, sex_column, *extra_columns)
    missing = [c for c in dict.fromkeys(wanted) if c not in header]
    if missing:
        raise ManifestError(f"{path} has no column {', '.join(repr(c) for c in missing)}; its columns are: "
                            f"{', '.join(header)} (choose the site with --site-from, e.g. participants:COLUMN, "
                            "sessions:COLUMN or sidecar:Manufacturer)")
    col = {name: header.index(name) for name in wanted}
    participants: dict[str, _Participant] = {}
    first_line: dict[str, int] = {}
    for line, cells in body:
        if len(cells) != len(header):
            problems.append(f"{_where(path, line)}: has {len(cells)} tab-separated fields but the header has "
                            f"{len(header)}")
            continue
        cells = [c.strip() for c in cells]
        pid = cells[col[PARTICIPANT_ID]]
        if not pid or pid == BIDS_NA:
            problems.append(f"{_where(path, line, column=PARTICIPANT_ID)}: the participant id is empty")
            continue
        if not pid.startswith(SUBJECT_PREFIX):
            pid = SUBJECT_PREFIX + pid
        if pid in first_line:
            problems.append(f"{_where(path, line, pid)}: '{pid}' is also listed in row {first_line[pid]}")
            continue
        first_line[pid] = line
        row_problems = []
        site = None
        if site_columns:
            values = [cells[col[c]] for c in site_columns]
            for column, value in zip(site_columns, values):
                if not value or value == BIDS_NA:
                    row_problems.append(f"{_where(path, line, pid, column)}: the site is missing ('{value}')")
            site = _join_site(values)
        age, age_problem = _parse_age(cells[col[age_column]], _where(path, line, pid, age_column))
        sex_text = cells[col[sex_column]]
        sex = sex_map.get(sex_text.lower())
        if sex is None:
            known = ", ".join(sorted(sex_map))
            row_problems.append(f"{_where(path, line, pid, sex_column)}: '{sex_text}' is not a known sex value "
                                f"(known: {known}); map it with sex_map / --sex-map, e.g. 2=F")
        problems.extend(row_problems)
        if not row_problems:
            extra = {c: "" if cells[col[c]] == BIDS_NA else cells[col[c]] for c in extra_columns}
            participants[pid] = _Participant(line, age, age_problem, sex, site, extra)
    return participants, set(first_line)


def _read_sessions(bids_dir: Path, pid: str, site_from: SiteFrom, problems: list[str]) -> _Sessions | None:
    """A participant's ``sub-XX_sessions.tsv`` (None when it has none), rows keyed by ``ses-`` id."""
    path = bids_dir / pid / f"{pid}{SESSIONS_SUFFIX}"
    if not path.is_file():
        return None
    header, body = _read_tsv(path, f"{SESSION_ID}, {BIDS_AGE}, ...")
    needed = [SESSION_ID, *(site_from.fields if site_from.source == SiteSource.SESSIONS else ())]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ManifestError(f"{path} has no column {', '.join(repr(c) for c in missing)}; its columns are: "
                            f"{', '.join(header)}")
    rows: dict[str, tuple[int, dict[str, str]]] = {}
    for line, cells in body:
        if len(cells) != len(header):
            problems.append(f"{_where(path, line)}: has {len(cells)} tab-separated fields but the header has "
                            f"{len(header)}")
            continue
        values = dict(zip(header, (c.strip() for c in cells)))
        ses = values[SESSION_ID]
        if not ses.startswith(SESSION_PREFIX):
            ses = SESSION_PREFIX + ses
        if ses in rows:
            problems.append(f"{_where(path, line, column=SESSION_ID)}: '{ses}' is also listed in row {rows[ses][0]}")
            continue
        rows[ses] = (line, values)
    return _Sessions(path, header, rows)


