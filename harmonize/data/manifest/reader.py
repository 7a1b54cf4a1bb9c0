"""Reading a manifest's table: the CSV's rows, each cell parsed by its column's schema entry, every problem listed.

Row numbers: every message names a row by its **line number in the CSV file**, counting the header as line
1, so the first scan is row 2. This is the row number a spreadsheet shows and the line a text editor shows
(for a quoted cell that spans lines, the line where the row starts). The returned DataFrame keeps it as its
index, named :data:`~harmonize.data.manifest.schema.ROW`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harmonize.data.manifest.problem import ManifestProblem, problem_order, suggest
from harmonize.data.manifest.schema import (
    CONFOUNDS_ATTR,
    JSON_BOOLEAN,
    JSON_NULL,
    JSON_NUMBER,
    MANIFEST_ATTR,
    ROW,
    json_types,
    load_schema,
    parse_confounds,
)
from harmonize.errors import ManifestError
from harmonize.keys import ConfoundKind, Keys

__all__ = ["FALSE_WORDS", "MAX_SUBJECT_ID_BYTES", "TRUE_WORDS", "ParsedTable", "parse_table", "read_manifest"]

logger = logging.getLogger(__name__)

#: Cell texts accepted for a boolean column (case-insensitive); an empty cell is false.
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "t"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "f", ""})
#: Longest subject id, in UTF-8 bytes: outputs are named after it, and a file name holds at most 255 bytes
#: (the temporary files of :mod:`harmonize.io` add about 40).
MAX_SUBJECT_ID_BYTES = 200


@dataclass
class ParsedTable:
    """The table of a manifest as far as it could be read: the frame (None when unusable) and every problem."""

    frame: pd.DataFrame | None
    problems: list[ManifestProblem] = field(default_factory=list)


def read_rows(path: Path, problems: list[ManifestProblem]) -> tuple[list[str], list[tuple[int, list[str]]]] | None:
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


def parse_number(text: str, spec: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """Parse a finite number within the entry's ``minimum``/``maximum``; return (value, problem message or None)."""
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


def parse_cell(text: str, spec: Mapping[str, Any], folder: Path, column: str) -> tuple[Any, str | None]:
    """Parse one cell by its schema entry; return (value, problem message or None)."""
    kinds = json_types(spec)
    if text == "":
        if JSON_NULL in kinds:
            return None, None
        if JSON_BOOLEAN in kinds:
            return False, None
        return None, "is empty"
    if JSON_NUMBER in kinds:
        value, message = parse_number(text, spec)
        if message and JSON_NULL in kinds:
            message += "; write a plain number (e.g. 42.5), or leave the cell empty if it is unknown"
        elif message:
            message += "; write a plain number (e.g. 42.5)"
        return value, message
    if JSON_BOOLEAN in kinds:
        if text.lower() in TRUE_WORDS:
            return True, None
        if text.lower() in FALSE_WORDS:
            return False, None
        return None, f"'{text}' is not true or false (write true/false, 1/0 or yes/no)"
    if "enum" in spec and text not in spec["enum"]:
        allowed = ", ".join(f"'{v}'" for v in spec["enum"])
        return None, f"'{text}' is not one of {allowed}{suggest(text, spec['enum'])}"
    if len(text) < spec.get("minLength", 0):
        return None, "is empty"
    if "\x00" in text:
        return None, "holds a NUL byte, which no file name or path can hold; remove it"
    if column == Keys.SUBJECT_ID and len(text.encode("utf-8")) > MAX_SUBJECT_ID_BYTES:
        return None, (f"is {len(text.encode('utf-8'))} bytes long; outputs are named after the subject id and a "
                      f"file name holds at most 255 bytes: use an id of at most {MAX_SUBJECT_ID_BYTES}")
    if column == Keys.SITE:
        value, message = parse_number(text, {})
        if message is None and not float(value).is_integer():
            return None, (f"'{text}' is a fractional number; a site is a name or an integer id, and a fraction "
                          "would be rounded or truncated: give each site a name (e.g. 'siteA') or an integer")
        if message is None and any(c in text for c in ".eE"):  # '2.0', '2e0': zero-padded '007' stays a name
            return None, (f"'{text}' is an integer written as '{text}'; write integer site ids plainly "
                          f"('{int(value)}'), so that one site is not read as two")
    if column in (Keys.IMAGE, Keys.LABEL):
        return os.path.normpath(os.path.join(folder, os.path.expanduser(text))), None
    return text, None


