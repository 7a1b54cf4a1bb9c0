"""Validating a manifest fully: its table, every image and label it names, and the study design.

:func:`validate_manifest` reads the table as :func:`~harmonize.data.manifest.reader.read_manifest` does, then
loads every image and label once (header + data) and returns a :class:`ValidationReport` with every problem,
warnings about the design (one site, a site without training scans, ...) and a
:class:`~harmonize.data.manifest.summary.ManifestSummary`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harmonize.data.manifest.problem import ManifestProblem, problem_order
from harmonize.data.manifest.reader import parse_table
from harmonize.data.manifest.summary import ManifestSummary, summarize
from harmonize.data.manifest.volume_checks import check_row
from harmonize.errors import ManifestError
from harmonize.keys import Keys, Split

__all__ = ["DEFAULT_WORKERS", "MIN_SCANS_PER_SITE", "ValidationReport", "design_warnings", "validate_manifest"]

logger = logging.getLogger(__name__)

#: A site with fewer scans than this gets a warning (the domain head cannot learn it).
MIN_SCANS_PER_SITE = 2
#: Threads used by :func:`validate_manifest` to load images when ``num_workers`` is not given.
DEFAULT_WORKERS = 4


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


def design_warnings(frame: pd.DataFrame, summary: ManifestSummary) -> list[ManifestProblem]:
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
    """Check a manifest fully: the table (as :func:`~harmonize.data.manifest.reader.read_manifest`), every image
    and label, and the design.

    File checks, per row: the image (and label, if given) exists and reads as NIfTI (a truncated or corrupt
    file is a problem, not a crash); it is 3D (a 4D image whose extra dimensions are all 1, e.g. shape
    ``(X, Y, Z, 1)``, counts as 3D, because MONAI and TorchIO read that dimension as the channel; a 2D
    image, a single slice or a real 4D series is a problem); every voxel is finite; a label has the image's
    shape and affine (within :data:`~harmonize.data.manifest.volume_checks.AFFINE_ATOL`) and holds
    non-negative integers; no two rows share an image.

    Design checks are warnings, since they can be intended: one site only (nothing to unlearn), a site with
    fewer than :data:`MIN_SCANS_PER_SITE` scans, a site without training scans (usable only as an unseen
    test site), no training rows at all (evaluation only), sites whose age ranges do not overlap, every row
    marked forget.

    Args:
        path: the manifest CSV.
        confounds: declared confound columns (see :func:`~harmonize.data.manifest.reader.read_manifest`).
        require: further required columns (e.g. ``[Keys.LABEL]``).
        check_images: load images and labels; False checks the table and the design only.
        num_workers: threads loading files (default :data:`DEFAULT_WORKERS`, at most the CPU count).
        progress: show progress while loading (a bar on a terminal, else a line per hundred scans).

    Returns:
        The report; ``report.ok`` is False when there is any problem.

    Raises:
        ConfigError: a confound declaration is malformed (an argument error, not a manifest problem).
    """
    parsed = parse_table(path, confounds, require)
    report = ValidationReport(Path(path).expanduser().absolute(), list(parsed.problems))
    frame = parsed.frame
    if frame is None:
        return report
    report.summary = summarize(frame)
    report.warnings.extend(design_warnings(frame, report.summary))
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
        results = pool.map(lambda job: check_row(*job), jobs)
        for found in show_progress(results, "checking images", unit="scan", total=len(jobs), enabled=progress):
            report.problems.extend(found)
    report.n_files_checked = sum((image is not None) + (label is not None) for _, image, label in jobs)
    report.problems.sort(key=problem_order)
    logger.info("checked %d files of %s: %d problem(s), %d warning(s)", report.n_files_checked, path,
                len(report.problems), len(report.warnings))
    return report
