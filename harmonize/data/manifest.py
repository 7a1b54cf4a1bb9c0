"""Manifests: the CSV that lists a cohort's scans (one row per scan), read, summarised and validated.

A manifest has a header row naming its columns: ``subject_id``, ``image``, ``site``, ``age``, ``sex`` and
``split`` are required; ``label`` and ``forget`` are optional; any further column is kept, and those named as
confounds are parsed as categorical or continuous values. The columns, their types and allowed values are
documented once, in the JSON Schema ``manifest_schema.json`` next to this module (see :func:`schema_path`),
and :func:`read_manifest` takes its required columns, types, ranges and enumerations from that file.

Row numbers: every message names a row by its **line number in the CSV file**, counting the header as line
1, so the first scan is row 2. This is the row number a spreadsheet shows and the line a text editor shows
(for a quoted cell that spans lines, the line where the row starts). The returned DataFrame keeps it as its
index, named :data:`ROW`.

Two levels of checking:

- :func:`read_manifest` checks the table only (columns, types, values, duplicate ids) and raises
  :class:`~harmonize.errors.ManifestError` listing every problem. It is fast and loads no image.
- :func:`validate_manifest` does the same, then loads every image and label once (header + data) and returns
  a :class:`ValidationReport` with every problem, warnings about the design (one site, a site without
  training scans, ...) and a :class:`ManifestSummary`.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmonize.errors import ConfigError, ManifestError
from harmonize.io import write_text_atomic
from harmonize.keys import ConfoundKind, Keys, Split

__all__ = [
    "ROW",
    "SCHEMA_FILENAME",
    "TISSUE_CLASSES",
    "ManifestProblem",
    "ManifestSummary",
    "ValidationReport",
    "format_schema",
    "header_problems",
    "load_schema",
    "overlap_range",
    "parse_confounds",
    "read_manifest",
    "schema_path",
    "summarize",
    "validate_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

#: Name of the DataFrame index that holds each row's line number in the CSV (header = line 1).
ROW = "row"
#: File name of the JSON Schema of one manifest row, shipped next to this module.
SCHEMA_FILENAME = "manifest_schema.json"
#: Key of ``DataFrame.attrs`` holding ``{confound column: ConfoundKind}``.
CONFOUNDS_ATTR = "confounds"
#: Key of ``DataFrame.attrs`` holding the manifest's path.
MANIFEST_ATTR = "manifest"

#: Cell texts accepted for a boolean column (case-insensitive); an empty cell is false.
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "f", ""})
#: Largest difference (mm) between an image's and its label's affine entries that still counts as equal.
AFFINE_ATOL = 1e-3
#: A site with fewer scans than this gets a warning (the domain head cannot learn it).
MIN_SCANS_PER_SITE = 2
#: Threads used by :func:`validate_manifest` to load images when ``num_workers`` is not given.
DEFAULT_WORKERS = 4
#: How many example values a message quotes at most.
MAX_EXAMPLES = 3
#: Classes a label map may hold: 0 background, 1 CSF, 2 grey matter, 3 white matter
#: (:data:`harmonize.data.templates.TISSUE_NAMES` plus the background).
TISSUE_CLASSES = 4
#: Longest subject id, in UTF-8 bytes: outputs are named after it, and a file name holds at most 255 bytes
#: (the temporary files of :mod:`harmonize.io` add about 40).
MAX_SUBJECT_ID_BYTES = 200
#: Largest expansion of deflate (zlib's documented limit is about 1032:1): bounds a .gz file's content.
MAX_DEFLATE_RATIO = 1032
#: Smallest absolute determinant of an affine's 3x3 part (mm^3 per voxel) that counts as non-singular.
MIN_VOXEL_VOLUME = 1e-6
#: The fix given for a scan without usable geometry.
GEOMETRY_FIX = ("fix the header (e.g. re-export it from DICOM with dcm2niix, or set the voxel size and "
                "orientation with fslorient / nibabel's set_sform)")

_JSON_NUMBER = "number"
_JSON_BOOLEAN = "boolean"
_JSON_STRING = "string"
_JSON_NULL = "null"


# --------------------------------------------------------------------------------------------------------
# problems and the schema
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestProblem:
    """One thing wrong with a manifest, located as precisely as possible.

    Attributes:
        message: what is wrong and, where useful, how to fix it.
        row: line number of the row in the CSV (header = 1), or None for the whole file.
        column: the column concerned, or None.
        file: the image or label file concerned (absolute path), or None.
    """

    message: str
    row: int | None = None
    column: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.file is not None:
            where.append(f"file '{self.file}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


def schema_path() -> Path:
    """Return the path of the JSON Schema (draft 2020-12) of one manifest row."""
    return Path(__file__).with_name(SCHEMA_FILENAME)


def load_schema() -> dict[str, Any]:
    """Load the JSON Schema of one manifest row (a fresh dict on every call)."""
    with open(schema_path(), encoding="utf-8") as handle:
        return json.load(handle)


def _types(spec: Mapping[str, Any]) -> tuple[str, ...]:
    kind = spec.get("type", _JSON_STRING)
    return (kind,) if isinstance(kind, str) else tuple(kind)


def format_schema() -> str:
    """Describe the manifest columns (from the schema) as text: name, required or optional, type, description.

    Returns:
        A multi-line text starting with the schema's path.
    """
    schema = load_schema()
    required = set(schema.get("required", ()))
    lines = [f"Manifest schema: {schema_path()}", "", "Columns (one row per scan):"]
    for name, spec in schema["properties"].items():
        kinds = [t for t in _types(spec) if t != _JSON_NULL]
        kind = " or ".join(kinds)
        if "enum" in spec:
            kind += " in {" + ", ".join(spec["enum"]) + "}"
        if "minimum" in spec or "maximum" in spec:
            kind += f" in [{spec.get('minimum', '-inf')}, {spec.get('maximum', 'inf')}]"
        status = "required" if name in required else "optional"
        lines.append(f"  {name:<11} {status:<9} {kind}")
        lines.append(f"  {'':<11} {spec.get('description', '')}")
    extra = schema.get("additionalProperties", {})
    if isinstance(extra, Mapping):
        lines.append(f"  {'(other)':<11} {'optional':<9} {extra.get('description', '')}")
    return "\n".join(lines)


def parse_confounds(confounds: Sequence[str] | Mapping[str, str | None]) -> dict[str, ConfoundKind | None]:
    """Parse confound declarations into ``{column: kind or None}`` (None: inferred from the values).

    Args:
        confounds: column names, each optionally with a kind after a colon (``"scanner:categorical"``,
            ``"tiv:continuous"``), or a mapping from column name to kind (or None).

    Returns:
        The declared kinds, in the given order.

    Raises:
        ConfigError: an empty name or an unknown kind.
    """
    items: Iterable[tuple[str, str | None]]
    if isinstance(confounds, Mapping):
        items = confounds.items()
    elif isinstance(confounds, str):
        raise ConfigError(f"confounds must be a list of column names, not the string {confounds!r}")
    else:
        items = ((c.partition(":")[0], c.partition(":")[2] or None) for c in confounds)
    parsed: dict[str, ConfoundKind | None] = {}
    problems = []
    choices = ", ".join(k.value for k in ConfoundKind)
    for name, kind in items:
        name = name.strip()
        if not name:
            problems.append("a confound has an empty column name")
            continue
        if kind is None or not str(kind).strip():
            parsed[name] = None
        elif str(kind).strip().lower() in {k.value for k in ConfoundKind}:
            parsed[name] = ConfoundKind(str(kind).strip().lower())
        else:
            problems.append(f"confound '{name}': kind '{kind}' is not one of {choices}")
    if problems:
        raise ConfigError("invalid confound declarations (write name or name:kind)", problems=problems)
    return parsed


# --------------------------------------------------------------------------------------------------------
# reading the table
# --------------------------------------------------------------------------------------------------------
@dataclass
class _Parsed:
    frame: pd.DataFrame | None
    problems: list[ManifestProblem] = field(default_factory=list)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    for cand in candidates:
        if cand.strip().lower() == name.lower():
            return f" (did you mean '{cand}'?)"
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _problem_order(problem: ManifestProblem) -> tuple[bool, int]:
    """Sort key: whole-file problems first, then by row (stable within a row)."""
    return problem.row is not None, problem.row or 0


def _read_rows(path: Path, problems: list[ManifestProblem]) -> tuple[list[str], list[tuple[int, list[str]]]] | None:
    """Read the header and the data rows (with the line each starts on); None when the file is unusable."""
    if "\x00" in str(path):
        problems.append(ManifestProblem(f"the manifest path {str(path)!r} holds a NUL byte, which no path can hold"))
        return None
    if not path.exists():
        problems.append(ManifestProblem(f"manifest file not found: {path}"))
        return None
    if not path.is_file():
        problems.append(ManifestProblem(f"manifest path is not a file: {path}"))
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        problems.append(ManifestProblem(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                                        "save it as a UTF-8 CSV"))
        return None
    except OSError as err:
        problems.append(ManifestProblem(f"cannot read {path}: {err}"))
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    previous_line = 0
    try:
        for cells in reader:
            start = previous_line + 1
            previous_line = reader.line_num
            if cells and any(c.strip() for c in cells):
                rows.append((start, cells))
    except csv.Error as err:
        problems.append(ManifestProblem(f"{path} is not a valid CSV file: {err}", row=previous_line + 1))
        return None
    if not rows:
        problems.append(ManifestProblem(f"{path} is empty: it needs a header row and one row per scan"))
        return None
    (_, header), data = rows[0], rows[1:]
    header = [h.strip() for h in header]
    if len(header) == 1 and any(sep in header[0] for sep in ("\t", ";")):
        sep = "tab" if "\t" in header[0] else "semicolon"
        problems.append(ManifestProblem(f"the header is one column with {sep}s in it; a manifest is "
                                        "comma-separated: save it as CSV with commas", row=1))
        return None
    for name, count in Counter(header).items():
        if count > 1:
            problems.append(ManifestProblem(f"the header names column '{name}' {count} times", row=1))
    if "" in header:
        problems.append(ManifestProblem(f"column {header.index('') + 1} of the header has no name", row=1))
    return header, data


def _parse_number(text: str, spec: Mapping[str, Any]) -> tuple[float | None, str | None]:
    try:
        value = float(text)
    except ValueError:
        return None, f"'{text}' is not a number"
    if not math.isfinite(value):
        return None, f"'{text}' is not a finite number"
    low, high = spec.get("minimum"), spec.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        return None, f"{text} is outside the allowed range [{low}, {high}]"
    return value, None


def _parse_cell(text: str, spec: Mapping[str, Any], folder: Path, column: str) -> tuple[Any, str | None]:
    """Parse one cell by its schema entry; return (value, problem message or None)."""
    kinds = _types(spec)
    if text == "":
        if _JSON_NULL in kinds:
            return None, None
        if _JSON_BOOLEAN in kinds:
            return False, None
        return None, "is empty"
    if _JSON_NUMBER in kinds:
        value, message = _parse_number(text, spec)
        if message and _JSON_NULL in kinds:
            message += "; write a plain number (e.g. 42.5), or leave the cell empty if it is unknown"
        elif message:
            message += "; write a plain number (e.g. 42.5)"
        return value, message
    if _JSON_BOOLEAN in kinds:
        if text.lower() in TRUE_WORDS:
            return True, None
        if text.lower() in FALSE_WORDS:
            return False, None
        return None, f"'{text}' is not true or false (write true/false, 1/0 or yes/no)"
    if "enum" in spec and text not in spec["enum"]:
        allowed = ", ".join(f"'{v}'" for v in spec["enum"])
        return None, f"'{text}' is not one of {allowed}{_suggest(text, spec['enum'])}"
    if len(text) < spec.get("minLength", 0):
        return None, "is empty"
    if "\x00" in text:
        return None, "holds a NUL byte, which no file name or path can hold; remove it"
    if column == Keys.SUBJECT_ID and len(text.encode("utf-8")) > MAX_SUBJECT_ID_BYTES:
        return None, (f"is {len(text.encode('utf-8'))} bytes long; outputs are named after the subject id and a "
                      f"file name holds at most 255 bytes: use an id of at most {MAX_SUBJECT_ID_BYTES}")
    if column == Keys.SITE:
        value, message = _parse_number(text, {})
        if message is None and not float(value).is_integer():
            return None, (f"'{text}' is a fractional number; a site is a name or an integer id, and a fraction "
                          "would be rounded or truncated: give each site a name (e.g. 'siteA') or an integer")
        if message is None and any(c in text for c in ".eE"):  # '2.0', '2e0': zero-padded '007' stays a name
            return None, (f"'{text}' is an integer written as '{text}'; write integer site ids plainly "
                          f"('{int(value)}'), so that one site is not read as two")
    if column in (Keys.IMAGE, Keys.LABEL):
        return os.path.normpath(os.path.join(folder, os.path.expanduser(text))), None
    return text, None


def _parse_confound(name: str, kind: ConfoundKind | None, cells: list[tuple[int, str]],
                    problems: list[ManifestProblem]) -> tuple[ConfoundKind, list[Any]]:
    """Parse a declared confound column; infer its kind (all numbers: continuous) when not given."""
    values: list[Any] = []
    if kind is None:
        filled = [t for _, t in cells if t]
        numeric = bool(filled) and all(_parse_number(t, {})[1] is None for t in filled)
        kind = ConfoundKind.CONTINUOUS if numeric else ConfoundKind.CATEGORICAL
    for row, text in cells:
        if not text:
            problems.append(ManifestProblem(f"is empty; confound '{name}' needs a value in every row",
                                            row=row, column=name))
            values.append(None)
        elif kind == ConfoundKind.CONTINUOUS:
            value, message = _parse_number(text, {})
            if message:
                problems.append(ManifestProblem(f"{message} (confound '{name}' is continuous)", row=row, column=name))
            values.append(value)
        else:
            values.append(text)
    return kind, values


def _parse_manifest(path: str | os.PathLike, confounds: Sequence[str] | Mapping[str, str | None],
                    require: Sequence[str]) -> _Parsed:
    """Read and check the table; collect every problem; build the frame from the rows that have the right width."""
    path = Path(path).expanduser().absolute()
    declared = parse_confounds(confounds)
    parsed = _Parsed(frame=None)
    problems = parsed.problems
    table = _read_rows(path, problems)
    if table is None:
        return parsed
    header, data = table
    schema = load_schema()
    properties: dict[str, Any] = schema["properties"]
    folder = path.parent

    wanted = list(dict.fromkeys([*schema.get("required", ()), *require, *declared]))
    for name in wanted:
        if name not in header:
            why = "a required column" if name in schema.get("required", ()) else (
                "a declared confound" if name in declared else "required for this task")
            problems.append(ManifestProblem(f"the header has no column '{name}' ({why}){_suggest(name, header)}; "
                                            f"the columns are: {', '.join(header)}", row=1))
    good_rows: list[tuple[int, list[str]]] = []
    for row, cells in data:
        if len(cells) != len(header):
            problems.append(ManifestProblem(f"has {len(cells)} fields but the header has {len(header)} "
                                            "(a missing or extra comma? quote cells that contain commas)", row=row))
        else:
            good_rows.append((row, [c.strip() for c in cells]))
    if not data:
        problems.append(ManifestProblem(f"{path} has a header but no data rows: add one row per scan"))
    if not good_rows:
        return parsed

    lines = [row for row, _ in good_rows]
    columns: dict[str, list[Any]] = {}
    kinds: dict[str, ConfoundKind] = {}
    for j, name in enumerate(header):
        cells = [(row, row_cells[j]) for row, row_cells in good_rows]
        if name in properties:
            spec = properties[name]
            values = []
            for row, text in cells:
                value, message = _parse_cell(text, spec, folder, name)
                if message:
                    problems.append(ManifestProblem(message, row=row, column=name))
                values.append(value)
            columns[name] = values
            if name in declared:
                kinds[name] = (ConfoundKind.CONTINUOUS if _JSON_NUMBER in _types(spec)
                               else ConfoundKind.CATEGORICAL)
                if declared[name] not in (None, kinds[name]):
                    problems.append(ManifestProblem(f"is declared a {declared[name].value} confound but the "
                                                    f"schema makes it {kinds[name].value}", column=name))
        elif name in declared:
            kinds[name], columns[name] = _parse_confound(name, declared[name], cells, problems)
        else:
            columns[name] = [text for _, text in cells]

    if Keys.SUBJECT_ID in columns:
        first_row: dict[str, int] = {}
        for row, sid in zip(lines, columns[Keys.SUBJECT_ID]):
            if sid is None:
                continue
            if sid in first_row:
                problems.append(ManifestProblem(f"'{sid}' is also the id of row {first_row[sid]}; subject ids "
                                                "must be unique (give each session its own id)",
                                                row=row, column=Keys.SUBJECT_ID))
            else:
                first_row[sid] = row

    frame = pd.DataFrame(columns, index=pd.Index(lines, name=ROW))
    for name in columns:
        schema_number = name in properties and _JSON_NUMBER in _types(properties[name])
        if schema_number or kinds.get(name) == ConfoundKind.CONTINUOUS:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif name in properties and _JSON_BOOLEAN in _types(properties[name]):
            frame[name] = [False if pd.isna(v) else bool(v) for v in frame[name]]
    frame.attrs[CONFOUNDS_ATTR] = kinds
    frame.attrs[MANIFEST_ATTR] = str(path)
    parsed.frame = frame
    problems.sort(key=_problem_order)
    return parsed


def read_manifest(path: str | os.PathLike, confounds: Sequence[str] | Mapping[str, str | None] = (),
                  require: Sequence[str] = ()) -> pd.DataFrame:
    """Read a manifest CSV and check its table (columns, types, values, unique ids); no image is loaded.

    Args:
        path: the manifest CSV.
        confounds: extra columns that are confounds, as names or ``name:kind`` (kind ``categorical`` or
            ``continuous``; without a kind, a column whose values are all numbers is continuous). A schema
            column (``age``, ``sex``, ``site``) may be named too; its kind follows the schema.
        require: further columns this use needs (e.g. ``[Keys.LABEL]`` for segmentation).

    Returns:
        One row per scan, indexed by the row's line number in the CSV (index name :data:`ROW`, header =
        line 1). ``image`` and ``label`` are absolute, normalised path strings (relative paths are taken
        from the manifest's folder; an empty ``label`` cell is missing). ``age`` and continuous confounds
        are floats, ``forget`` is bool, every other column is text (``subject_id`` ``'001'`` stays text).
        ``frame.attrs['confounds']`` maps each declared confound to its
        :class:`~harmonize.keys.ConfoundKind`; ``frame.attrs['manifest']`` is the manifest's path.

    Raises:
        ManifestError: listing every problem found (missing file or columns, bad values, duplicate ids).
        ConfigError: a confound declaration is malformed.
    """
    parsed = _parse_manifest(path, confounds, require)
    if parsed.problems:
        raise ManifestError(f"manifest {path} has {len(parsed.problems)} problem(s); fix them and retry "
                            "(rows are numbered as lines of the file, header = row 1)",
                            problems=[str(p) for p in parsed.problems])
    assert parsed.frame is not None
    logger.debug("read %d scans from %s", len(parsed.frame), path)
    return parsed.frame


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False,
                   relative_paths: bool = True) -> Path:
    """Write a manifest CSV atomically (temporary file in the same folder, then rename).

    Args:
        frame: one row per scan with the manifest columns (extra columns are written too; the index is not).
        path: the CSV to write.
        overwrite: replace an existing file; without it an existing file is an error.
        relative_paths: write ``image``/``label`` relative to the CSV's folder, so the cohort can move.

    Returns:
        The path written.

    Raises:
        ManifestError: the file exists and ``overwrite`` is false, or its folder does not exist.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        raise ManifestError(f"{path} already exists; choose another output path or pass overwrite "
                            "(--overwrite on the command line)")
    if not path.parent.is_dir():
        raise ManifestError(f"the folder of the output {path} does not exist; create it first")
    out = frame.copy()
    if relative_paths:
        for column in (Keys.IMAGE, Keys.LABEL):
            if column in out:
                out[column] = [None if pd.isna(p) else os.path.relpath(p, path.parent) for p in out[column]]
    if Keys.FORGET in out:
        out[Keys.FORGET] = out[Keys.FORGET].map(lambda v: "true" if bool(v) else "false")
    # Plain UTF-8 text whatever the name (read_manifest reads text), so pandas never infers a compression.
    return write_text_atomic(path, out.to_csv(index=False, lineterminator="\n"))


# --------------------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------------------
def overlap_range(frame: pd.DataFrame, key: str = Keys.AGE, by: str = Keys.SITE) -> tuple[float, float] | None:
    """Return the range of ``key`` that every group of ``by`` covers (Dinsdale et al.'s biased-data overlap).

    The overlap is [max of the per-group minima, min of the per-group maxima]. Missing values are ignored.

    Args:
        frame: a manifest frame.
        key: the continuous column (default age).
        by: the grouping column (default site).

    Returns:
        ``(low, high)``, or None when the frame is empty or the ranges do not overlap.
    """
    values = frame[[by, key]].dropna()
    if values.empty:
        return None
    groups = values.groupby(by, observed=True)[key]
    low, high = float(groups.min().max()), float(groups.max().min())
    return (low, high) if low <= high else None


@dataclass(frozen=True)
class ManifestSummary:
    """What a manifest holds.

    Attributes:
        n_scans: number of rows.
        counts: ``{site: {split: number of scans}}`` (every split listed, zero included).
        age_ranges: ``{site: (min age, max age)}``.
        overlap: the age range all sites share, or None.
        n_labelled: rows with a label.
        n_forget: rows marked ``forget``.
        confounds: ``{column: kind}`` of the declared confounds.
    """

    n_scans: int
    counts: dict[str, dict[str, int]]
    age_ranges: dict[str, tuple[float, float]]
    overlap: tuple[float, float] | None
    n_labelled: int = 0
    n_forget: int = 0
    confounds: dict[str, str] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        """The sites, sorted."""
        return list(self.counts)

    def format(self) -> str:
        """The summary as a small text table."""
        splits = [s.value for s in Split]
        lines = [f"{self.n_scans} scans, {len(self.counts)} site(s), {self.n_labelled} with a label, "
                 f"{self.n_forget} marked forget"]
        width = max([len("site"), len("all"), *(len(s) for s in self.counts)])
        head = f"  {'site':<{width}} " + " ".join(f"{s:>5}" for s in splits) + f" {'total':>6}  age range"
        lines.append(head)
        for site, per_split in self.counts.items():
            ages = self.age_ranges.get(site)
            age = f"{ages[0]:.1f}-{ages[1]:.1f}" if ages else "-"
            lines.append(f"  {site:<{width}} " + " ".join(f"{per_split[s]:>5}" for s in splits)
                         + f" {sum(per_split.values()):>6}  {age}")
        totals = {s: sum(c[s] for c in self.counts.values()) for s in splits}
        lines.append(f"  {'all':<{width}} " + " ".join(f"{totals[s]:>5}" for s in splits) + f" {self.n_scans:>6}")
        overlap = f"{self.overlap[0]:.1f}-{self.overlap[1]:.1f}" if self.overlap else "none"
        lines.append(f"age range shared by all sites: {overlap}")
        if self.confounds:
            lines.append("confounds: " + ", ".join(f"{k} ({v})" for k, v in self.confounds.items()))
        return "\n".join(lines)


def summarize(frame: pd.DataFrame) -> ManifestSummary:
    """Summarise a manifest frame: scans per site and split, age range per site, the shared age range.

    Args:
        frame: as returned by :func:`read_manifest` (rows with a missing site or split are left out of the
            per-site counts).

    Returns:
        The summary.
    """
    counts: dict[str, dict[str, int]] = {}
    age_ranges: dict[str, tuple[float, float]] = {}
    if Keys.SITE in frame:
        for site in sorted(frame[Keys.SITE].dropna().unique(), key=str):
            rows = frame[frame[Keys.SITE] == site]
            split_col = rows[Keys.SPLIT] if Keys.SPLIT in rows else pd.Series(dtype=object)
            counts[str(site)] = {s.value: int((split_col == s.value).sum()) for s in Split}
            if Keys.AGE in rows and rows[Keys.AGE].notna().any():
                age_ranges[str(site)] = (float(rows[Keys.AGE].min()), float(rows[Keys.AGE].max()))
    overlap = overlap_range(frame) if {Keys.SITE, Keys.AGE} <= set(frame.columns) else None
    n_labelled = int(frame[Keys.LABEL].notna().sum()) if Keys.LABEL in frame else 0
    n_forget = int(frame[Keys.FORGET].sum()) if Keys.FORGET in frame else 0
    kinds = {k: str(v) for k, v in frame.attrs.get(CONFOUNDS_ATTR, {}).items()}
    return ManifestSummary(len(frame), counts, age_ranges, overlap, n_labelled, n_forget, kinds)


# --------------------------------------------------------------------------------------------------------
# validation with images
# --------------------------------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    """The outcome of :func:`validate_manifest`.

    Attributes:
        manifest: the manifest's path.
        problems: what must be fixed before the manifest can be used (each names row, column and file).
        warnings: what is allowed but probably not intended (e.g. a site without training scans).
        summary: what the manifest holds, or None when the table could not be read at all.
        n_files_checked: images and labels loaded.
        images_checked: False when the files were not loaded (``check_images=False``).
    """

    manifest: Path
    problems: list[ManifestProblem] = field(default_factory=list)
    warnings: list[ManifestProblem] = field(default_factory=list)
    summary: ManifestSummary | None = None
    n_files_checked: int = 0
    images_checked: bool = True

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def format(self) -> str:
        """The report as text: summary, problems, warnings and a verdict."""
        lines = [f"Manifest: {self.manifest}"]
        if self.summary is not None:
            lines.append(self.summary.format())
        if self.summary is not None:
            lines.append(f"image and label files loaded: {self.n_files_checked}" if self.images_checked
                         else "images and labels not loaded (table checks only)")
        if self.problems:
            lines.append(f"Problems ({len(self.problems)}):")
            lines.extend(f"  - {p}" for p in self.problems)
        if self.warnings:
            lines.append(f"Warnings ({len(self.warnings)}):")
            lines.extend(f"  - {w}" for w in self.warnings)
        lines.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s) "
                     "(rows are numbered as lines of the file, header = row 1)")
        return "\n".join(lines)

    def raise_for_problems(self) -> None:
        """Raise :class:`~harmonize.errors.ManifestError` listing every problem, if there is any."""
        if self.problems:
            raise ManifestError(f"manifest {self.manifest} has {len(self.problems)} problem(s)",
                                problems=[str(p) for p in self.problems])


@dataclass
class _Volume:
    shape: tuple[int, ...]
    affine: np.ndarray


def _stored_data_bytes(path: str, offset: int) -> tuple[int, bool]:
    """Bytes of voxel data a NIfTI file can hold after ``offset``, and whether that is exact.

    A plain file holds exactly its size less the offset. A compressed file is not decompressed: deflate expands
    at most :data:`MAX_DEFLATE_RATIO` times, which bounds it (a gzip trailer's size field is not used: files
    of several gzip members, such as BGZF, carry the size of their last member only).
    """
    size = os.path.getsize(path)
    if path.endswith(".gz"):
        return MAX_DEFLATE_RATIO * size, False
    return size - offset, True


def _raw_header(path: str, loaded: Any) -> Any:
    """The header as stored: nibabel's loader silently sets a pixdim of 0 to 1 mm, which would hide the problem."""
    from nibabel.openers import ImageOpener
    from nibabel.spatialimages import HeaderDataError

    try:
        with ImageOpener(path) as handle:
            return type(loaded).from_fileobj(handle, check=False)
    except (OSError, EOFError, ValueError, TypeError, AttributeError, zlib.error, HeaderDataError) as err:
        logger.debug("reading the raw header of %s failed (%s); using nibabel's", path, err)
        return loaded


def header_problems(path: str, is_label: bool = False) -> list[str]:
    """Problems found in a NIfTI file's header alone, without reading its voxels.

    A header that cannot be read, an image that is not 3D, missing or degenerate geometry (both orientation
    codes 0, a zero or non-finite voxel size, a singular or non-finite affine), and a header that claims more
    voxels than the file holds (checked before any read, so that it is a message, not a memory error).

    Args:
        path: the image or label file (it exists).
        is_label: the file is a label map (the orientation codes may then be 0: it follows its image).

    Returns:
        One message per problem, without the file's name (the caller names it).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        img = nib.load(path)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [f"cannot be read as a NIfTI image (truncated or corrupt file?): {reason}"]
    header = _raw_header(path, img.header)
    shape = tuple(int(d) for d in img.shape)
    problems = []
    extra = shape[3:]
    if len(shape) < 3:
        problems.append(f"is {len(shape)}D (shape {shape}); harmonize needs 3D volumes: point this row at "
                        "the 3D NIfTI scan, not a slice or a 2D derivative")
    elif any(d != 1 for d in extra):
        problems.append(f"is {len(shape)}D with {int(np.prod(extra))} volumes (shape {shape}); give one 3D "
                        "volume per row (split the series, e.g. with fslsplit, and list each as its own row)")
    elif 1 in shape[:3]:
        problems.append(f"is a single slice (shape {shape}), not a 3D volume")
    zooms = np.asarray(header.get_zooms()[:3], dtype=float)
    codes = (int(header["qform_code"]), int(header["sform_code"])) if "qform_code" in header else (1, 1)
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms[: len(shape)] <= 0):
        problems.append(f"has voxel size {tuple(float(z) for z in zooms)} (pixdim): a size of 0 or less has no "
                        f"geometry, and harmonize would not know the scan's spacing; {GEOMETRY_FIX}")
    elif not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(affine[:3, :3]))) < MIN_VOXEL_VOLUME:
        problems.append("has a singular or non-finite affine (voxel-to-world matrix "
                        f"{np.round(affine[:3, :3], 3).tolist()}): it gives no voxel size or orientation; "
                        f"{GEOMETRY_FIX}")
    elif codes == (0, 0) and not is_label:
        problems.append(f"has no orientation (qform_code and sform_code are both 0): left and right, and the "
                        f"voxel-to-world mapping, are unknown; {GEOMETRY_FIX}")
    if len(shape) >= 3:
        try:
            itemsize = np.dtype(header.get_data_dtype()).itemsize
            offset = int(header.get_data_offset()) if hasattr(header, "get_data_offset") else 0
            if offset == 0 and getattr(header, "single_magic", None) == header.get("magic", None):
                offset = int(header.sizeof_hdr) + 4  # a single-file NIfTI: header and 4 extension bytes
            stored = _stored_data_bytes(path, offset)
        except (OSError, TypeError, ValueError):
            stored = None
        claimed = int(np.prod(shape, dtype=np.int64)) * itemsize
        if stored is not None and stored[0] < claimed:
            holds = (f"the file holds {max(stored[0], 0)} bytes of data" if stored[1] else
                     f"the compressed file ({os.path.getsize(path)} bytes) can hold at most {stored[0]} bytes")
            problems.append("cannot be read as a NIfTI image (truncated or corrupt file?): its header claims "
                            f"{int(np.prod(shape, dtype=np.int64))} voxels (shape {shape}, {claimed} bytes) but "
                            f"{holds}; copy or convert it again")
    return problems


def _load_volume(path: str, is_label: bool) -> tuple[_Volume | None, list[str]]:
    """Check one image's header, then load it (one data read); return its grid and the problems found."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    if not os.path.exists(path):
        return None, ["does not exist (relative paths in a manifest start from the manifest's folder)"]
    problems = header_problems(path, is_label)
    if problems:
        return None, problems
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, [f"cannot be read as a NIfTI image (truncated or corrupt file?): {reason}"]
    except MemoryError:
        return None, [f"its voxels (shape {img.shape}) do not fit in memory; check the header's dimensions"]
    shape = tuple(int(d) for d in data.shape)
    if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.complexfloating):
        n_nan = int(np.isnan(data).sum())
        n_inf = int(np.isinf(data).sum())
        if n_nan or n_inf:
            problems.append(f"has {n_nan} NaN and {n_inf} infinite voxel(s) of {data.size}; replace them "
                            "(e.g. with 0) before training")
        elif is_label and not np.array_equal(data, np.round(data)):
            sample = data[data != np.round(data)].ravel()[:MAX_EXAMPLES]
            problems.append(f"has non-integer values (e.g. {', '.join(f'{v:g}' for v in sample)}); a label map "
                            "holds integer class ids")
    if is_label and not problems and data.size and data.min() < 0:
        problems.append(f"has negative values (minimum {data.min():g}); a label map holds class ids >= 0")
    elif is_label and not problems and data.size and data.max() >= TISSUE_CLASSES:
        outside = np.unique(data[data >= TISSUE_CLASSES])[:MAX_EXAMPLES]
        problems.append(f"has values outside the tissue classes 0-{TISSUE_CLASSES - 1} (e.g. "
                        f"{', '.join(f'{v:g}' for v in outside)}); a label map holds 0 background, 1 CSF, 2 grey "
                        "matter, 3 white matter: relabel it")
    return _Volume(shape[:3], np.asarray(img.affine, dtype=float)), problems