def parse_confound_column(name: str, kind: ConfoundKind | None, cells: list[tuple[int, str]],
                    problems: list[ManifestProblem]) -> tuple[ConfoundKind, list[Any]]:
    """Parse a declared confound column; infer its kind (all numbers: continuous) when not given."""
    values: list[Any] = []
    if kind is None:
        filled = [t for _, t in cells if t]
        numeric = bool(filled) and all(parse_number(t, {})[1] is None for t in filled)
        kind = ConfoundKind.CONTINUOUS if numeric else ConfoundKind.CATEGORICAL
    for row, text in cells:
        if not text:
            problems.append(ManifestProblem(f"is empty; confound '{name}' needs a value in every row",
                                            row=row, column=name))
            values.append(None)
        elif kind == ConfoundKind.CONTINUOUS:
            value, message = parse_number(text, {})
            if message:
                problems.append(ManifestProblem(f"{message} (confound '{name}' is continuous)", row=row, column=name))
            values.append(value)
        else:
            values.append(text)
    return kind, values


def parse_table(path: str | os.PathLike, confounds: Sequence[str] | Mapping[str, str | None],
                    require: Sequence[str]) -> ParsedTable:
    """Read and check the table; collect every problem; build the frame from the rows that have the right width."""
    path = Path(path).expanduser().absolute()
    declared = parse_confounds(confounds)
    parsed = ParsedTable(frame=None)
    problems = parsed.problems
    table = read_rows(path, problems)
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
            problems.append(ManifestProblem(f"the header has no column '{name}' ({why}){suggest(name, header)}; "
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
                value, message = parse_cell(text, spec, folder, name)
                if message:
                    problems.append(ManifestProblem(message, row=row, column=name))
                values.append(value)
            columns[name] = values
            if name in declared:
                kinds[name] = (ConfoundKind.CONTINUOUS if JSON_NUMBER in json_types(spec)
                               else ConfoundKind.CATEGORICAL)
                if declared[name] not in (None, kinds[name]):
                    problems.append(ManifestProblem(f"is declared a {declared[name].value} confound but the "
                                                    f"schema makes it {kinds[name].value}", column=name))
        elif name in declared:
            kinds[name], columns[name] = parse_confound_column(name, declared[name], cells, problems)
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
        schema_number = name in properties and JSON_NUMBER in json_types(properties[name])
        if schema_number or kinds.get(name) == ConfoundKind.CONTINUOUS:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif name in properties and JSON_BOOLEAN in json_types(properties[name]):
            frame[name] = [False if pd.isna(v) else bool(v) for v in frame[name]]
    frame.attrs[CONFOUNDS_ATTR] = kinds
    frame.attrs[MANIFEST_ATTR] = str(path)
    parsed.frame = frame
    problems.sort(key=problem_order)
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
        One row per scan, indexed by the row's line number in the CSV (index name
        :data:`~harmonize.data.manifest.schema.ROW`, header = line 1). ``image`` and ``label`` are absolute,
        normalised path strings (relative paths are taken from the manifest's folder; an empty ``label`` cell is
        missing). ``age`` and continuous confounds
        are floats, ``forget`` is bool, every other column is text (``subject_id`` ``'001'`` stays text).
        ``frame.attrs['confounds']`` maps each declared confound to its
        :class:`~harmonize.keys.ConfoundKind`; ``frame.attrs['manifest']`` is the manifest's path.

    Raises:
        ManifestError: listing every problem found (missing file or columns, bad values, duplicate ids).
        ConfigError: a confound declaration is malformed.
    """
    parsed = parse_table(path, confounds, require)
    if parsed.problems:
        raise ManifestError(f"manifest {path} has {len(parsed.problems)} problem(s); fix them and retry "
                            "(rows are numbered as lines of the file, header = row 1)",
                            problems=[str(p) for p in parsed.problems])
    assert parsed.frame is not None
    logger.debug("read %d scans from %s", len(parsed.frame), path)
    return parsed.frame
