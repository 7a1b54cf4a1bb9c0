"""Build a manifest from a BIDS dataset: ``participants.tsv`` plus every T1-weighted scan.

One manifest row per T1w image (``sub-*/anat/*_T1w.nii[.gz]`` and ``sub-*/ses-*/anat/*_T1w.nii[.gz]``). The
row's ``subject_id`` is the image's BIDS file name without the ``_T1w`` suffix, so it is unique: ``sub-01``
for a dataset without sessions, ``sub-01_ses-1`` with sessions (and ``..._run-2`` when a session has several
runs). Age, sex and site come from the participant's row of ``participants.tsv``; ``n/a`` (the BIDS missing
value) is a problem. Splits are assigned per participant (every scan of a participant shares its split, so
no subject leaks across splits), per site, with a seeded generator: see :func:`assign_splits`.

Sex values are mapped case-insensitively by :data:`SEX_MAP`: ``F``/``female``/``0`` -> ``F`` and
``M``/``male``/``1`` -> ``M`` (0/1 follows UK Biobank's coding, 0 female, 1 male). Any other value is a
problem unless ``sex_map`` maps it (e.g. ABIDE codes 1 male, 2 female: ``{"1": "M", "2": "F"}``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harmonize import defaults
from harmonize.data.manifest import write_manifest
from harmonize.errors import ConfigError, ManifestError
from harmonize.keys import Keys, Sex, Split

__all__ = ["BIDS_AGE", "BIDS_SEX", "SEX_MAP", "assign_splits", "bids_manifest_frame", "manifest_from_bids"]

logger = logging.getLogger(__name__)

#: The participants table of a BIDS dataset, its id column and its missing-value marker.
PARTICIPANTS_FILE = "participants.tsv"
PARTICIPANT_ID = "participant_id"
BIDS_NA = "n/a"
#: BIDS column names of age and sex in participants.tsv.
BIDS_AGE = "age"
BIDS_SEX = "sex"
#: Entity prefixes and the T1w suffix of BIDS file names.
SUBJECT_PREFIX = "sub-"
SESSION_PREFIX = "ses-"
T1W_PATTERN = re.compile(r"^(?P<entities>sub-[^_]+(?:_[^_]+-[^_]+)*)_T1w\.nii(?:\.gz)?$")

#: Default mapping of sex values (keys lower-case) to the manifest's F/M.
SEX_MAP: Mapping[str, Sex] = {
    "f": Sex.FEMALE, "female": Sex.FEMALE, "0": Sex.FEMALE,
    "m": Sex.MALE, "male": Sex.MALE, "1": Sex.MALE,
}


@dataclass(frozen=True)
class _Participant:
    line: int
    site: str
    age: float
    sex: Sex
    extra: dict[str, str]


def _where(path: Path, line: int, pid: str | None = None, column: str | None = None) -> str:
    where = f"{path} row {line}"
    if pid:
        where += f" ({pid})"
    if column:
        where += f", column '{column}'"
    return where


def _read_participants(bids_dir: Path, site_column: str, age_column: str, sex_column: str,
                       extra_columns: Sequence[str], sex_map: Mapping[str, Sex],
                       problems: list[str]) -> tuple[dict[str, _Participant], set[str]]:
    """Read participants.tsv: the usable rows ``{participant_id: _Participant}`` and every id listed."""
    path = bids_dir / PARTICIPANTS_FILE
    if not path.is_file():
        raise ManifestError(f"{path} not found: a BIDS dataset needs a participants.tsv with participant_id, "
                            f"{age_column}, {sex_column} and the site column '{site_column}'")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read {path} as UTF-8 text: {err}") from err
    rows = [r for r in csv.reader(text.splitlines(), delimiter="\t")]
    if not rows:
        raise ManifestError(f"{path} is empty: it needs a header row (participant_id, {age_column}, ...)")
    header = [h.strip() for h in rows[0]]
    wanted = (PARTICIPANT_ID, site_column, age_column, sex_column, *extra_columns)
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ManifestError(f"{path} has no column {', '.join(repr(c) for c in missing)}; its columns are: "
                            f"{', '.join(header)} (choose the site column with --site-column)")
    col = {name: header.index(name) for name in wanted}
    participants: dict[str, _Participant] = {}
    first_line: dict[str, int] = {}
    for line, cells in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
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
        site = cells[col[site_column]]
        if not site or site == BIDS_NA:
            row_problems.append(f"{_where(path, line, pid, site_column)}: the site is missing ('{site}')")
        age_text = cells[col[age_column]]
        try:
            age = float(age_text)
            if not np.isfinite(age) or age < 0:
                raise ValueError(age_text)
        except ValueError:
            row_problems.append(f"{_where(path, line, pid, age_column)}: '{age_text}' is not an age in years")
            age = float("nan")
        sex_text = cells[col[sex_column]]
        sex = sex_map.get(sex_text.lower())
        if sex is None:
            known = ", ".join(sorted(sex_map))
            row_problems.append(f"{_where(path, line, pid, sex_column)}: '{sex_text}' is not a known sex value "
                                f"(known: {known}); map it with sex_map / --sex-map, e.g. 2=F")
        problems.extend(row_problems)
        if not row_problems:
            extra = {c: "" if cells[col[c]] == BIDS_NA else cells[col[c]] for c in extra_columns}
            participants[pid] = _Participant(line, site, age, sex, extra)
    return participants, set(first_line)


def _find_t1w(bids_dir: Path) -> dict[str, list[Path]]:
    """Every T1w image, grouped by participant (``sub-XX`` folder), sorted."""
    found: dict[str, list[Path]] = {}
    for pattern in ("sub-*/anat/*_T1w.nii*", "sub-*/ses-*/anat/*_T1w.nii*"):
        for path in bids_dir.glob(pattern):
            if T1W_PATTERN.match(path.name) and path.is_file():
                found.setdefault(path.relative_to(bids_dir).parts[0], []).append(path)
    return {pid: sorted(paths) for pid, paths in sorted(found.items())}


def assign_splits(sites: Mapping[str, Sequence[str]], seed: int = defaults.SEED,
                  val_fraction: float = defaults.MANIFEST_VAL_FRACTION,
                  test_fraction: float = defaults.MANIFEST_TEST_FRACTION) -> dict[str, Split]:
    """Assign each participant to train/val/test, per site, reproducibly.

    Each site's participants are sorted, then shuffled by a generator seeded with ``(seed, crc32(site))``,
    so a site's split does not change when other sites are added. The site gets ``round(n * test_fraction)``
    test and ``round(n * val_fraction)`` validation participants, reduced if needed so that at least one
    participant is left for training; the rest train.

    Args:
        sites: ``{site: participant ids}``.
        seed: seed of the shuffle.
        val_fraction: fraction of each site's participants in validation, in [0, 1).
        test_fraction: fraction in test, in [0, 1); the two fractions sum to less than 1.

    Returns:
        ``{participant id: split}``.

    Raises:
        ConfigError: a fraction out of range.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction must be below 1 so that some participants train, got "
                          f"{val_fraction} + {test_fraction}")
    splits: dict[str, Split] = {}
    for site, members in sites.items():
        ids = sorted(members)
        rng = np.random.default_rng([seed, zlib.crc32(str(site).encode("utf-8"))])
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_test = round(len(ids) * test_fraction)
        n_val = round(len(ids) * val_fraction)
        while len(ids) and n_test + n_val >= len(ids):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for i, pid in enumerate(order):
            splits[pid] = Split.TEST if i < n_test else Split.VAL if i < n_test + n_val else Split.TRAIN
    return splits