def _check_row(row: int, image: str | None, label: str | None) -> list[ManifestProblem]:
    problems: list[ManifestProblem] = []
    volumes: dict[str, _Volume | None] = {}
    for column, path, is_label in ((Keys.IMAGE, image, False), (Keys.LABEL, label, True)):
        if path is None:
            continue
        volume, messages = _load_volume(path, is_label)
        volumes[column] = volume
        problems.extend(ManifestProblem(m, row=row, column=column, file=path) for m in messages)
    image_vol, label_vol = volumes.get(Keys.IMAGE), volumes.get(Keys.LABEL)
    if image_vol is not None and label_vol is not None:
        if image_vol.shape != label_vol.shape:
            problems.append(ManifestProblem(f"shape {label_vol.shape} differs from the image's {image_vol.shape}; "
                                            "the label must be on the image's grid", row=row, column=Keys.LABEL,
                                            file=label))
        elif not np.allclose(image_vol.affine, label_vol.affine, atol=AFFINE_ATOL):
            diff = float(np.abs(image_vol.affine - label_vol.affine).max())
            problems.append(ManifestProblem(f"affine differs from the image's (largest difference {diff:.3g}); "
                                            "resample the label onto the image's grid", row=row,
                                            column=Keys.LABEL, file=label))
    return problems


