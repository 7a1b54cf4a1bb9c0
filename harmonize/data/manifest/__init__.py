"""Manifests: the CSV that lists a cohort's scans (one row per scan), read, summarised, validated and written.

A manifest has a header row naming its columns: ``subject_id``, ``image``, ``site``, ``age``, ``sex`` and
``split`` are required; ``label`` and ``forget`` are optional; any further column is kept, and those named as
confounds are parsed as categorical or continuous values. The columns, their types and allowed values are
documented once, in the JSON Schema ``manifest_schema.json`` (see :func:`schema_path`), and
:func:`read_manifest` takes its required columns, types, ranges and enumerations from that file.

Row numbers: every message names a row by its **line number in the CSV file**, counting the header as line
1, so the first scan is row 2. The returned DataFrame keeps it as its index, named :data:`ROW`.

Two levels of checking:

- :func:`read_manifest` checks the table only (columns, types, values, duplicate ids) and raises
  :class:`~harmonize.errors.ManifestError` listing every problem. It is fast and loads no image.
- :func:`validate_manifest` does the same, then loads every image and label once (header + data) and returns
  a :class:`ValidationReport` with every problem, warnings about the design (one site, a site without
  training scans, ...) and a :class:`ManifestSummary`.

One concept per module: :mod:`~harmonize.data.manifest.schema` (the columns, confound declarations),
:mod:`~harmonize.data.manifest.problem` (one located problem), :mod:`~harmonize.data.manifest.reader`,
:mod:`~harmonize.data.manifest.writer`, :mod:`~harmonize.data.manifest.summary` (sites, splits, the shared age
range), :mod:`~harmonize.data.manifest.volume_checks` (one row's image and label files) and
:mod:`~harmonize.data.manifest.validation`.
"""

from __future__ import annotations

from harmonize.data.manifest.problem import ManifestProblem
from harmonize.data.manifest.reader import read_manifest
from harmonize.data.manifest.schema import (
    CONFOUNDS_ATTR,
    MANIFEST_ATTR,
    ROW,
    SCHEMA_FILENAME,
    format_schema,
    load_schema,
    parse_confounds,
    schema_path,
)
from harmonize.data.manifest.summary import ManifestSummary, overlap_range, summarize
from harmonize.data.manifest.validation import ValidationReport, validate_manifest
from harmonize.data.manifest.volume_checks import (
    AFFINE_ATOL,
    TISSUE_CLASSES,
    header_problems,
)
from harmonize.data.manifest.writer import write_manifest

__all__ = [
    "AFFINE_ATOL",
    "CONFOUNDS_ATTR",
    "MANIFEST_ATTR",
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