def bids_manifest_frame(bids_dir: str | os.PathLike, site_column: str, seed: int = defaults.SEED,
                        val_fraction: float = defaults.MANIFEST_VAL_FRACTION,
                        test_fraction: float = defaults.MANIFEST_TEST_FRACTION,
                        sex_map: Mapping[str, str] | None = None, age_column: str = BIDS_AGE,
                        sex_column: str = BIDS_SEX, extra_columns: Sequence[str] = (),
                        skip_invalid: bool = False) -> pd.DataFrame:
    """Build the manifest table of a BIDS dataset (absolute image paths); see the module docstring.

    Args:
        bids_dir: the BIDS dataset's root folder.
        site_column: the participants.tsv column that holds the site or scanner.
        seed: seed of the split assignment.
        val_fraction: fraction of each site's participants in validation.
        test_fraction: fraction of each site's participants in test.
        sex_map: extra or overriding sex mappings (value -> ``F``/``M``), matched case-insensitively.
        age_column: the participants.tsv column with age in years.
        sex_column: the participants.tsv column with sex.
        extra_columns: further participants.tsv columns to copy into the manifest (e.g. to declare them
            as confounds); ``n/a`` becomes an empty cell.
        skip_invalid: leave out (with a logged warning) participants with a bad row or no image and images
            without a participant row, instead of failing.

    Returns:
        One row per T1w image, sorted by subject_id, with columns subject_id, image, site, age, sex, split
        and the extra columns.

    Raises:
        ManifestError: listing every problem (missing participants.tsv or column, bad values, participants
            without images, images without a participant row), each naming its file and row.
        ConfigError: a bad fraction or sex mapping.
    """
    bids = Path(bids_dir).expanduser().absolute()
    reserved = [c for c in extra_columns if c in {k.value for k in Keys}]
    if reserved:
        raise ConfigError(f"extra columns {', '.join(reserved)} would replace manifest columns; leave them out")
    if not bids.is_dir():
        raise ManifestError(f"BIDS folder not found: {bids}")
    mapping = dict(SEX_MAP)
    for key, value in (sex_map or {}).items():
        if str(value).strip().upper() not in {s.value for s in Sex}:
            raise ConfigError(f"sex_map maps '{key}' to '{value}'; map every value to F or M")
        mapping[str(key).strip().lower()] = Sex(str(value).strip().upper())
    problems: list[str] = []
    participants, listed = _read_participants(bids, site_column, age_column, sex_column, extra_columns, mapping,
                                              problems)
    images = _find_t1w(bids)
    tsv = bids / PARTICIPANTS_FILE
    for pid, paths in images.items():
        if pid not in listed:
            problems.extend(f"{path}: participant '{pid}' has no row in {tsv}" for path in paths)
    for pid, who in participants.items():
        if pid not in images:
            problems.append(f"{_where(tsv, who.line, pid)}: no T1w image found (looked for {pid}/anat/"
                            f"{pid}_*T1w.nii.gz and {pid}/ses-*/anat/{pid}_*T1w.nii.gz)")
    if problems and not skip_invalid:
        raise ManifestError(f"cannot build a manifest from the BIDS dataset {bids}: {len(problems)} problem(s) "
                            "(fix them, or pass skip_invalid / --skip-invalid to leave those participants out)",
                            problems=problems)
    for problem in problems:
        logger.warning("skipped: %s", problem)
    usable = {pid: who for pid, who in participants.items() if pid in images}
    if not usable:
        raise ManifestError(f"the BIDS dataset {bids} has no participant with both a valid participants.tsv row "
                            "and a T1w image", problems=problems)
    by_site: dict[str, list[str]] = {}
    for pid, who in usable.items():
        by_site.setdefault(who.site, []).append(pid)
    splits = assign_splits(by_site, seed, val_fraction, test_fraction)
    rows = []
    for pid, who in usable.items():
        for path in images[pid]:
            match = T1W_PATTERN.match(path.name)
            assert match is not None
            rows.append({Keys.SUBJECT_ID.value: match["entities"], Keys.IMAGE.value: str(path),
                         Keys.SITE.value: who.site, Keys.AGE.value: who.age, Keys.SEX.value: who.sex.value,
                         Keys.SPLIT.value: splits[pid].value, **who.extra})
    frame = pd.DataFrame(rows).sort_values(Keys.SUBJECT_ID.value, kind="stable").reset_index(drop=True)
    duplicated = frame[Keys.SUBJECT_ID.value][frame[Keys.SUBJECT_ID.value].duplicated()].tolist()
    if duplicated:
        raise ManifestError(f"the BIDS dataset {bids} has several T1w images with the same entities "
                            "(e.g. sub-01_T1w.nii and sub-01_T1w.nii.gz)", problems=duplicated)
    return frame