def _design_warnings(frame: pd.DataFrame, summary: ManifestSummary) -> list[ManifestProblem]:
    """Warnings about the study design (allowed, but probably not what the user wants)."""
    warnings = []
    if len(summary.counts) == 1:
        warnings.append(ManifestProblem(f"only one site ('{summary.sites[0]}') in the data: there is no scanner "
                                        "bias to unlearn (site-unlearning needs two or more sites)",
                                        column=Keys.SITE))
    for site, per_split in summary.counts.items():
        total = sum(per_split.values())
        if total < MIN_SCANS_PER_SITE:
            warnings.append(ManifestProblem(f"site '{site}' has only {total} scan(s); the domain head cannot "
                                            "learn a site from so few (merge it with a similar site or drop it)",
                                            column=Keys.SITE))
        if total and per_split[Split.TRAIN] == 0:
            warnings.append(ManifestProblem(f"site '{site}' has no '{Split.TRAIN.value}' scans; it can only serve "
                                            "as an unseen test site", column=Keys.SITE))
    if summary.counts and not any(c[Split.TRAIN] for c in summary.counts.values()):
        warnings.append(ManifestProblem(f"no row has split '{Split.TRAIN.value}': this manifest can only be "
                                        "used for evaluation", column=Keys.SPLIT))
    if len(summary.counts) > 1 and summary.age_ranges and summary.overlap is None:
        warnings.append(ManifestProblem("the sites' age ranges do not overlap: unlearning on the shared age "
                                        "range (biased-data experiment) is impossible", column=Keys.AGE))
    if Keys.FORGET in frame and len(frame) and bool(frame[Keys.FORGET].all()):
        warnings.append(ManifestProblem("every row is marked forget: nothing is left to retain",
                                        column=Keys.FORGET))
    elif Keys.FORGET in frame and Keys.SPLIT in frame:
        train = frame[Keys.SPLIT] == Split.TRAIN
        marked = frame[Keys.FORGET].astype(bool)
        outside = [str(r) for r in frame.index[marked & ~train]]
        if outside:
            shown = ", ".join(outside[:10]) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
            warnings.append(ManifestProblem(f"row(s) {shown} are marked forget but are not '{Split.TRAIN.value}' rows: "
                                            "a model never trained on them (harmonize forget refuses them)",
                                            column=Keys.FORGET))
        elif bool(train.any()) and bool(marked[train].all()):
            warnings.append(ManifestProblem("every training row is marked forget: nothing is left to retain",
                                            column=Keys.FORGET))
    return warnings


