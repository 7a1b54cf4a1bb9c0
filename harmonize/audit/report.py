"""The audit's report: a comparison table of methods (HTML, Markdown, JSON) and a self-contained HTML page.

:func:`metrics_table` turns the metrics dictionaries of the brain-age workflow into rows; :func:`write_report`
and :func:`write_comparison_table` both write from those rows, so the HTML, Markdown and JSON tables agree.
The HTML page embeds its figures as base64 data URIs and its style inline: it opens offline, can be mailed as
one file and fetches nothing.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonize import __version__
from harmonize.audit.seed_summary import CI_SUFFIX
from harmonize.errors import ConfigError
from harmonize.io import write_json_atomic, write_text_atomic

__all__ = [
    "METRIC_COLUMNS",
    "RECON_COLUMNS",
    "Column",
    "best_methods",
    "format_value",
    "metric_value",
    "metrics_table",
    "present_columns",
    "recon_rows",
    "summary_sentence",
    "write_comparison_table",
    "write_report",
]

#: Shown for a value that was not measured.
MISSING = "\u2014"
#: Name of the report file in the output folder.
REPORT_NAME = "report.html"
#: A p-value below this is shown as ``<`` it.
P_FLOOR = 0.001
#: Method whose forget-set PSNR the unlearning methods should approach (Xue et al.: retraining without it).
ORACLE = "oracle"
#: How an interval in a cell reads (the legend says it when a table has some).
INTERVAL_TEXT = "Over several seeds a cell is the mean [95 % t-interval over seeds]; best is judged on the mean."
#: Image types that can be embedded, by file suffix.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass(frozen=True)
class Column:
    """A column of a table.

    Attributes:
        key: the row dictionary's key (and the metrics dictionary's); a dotted path (``dice_per_tissue.gm``) reads a
            nested dictionary of the metrics.
        header: what the table shows.
        digits: decimals shown.
        better: which value is best and highlighted: ``"low"``, ``"high"``, ``"chance"`` (closest to the chance
            level), ``"oracle"`` (closest to the oracle's row) or ``None`` (not highlighted).
    """

    key: str
    header: str
    digits: int
    better: str | None


#: Columns of the comparison of harmonisation methods.
METRIC_COLUMNS: tuple[Column, ...] = (
    Column("site_probe_bacc", "Site-probe bacc", 3, "chance"),
    Column("site_probe_p", "Site-probe p", 3, "high"),
    Column("site_probe_floor", "Site from age & sex alone", 3, None),
    Column("site_probe_conditional", "Site from features and age & sex", 3, "low"),
    Column("age_mae", "Age MAE (years)", 2, "low"),
    Column("unseen_site_mae", "Unseen-site MAE (years)", 2, "low"),
    Column("site_bias_spread", "Site bias spread (years)", 2, "low"),
    Column("age_probe_r2", "Age R\u00b2 from features", 3, "high"),
    Column("sex_probe_bacc", "Sex-probe bacc", 3, "high"),
    Column("domain_head_acc", "Domain-head acc", 3, None),
    Column("site_evidence", "Site beyond age & sex in training features (gate)", 3, None),
    Column("seconds", "Seconds", 1, "low"),
)
#: Columns of the reconstruction-unlearning table (Xue et al.: PSNR on retain test, forget test, forget train).
RECON_COLUMNS: tuple[Column, ...] = (
    Column("bta_psnr", "BTA PSNR (dB)", 2, "high"),
    Column("kta_psnr", "KTA PSNR (dB)", 2, "oracle"),
    Column("ua_psnr", "UA PSNR (dB)", 2, "oracle"),
    Column("seconds", "Seconds", 1, "low"),
)
#: How each rule of "best" is explained under the tables.
BETTER_TEXT = {
    "chance": "closest to chance (the probe cannot read the site)",
    "high": "highest",
    "low": "lowest",
    "oracle": "closest to the oracle (a model never trained on the forget set)",
}

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #777; font-size: 0.85em; margin-top: 0; }
p.summary { font-size: 1.05em; background: #f5f8fc; border-left: 4px solid #4a78b5; padding: 0.5em 0.8em; }
details.notes { margin: 1em 0; }
details.notes summary { cursor: pointer; font-weight: 600; color: #333; }
.notes p { margin: 0.4em 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.7em; }
th { background: #f2f4f7; text-align: center; vertical-align: bottom; }
td { text-align: right; font-variant-numeric: tabular-nums; }
td.method { text-align: left; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafafa; }
td.best { background: #dff3e3; font-weight: 700; }
td.missing { color: #999; text-align: center; }
p.legend { color: #555; font-size: 0.85em; }
p.verdict { font-size: 1.1em; font-weight: 600; background: #f2f4f7; border-left: 4px solid #4a6fa5;
            padding: 0.5em 0.8em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { color: #444; font-size: 0.9em; margin-top: 0.3em; }
"""


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` for a missing, non-numeric or non-finite value."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_value(values: Mapping[str, Any], key: str) -> Any:
    """``values[key]``, or for a dotted ``key`` absent as such, the value down that path of nested dictionaries."""
    if key in values:
        return values[key]
    value: Any = values
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def present_columns(metrics: Mapping[str, Mapping[str, Any]], columns: Sequence[Column]) -> list[Column]:
    """The ``columns`` that at least one method's metrics measured (a finite number), in their order."""
    return [c for c in columns if any(_number(metric_value(v, c.key)) is not None for v in metrics.values())]


def metrics_table(
    metrics: Mapping[str, Mapping[str, Any]],
    chance: float | None = None,
    columns: Sequence[Column] = METRIC_COLUMNS,
) -> list[dict[str, Any]]:
    """One row per method with the values of ``columns`` (``None`` where not measured).

    Args:
        metrics: metrics dictionaries by method (as returned by the brain-age evaluation).
        chance: the site probe's chance level for rows whose metrics carry no ``chance`` (default: the first
            ``chance`` found in ``metrics``; the methods of one comparison share their sites).
        columns: the table's columns (default: the brain-age comparison's, :data:`METRIC_COLUMNS`).

    Returns:
        Rows ``{"method", "chance", <column keys>}``, in the order of ``metrics``; a column whose metrics hold an
        interval over seeds (``<key>_ci``, see :mod:`~harmonize.audit.seed_summary`) adds ``<key>_ci`` too.
    """
    for method, values in metrics.items():
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"metrics_table: the metrics of method {method!r} must be a dictionary, got {type(values).__name__}."
            )
    fallback = _number(chance)
    if fallback is None:
        given = [_number(v.get("chance")) for v in metrics.values()]
        fallback = next((c for c in given if c is not None), None)
    rows = []
    for method, values in metrics.items():
        own = _number(values.get("chance"))
        row: dict[str, Any] = {"method": str(method), "chance": own if own is not None else fallback}
        for column in columns:
            row[column.key] = _number(metric_value(values, column.key))
            interval = values.get(f"{column.key}{CI_SUFFIX}")
            if f"{column.key}{CI_SUFFIX}" in values:
                bounds = [_number(v) for v in interval] if isinstance(interval, Sequence) else []
                row[f"{column.key}{CI_SUFFIX}"] = bounds if len(bounds) == 2 and None not in bounds else None
        rows.append(row)
    return rows


def recon_rows(recon_table: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows ``{"method", <RECON_COLUMNS keys>}`` of a reconstruction-unlearning table (extra keys dropped)."""
    rows = []
    for i, entry in enumerate(recon_table):
        if "method" not in entry:
            raise ConfigError(f"recon_table row {i} has no 'method' (keys: {sorted(entry)}).")
        rows.append({"method": str(entry["method"]), **{c.key: _number(entry.get(c.key)) for c in RECON_COLUMNS}})
    return rows


def best_methods(rows: Sequence[Mapping[str, Any]], column: Column) -> list[str]:
    """The methods whose value of ``column`` is best by its rule (ties all count; none without a rule)."""
    if column.better is None:
        return []
    reference = None
    if column.better == "oracle":
        reference = next((r.get(column.key) for r in rows if r["method"] == ORACLE), None)
        if reference is None:
            return []
    scored = []
    for row in rows:
        value = row.get(column.key)
        if value is None:
            continue
        if column.better == "low":
            score = value
        elif column.better == "high":
            score = -value
        elif column.better == "chance":
            if row.get("chance") is None:
                continue
            score = abs(value - row["chance"])
        else:  # oracle
            if row["method"] == ORACLE:
                continue
            score = abs(value - reference)
        scored.append((round(score, 12), row["method"]))
    if not scored:
        return []
    best = min(score for score, _ in scored)
    return [method for score, method in scored if score == best]


def format_value(column: Column, value: float | None) -> str:
    """A cell's text: ``column.digits`` decimals, ``<0.001`` for tiny p-values, an em dash when missing."""
    if value is None:
        return MISSING
    if column.key.endswith("_p") and value < P_FLOOR:
        return f"<{P_FLOOR}"
    return f"{value:.{column.digits}f}"


def _cell(column: Column, row: Mapping[str, Any]) -> str:
    """A cell's text: its value (:func:`format_value`) and, when the row has one, its interval ``[low, high]``."""
    text = format_value(column, row.get(column.key))
    interval = row.get(f"{column.key}{CI_SUFFIX}")
    if interval is None or row.get(column.key) is None:
        return text
    return f"{text} [{format_value(column, interval[0])}, {format_value(column, interval[1])}]"


def _header(column: Column, chance: float | None) -> str:
    if column.better == "chance" and chance is not None:
        return f"{column.header} (chance {chance:.3f})"
    return column.header


def _table_chance(rows: Sequence[Mapping[str, Any]], chance: float | None) -> float | None:
    """The chance level shown in the header: the one given, else the first row's."""
    if _number(chance) is not None:
        return _number(chance)
    return next((r["chance"] for r in rows if r.get("chance") is not None), None)


# ----------------------------------------------------------------------------------------------- markdown, json
def _markdown_text(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], chance: float | None) -> str:
    best = {c.key: best_methods(rows, c) for c in columns}
    lines = [
        "| Method | " + " | ".join(_markdown_text(_header(c, chance)) for c in columns) + " |",
        "|:--|" + "".join("--:|" for _ in columns),
    ]
    for row in rows:
        cells = []
        for c in columns:
            text = _cell(c, row)
            cells.append(f"**{text}**" if row["method"] in best[c.key] and row.get(c.key) is not None else text)
        lines.append(f"| {_markdown_text(row['method'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _legend(columns: Sequence[Column], intervals: bool = False) -> str:
    rules = [f"{c.header}: {BETTER_TEXT[c.better]}" for c in columns if c.better]
    seeds = f" {INTERVAL_TEXT}" if intervals else ""
    return f"Best value per column highlighted ({'; '.join(rules)}).{seeds} {MISSING}: not measured."


def _has_intervals(rows: Sequence[Mapping[str, Any]]) -> bool:
    return any(k.endswith(CI_SUFFIX) and v is not None for row in rows for k, v in row.items())


def write_comparison_table(
    metrics: Mapping[str, Mapping[str, Any]],
    path_md: str | os.PathLike,
    path_json: str | os.PathLike,
    chance: float | None = None,
) -> tuple[Path, Path]:
    """Write the comparison table as Markdown (best values in bold) and as JSON (the same rows, unformatted).

    Args:
        metrics: metrics dictionaries by method.
        path_md: the Markdown file to write.
        path_json: the JSON file to write: ``{"chance", "columns": [{key, header, digits, better}], "rows",
            "best": {column: [methods]}}``.
        chance: the site probe's chance level (default: from the metrics).

    Returns:
        The two paths written (atomically).
    """
    rows = metrics_table(metrics, chance)
    chance = _table_chance(rows, chance)
    md = _markdown(rows, METRIC_COLUMNS, chance) + "\n" + _legend(METRIC_COLUMNS, _has_intervals(rows)) + "\n"
    document = {
        "chance": chance,
        "columns": [
            {"key": c.key, "header": _header(c, chance), "digits": c.digits, "better": c.better} for c in METRIC_COLUMNS
        ],
        "rows": rows,
        "best": {c.key: best_methods(rows, c) for c in METRIC_COLUMNS if c.better},
    }
    return write_text_atomic(path_md, md), write_json_atomic(path_json, document, indent=2)


# ------------------------------------------------------------------------------------------------------ html
def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], chance: float | None, css_class: str
) -> str:
    best = {c.key: best_methods(rows, c) for c in columns}
    head = "".join(f"<th scope=\"col\">{_esc(_header(c, chance))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = [f"<td class=\"method\">{_esc(row['method'])}</td>"]
        for c in columns:
            value = row.get(c.key)
            classes = []
            if value is None:
                classes.append("missing")
            elif row["method"] in best[c.key]:
                classes.append("best")
            attr = f" class=\"{' '.join(classes)}\"" if classes else ""
            cells.append(f"<td{attr}>{_esc(_cell(c, row))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<table class=\"{_esc(css_class)}\">\n<thead><tr><th scope=\"col\">Method</th>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table>\n"
        + f"<p class=\"legend\">{_esc(_legend(columns, _has_intervals(rows)))}</p>\n"
    )


def summary_sentence(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], chance: float | None) -> str:
    """The report's opening line: each main figure's value (one method) or its best method (several).

    The figures are the columns with a rule of "best" (:attr:`Column.better`), less p-values and seconds.

    Example:
        >>> cols = (Column("site_probe_bacc", "Site-probe bacc", 3, "chance"), Column("age_mae", "Age MAE", 2, "low"))
        >>> summary_sentence([{"method": "none", "chance": 0.5, "site_probe_bacc": 0.9, "age_mae": 4.0},
        ...                   {"method": "dann", "chance": 0.5, "site_probe_bacc": 0.6, "age_mae": 4.5}], cols, 0.5)
        'Best of 2 methods: Site-probe bacc (chance 0.500): dann (0.600); Age MAE: none (4.00).'
    """
    main = [c for c in columns if c.better and c.key != "seconds" and not c.key.endswith("_p")]
    parts = []
    for column in main:
        if len(rows) == 1:
            value = rows[0].get(column.key)
            if value is not None:
                parts.append(f"{_header(column, chance)} {format_value(column, value)}")
            continue
        best = best_methods(rows, column)
        if best:
            value = next(r.get(column.key) for r in rows if r["method"] == best[0])
            parts.append(f"{_header(column, chance)}: {', '.join(best)} ({format_value(column, value)})")
    if not parts:
        return ""
    if len(rows) == 1:
        return f"{rows[0]['method']}: {'; '.join(parts)}."
    return f"Best of {len(rows)} methods: {'; '.join(parts)}."


def _figures(plots: Mapping[str, str | os.PathLike]) -> str:
    problems, figures = [], []
    for title, path in plots.items():
        path = Path(path)
        mime = IMAGE_TYPES.get(path.suffix.lower())
        if mime is None:
            problems.append(f"{title!r}: {str(path)!r} is not a PNG or JPEG file")
        elif not path.is_file():
            problems.append(f"{title!r}: {str(path)!r} does not exist")
        else:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            figures.append(
                f"<figure>\n<img src=\"data:{mime};base64,{data}\" alt=\"{_esc(title)}\">\n"
                f"<figcaption>{_esc(title)}</figcaption>\n</figure>"
            )
    if problems:
        raise ConfigError("write_report: some figures cannot be embedded.", problems=problems)
    return "\n".join(figures) + "\n"


def write_report(
    out_dir: str | os.PathLike,
    metrics: Mapping[str, Mapping[str, Any]],
    chance: float | None,
    plots: Mapping[str, str | os.PathLike] | None = None,
    recon_table: Sequence[Mapping[str, Any]] | None = None,
    title: str = "harmonize audit",
    notes: str | Sequence[str] | None = None,
    columns: Sequence[Column] = METRIC_COLUMNS,
    verdict: str | None = None,
) -> Path:
    """Write a self-contained ``report.html``: a summary line, the tables, the notes (folded), the figures.

    The page opens with the results: the summary line (:func:`summary_sentence`) and the comparison table,
    then the reconstruction table; the notes follow, folded, and the figures come last.

    The figures are embedded as base64 data URIs and the style is inline, so the page loads nothing from the
    network and runs no script. Every string (method names, titles, notes) is HTML-escaped.

    Args:
        out_dir: folder of the report (created if needed).
        metrics: metrics dictionaries by method (rows of the comparison table, see :func:`metrics_table`).
        chance: the site probe's chance level, ``1 / n_sites`` (``None``: taken from the metrics).
        plots: figure files (PNG or JPEG) by title, in display order.
        recon_table: rows of a reconstruction-unlearning comparison (``method``, ``bta_psnr``, ``kta_psnr``,
            ``ua_psnr``, ``seconds``).
        title: the page's title.
        notes: paragraphs on reading the results, shown folded (a ``<details>`` element) after the tables.
        columns: columns of the comparison table (default :data:`METRIC_COLUMNS`, the brain-age figures; e.g. the
            measured ones of a task's columns, :func:`present_columns`).
        verdict: one sentence shown first, under the title (e.g. :func:`~harmonize.audit.verdict.comparison_verdict`).

    Returns:
        The path of ``report.html``.

    Raises:
        ConfigError: a figure file that is missing or not a PNG/JPEG (all listed), or malformed metrics.
    """
    rows = metrics_table(metrics, chance, columns)
    chance = _table_chance(rows, chance)
    paragraphs = [notes] if isinstance(notes, str) else list(notes or [])
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "<!DOCTYPE html>",
        "<html lang=\"en\">",
        "<head>",
        "<meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class=\"meta\">{_esc(f'harmonize {__version__}, {stamp}')}</p>",
    ]
    if verdict:
        parts.append(f"<p class=\"verdict\">{_esc(verdict)}</p>")
    summary = summary_sentence(rows, columns, chance)
    if summary:
        parts.append(f"<p class=\"summary\">{_esc(summary)}</p>")
    if rows:
        parts += ["<h2>Harmonisation methods</h2>", _html_table(rows, columns, chance, "metrics")]
    if recon_table:
        recon = _html_table(recon_rows(recon_table), RECON_COLUMNS, None, "recon")
        parts += ["<h2>Reconstruction unlearning</h2>", recon]
    if paragraphs:
        parts.append(f"<details class=\"notes\">\n<summary>How to read these results ({len(paragraphs)} "
                     f"note{'s' if len(paragraphs) != 1 else ''})</summary>\n"
                     + "".join(f"<p>{_esc(p)}</p>" for p in paragraphs) + "\n</details>")
    if plots:
        parts += ["<h2>Figures</h2>", _figures(plots)]
    parts += ["</body>", "</html>"]
    return write_text_atomic(Path(out_dir) / REPORT_NAME, "\n".join(parts) + "\n")