def manifest_from_bids(bids_dir: str | os.PathLike, site_column: str, out_path: str | os.PathLike, *,
                       seed: int = defaults.SEED, val_fraction: float = defaults.MANIFEST_VAL_FRACTION,
                       test_fraction: float = defaults.MANIFEST_TEST_FRACTION,
                       sex_map: Mapping[str, str] | None = None, age_column: str = BIDS_AGE,
                       sex_column: str = BIDS_SEX, extra_columns: Sequence[str] = (), skip_invalid: bool = False,
                       overwrite: bool = False) -> Path:
    """Write a manifest CSV for a BIDS dataset (image paths relative to the CSV's folder).

    Args:
        bids_dir: the BIDS dataset's root folder (read only; nothing in it is changed).
        site_column: the participants.tsv column that holds the site or scanner.
        out_path: the manifest CSV to write.
        seed: seed of the split assignment (:func:`assign_splits`).
        val_fraction: fraction of each site's participants in validation.
        test_fraction: fraction of each site's participants in test.
        sex_map: extra sex mappings (value -> ``F``/``M``).
        age_column: participants.tsv column with age in years.
        sex_column: participants.tsv column with sex.
        extra_columns: further participants.tsv columns to copy (e.g. confounds).
        skip_invalid: leave out unusable participants and images (logged) instead of failing.
        overwrite: replace an existing ``out_path``.

    Returns:
        The path written.

    Raises:
        ManifestError: the output exists (without ``overwrite``) or the dataset has problems (all listed).
        ConfigError: a bad fraction or sex mapping.
    """
    out = Path(out_path).expanduser().absolute()
    if out.exists() and not overwrite:
        raise ManifestError(f"{out} already exists; choose another output path or pass --overwrite")
    frame = bids_manifest_frame(bids_dir, site_column, seed, val_fraction, test_fraction, sex_map, age_column,
                                sex_column, extra_columns, skip_invalid)
    written = write_manifest(frame, out, overwrite=overwrite)
    counts = frame.groupby(Keys.SPLIT.value).size().to_dict()
    logger.info("wrote %s: %d scans of %d sites (%s)", written, len(frame), frame[Keys.SITE.value].nunique(),
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return written