def validate_manifest(path: str | os.PathLike, confounds: Sequence[str] | Mapping[str, str | None] = (),
                      require: Sequence[str] = (), check_images: bool = True, num_workers: int | None = None,
                      progress: bool = True) -> ValidationReport:
    """Check a manifest fully: the table (as :func:`read_manifest`), every image and label, and the design.

    File checks, per row: the image (and label, if given) exists and reads as NIfTI (a truncated or corrupt
    file is a problem, not a crash); it is 3D (a 4D image whose extra dimensions are all 1, e.g. shape
    ``(X, Y, Z, 1)``, counts as 3D, because MONAI and TorchIO read that dimension as the channel; a 2D
    image, a single slice or a real 4D series is a problem); every voxel is finite; a label has the image's
    shape and affine (within :data:`AFFINE_ATOL`) and holds non-negative integers; no two rows share an image.

    Design checks are warnings, since they can be intended: one site only (nothing to unlearn), a site with
    fewer than :data:`MIN_SCANS_PER_SITE` scans, a site without training scans (usable only as an unseen
    test site), no training rows at all (evaluation only), sites whose age ranges do not overlap, every row
    marked forget.

    Args:
        path: the manifest CSV.
        confounds: declared confound columns (see :func:`read_manifest`).
        require: further required columns (e.g. ``[Keys.LABEL]``).
        check_images: load images and labels; False checks the table and the design only.
        num_workers: threads loading files (default :data:`DEFAULT_WORKERS`, at most the CPU count).
        progress: show progress while loading (a bar on a terminal, else a line per hundred scans).

    Returns:
        The report; ``report.ok`` is False when there is any problem.

    Raises:
        ConfigError: a confound declaration is malformed (an argument error, not a manifest problem).
    """
    parsed = _parse_manifest(path, confounds, require)
    report = ValidationReport(Path(path).expanduser().absolute(), list(parsed.problems))
    frame = parsed.frame
    if frame is None:
        return report
    report.summary = summarize(frame)
    report.warnings.extend(_design_warnings(frame, report.summary))
    if Keys.IMAGE in frame:
        first: dict[str, int] = {}
        for row, image in frame[Keys.IMAGE].dropna().items():
            if image in first:
                report.problems.append(ManifestProblem(f"the same image as row {first[image]}; each row must be "
                                                       "its own scan", row=int(row), column=Keys.IMAGE, file=image))
            else:
                first[image] = int(row)
    report.images_checked = check_images
    if not check_images or Keys.IMAGE not in frame:
        return report

    labels = frame[Keys.LABEL] if Keys.LABEL in frame else pd.Series(None, index=frame.index, dtype=object)
    jobs = [(int(row), None if pd.isna(image) else str(image), None if pd.isna(label) else str(label))
            for row, image, label in zip(frame.index, frame[Keys.IMAGE], labels)]
    workers = max(1, min(num_workers or DEFAULT_WORKERS, os.cpu_count() or 1, len(jobs)))
    from harmonize.progress import progress as show_progress

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: _check_row(*job), jobs)
        for found in show_progress(results, "checking images", unit="scan", total=len(jobs), enabled=progress):
            report.problems.extend(found)
    report.n_files_checked = sum((image is not None) + (label is not None) for _, image, label in jobs)
    report.problems.sort(key=_problem_order)
    logger.info("checked %d files of %s: %d problem(s), %d warning(s)", report.n_files_checked, path,
                len(report.problems), len(report.warnings))
    return report
