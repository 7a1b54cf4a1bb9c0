"""The audit report: one table source for HTML, Markdown and JSON; a self-contained, escaped HTML page."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from harmonize.audit.report import (
    METRIC_COLUMNS,
    MISSING,
    RECON_COLUMNS,
    Column,
    best_methods,
    format_value,
    metric_value,
    metrics_table,
    present_columns,
    write_comparison_table,
    write_report,
)
from harmonize.errors import ConfigError

EVIL = "combat <script>alert('x')</script> & co"

METRICS = {
    "none": {"age_mae": 5.42, "site_probe_bacc": 0.912, "site_probe_p": 0.0099, "chance": 0.25, "age_probe_r2": 0.781,
             "sex_probe_bacc": 0.66, "site_probe_floor": 0.301, "seconds": 412.34, "age_mae_per_site": {"a": 5.0}},
    "unlearning": {"age_mae": 5.104, "site_probe_bacc": 0.34, "site_probe_p": 0.0004, "chance": 0.25,
                   "age_probe_r2": 0.75, "sex_probe_bacc": 0.63, "domain_head_acc": 0.29,
                   "site_probe_floor": 0.301, "seconds": 861.0},
    EVIL: {"age_mae": float("nan"), "site_probe_bacc": 0.27, "site_probe_p": 0.31, "age_probe_r2": 0.79,
           "seconds": 0.4},
}

RECON = [
    {"method": "original", "bta_psnr": 23.7, "kta_psnr": 22.5, "ua_psnr": 22.9, "seconds": 600.0},
    {"method": "oracle", "bta_psnr": 24.0, "kta_psnr": 18.5, "ua_psnr": 18.9, "seconds": 590.0},
    {"method": "ga_l1_ft", "bta_psnr": 23.6, "kta_psnr": 21.1, "ua_psnr": 21.0, "seconds": 30.0, "bta_ssim": 0.8},
    {"method": "nl_ft", "bta_psnr": 23.1, "kta_psnr": 20.6, "ua_psnr": None, "seconds": 95.0},
]


@pytest.fixture
def pngs(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for i, title in enumerate(("Embeddings <by site>", "Per-site error")):
        fig = Figure(figsize=(2, 1.5), dpi=50)
        fig.add_subplot().plot(np.arange(5), np.arange(5) * (i + 1))
        path = tmp_path / f"plot{i}.png"
        fig.savefig(path)
        out[title] = path
    return out


def test_metrics_table_rows() -> None:
    rows = metrics_table(METRICS, chance=0.5)
    assert [r["method"] for r in rows] == ["none", "unlearning", EVIL]
    assert set(rows[0]) == {"method", "chance", *(c.key for c in METRIC_COLUMNS)}
    assert rows[0]["chance"] == 0.25  # the metrics' own chance first
    assert rows[2]["chance"] == 0.5  # then the one given
    assert rows[2]["age_mae"] is None  # NaN counts as not measured
    assert rows[0]["domain_head_acc"] is None
    with pytest.raises(ConfigError, match="the metrics of method 'x' must be a dictionary, got float"):
        metrics_table({"x": 1.0})


def test_best_methods_and_format() -> None:
    rows = metrics_table(METRICS)
    best = {c.key: best_methods(rows, c) for c in METRIC_COLUMNS}
    assert best["site_probe_bacc"] == [EVIL]  # 0.27 is closest to chance 0.25
    assert best["site_probe_p"] == [EVIL]
    assert best["age_mae"] == ["unlearning"]
    assert best["age_probe_r2"] == [EVIL]
    assert best["sex_probe_bacc"] == ["none"]
    assert best["domain_head_acc"] == []  # a diagnostic, not ranked
    assert best["seconds"] == [EVIL]
    p_column = next(c for c in METRIC_COLUMNS if c.key == "site_probe_p")
    assert format_value(p_column, 0.0004) == "<0.001"
    assert format_value(METRIC_COLUMNS[0], None) == MISSING == "\u2014"
    assert format_value(METRIC_COLUMNS[0], 0.91234) == "0.912"


def test_recon_best_is_closest_to_oracle() -> None:
    from harmonize.audit.report import recon_rows

    rows = recon_rows(RECON)
    assert set(rows[2]) == {"method", *(c.key for c in RECON_COLUMNS)}  # extra keys dropped
    best = {c.key: best_methods(rows, c) for c in RECON_COLUMNS}
    assert best == {"bta_psnr": ["oracle"], "kta_psnr": ["nl_ft"], "ua_psnr": ["ga_l1_ft"], "seconds": ["ga_l1_ft"]}
    with pytest.raises(ConfigError, match="recon_table row 0 has no 'method'"):
        recon_rows([{"bta_psnr": 1.0}])


def test_report_html(tmp_path: Path, pngs: dict[str, Path]) -> None:
    path = write_report(
        tmp_path / "out", METRICS, 0.25, pngs, RECON, title="Audit <demo>", notes=["First & second", "<b>raw</b>"]
    )
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # values of both tables
    values = ("0.912", "0.340", "0.301", "0.270", "5.42", "5.10", "&lt;0.001", "0.010", "412.3", "861.0", "0.290",
              "23.70", "18.50", "21.10")
    for value in values:
        assert f">{value}<" in text, value
    assert "Site-probe bacc (chance 0.250)" in text
    # EVIL: age MAE, sex, head, floor; none: head; nl_ft: UA; no method has an unseen site, conditional probe, site
    # bias spread or gate evidence: 12 more
    assert text.count(f">{MISSING}<") == 18
    # best cells highlighted
    assert '<td class="best">5.10</td>' in text and '<td class="best">0.270</td>' in text
    assert '<td class="best">20.60</td>' in text  # closest to the oracle's forget PSNR
    # figures embedded as data URIs, byte for byte
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [base64.b64decode(u) for u in uris] == [p.read_bytes() for p in pngs.values()]
    assert 'alt="Embeddings &lt;by site&gt;"' in text
    # self-contained: no URL, no script, no external resource
    assert "http" not in text.lower()
    assert "<script" not in text.lower() and "src=\"//" not in text and "<link" not in text
    # escaped strings
    assert html.escape(EVIL, quote=True) in text
    assert "<title>Audit &lt;demo&gt;</title>" in text
    assert "<p>First &amp; second</p><p>&lt;b&gt;raw&lt;/b&gt;</p>" in text
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_report_without_optional_parts(tmp_path: Path) -> None:
    text = write_report(tmp_path, {"none": {"age_mae": 4.0}}, None).read_text()
    assert "Reconstruction unlearning" not in text and "<figure>" not in text
    assert "Site-probe bacc</th>" in text  # no chance known: no chance in the header
    assert ">4.00<" in text


def test_report_missing_figures(tmp_path: Path, pngs: dict[str, Path]) -> None:
    plots = {**pngs, "gone": tmp_path / "gone.png", "vector": tmp_path / "plot.svg"}
    with pytest.raises(ConfigError) as info:
        write_report(tmp_path / "out", METRICS, 0.25, plots)
    message = str(info.value)
    assert "'gone':" in message and "does not exist" in message
    assert "'vector':" in message and "is not a PNG or JPEG file" in message
    assert not (tmp_path / "out" / "report.html").exists()


def _markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = []
    for line in lines[2:]:  # skip the header and the alignment row
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([html.unescape(c.strip().replace("\\|", "|")) for c in cells])
    return rows


def test_markdown_and_json_tables_agree(tmp_path: Path) -> None:
    metrics = {**METRICS, "a|b": {"site_probe_bacc": 0.5, "chance": 0.25}}
    md_path, json_path = write_comparison_table(metrics, tmp_path / "t.md", tmp_path / "t.json")
    document = json.loads(json_path.read_text())
    md_rows = _markdown_rows(md_path.read_text())
    assert document["chance"] == 0.25
    assert [c["key"] for c in document["columns"]] == [c.key for c in METRIC_COLUMNS]
    assert len(md_rows) == len(document["rows"]) == 4
    for cells, row in zip(md_rows, document["rows"]):
        assert cells[0] == row["method"]
        for column, cell in zip(METRIC_COLUMNS, cells[1:]):
            bold = cell.startswith("**")
            assert cell.strip("*") == format_value(column, row[column.key])
            assert bold == (row["method"] in document["best"].get(column.key, []))
    assert document["rows"][2]["age_mae"] is None
    assert "Site-probe bacc (chance 0.250)" in md_path.read_text()
    assert "&lt;script&gt;" in md_path.read_text() and "<script>" not in md_path.read_text()


#: Columns of a task whose figures sit in a nested dictionary (as the segmentation audit's Dice per tissue).
DICE_COLUMNS = (
    METRIC_COLUMNS[0],
    Column("mean_dice", "Mean Dice", 3, "high"),
    Column("dice_per_tissue.gm", "GM Dice", 3, "high"),
    Column("unseen_site_dice", "Unseen-site Dice", 3, "high"),
    Column("seconds", "Seconds", 1, "low"),
)
DICE = {
    "none": {"site_probe_bacc": 0.8, "chance": 0.5, "mean_dice": 0.61, "dice_per_tissue": {"gm": 0.812, "wm": 0.8}},
    "unlearning": {"site_probe_bacc": 0.55, "chance": 0.5, "mean_dice": 0.634, "dice_per_tissue": {"gm": 0.79},
                   "seconds": None},
}


def test_metric_value_reads_dotted_paths() -> None:
    values = {"a": 1, "b.c": 2, "d": {"e": {"f": 3}}}
    assert [metric_value(values, k) for k in ("a", "b.c", "d.e.f", "d.x", "a.b", "z")] == [1, 2, 3, None, None, None]


def test_columns_follow_the_metrics_present(tmp_path: Path) -> None:
    columns = present_columns(DICE, DICE_COLUMNS)
    assert [c.key for c in columns] == ["site_probe_bacc", "mean_dice", "dice_per_tissue.gm"]  # nothing unseen, no time
    rows = metrics_table(DICE, columns=columns)
    assert rows[0] == {"method": "none", "chance": 0.5, "site_probe_bacc": 0.8, "mean_dice": 0.61,
                       "dice_per_tissue.gm": 0.812}
    text = write_report(tmp_path, DICE, None, columns=columns).read_text()
    assert "<th scope=\"col\">GM Dice</th>" in text and "Age MAE" not in text and "Seconds" not in text
    assert '<td class="best">0.634</td>' in text and '<td class="best">0.812</td>' in text
    assert '<td class="best">0.550</td>' in text  # closest to chance
    assert f">{MISSING}<" not in text
    default = write_report(tmp_path / "default", DICE, None).read_text()  # brain-age columns by default
    assert "Age MAE (years)</th>" in default and "Mean Dice" not in default


def test_report_opens_with_summary_and_table_then_folded_notes(tmp_path: Path, pngs: dict[str, Path]) -> None:
    text = write_report(tmp_path, METRICS, 0.25, pngs, RECON, notes=["How to read: a probe ...", "Held-out scans: 9"]
                        ).read_text()
    order = [text.index(s) for s in ('<p class="summary">', '<table class="metrics">', '<table class="recon">',
                                     '<details class="notes">', "<figure>")]
    assert order == sorted(order)
    assert "<summary>How to read these results (2 notes)</summary>" in text
    summary = re.search(r'<p class="summary">(.*?)</p>', text).group(1)
    assert summary.startswith("Best of 3 methods: Site-probe bacc (chance 0.250): ")
    assert "Age MAE (years): unlearning (5.10)" in summary
    assert "Seconds" not in summary and "Site-probe p" not in summary
    single = write_report(tmp_path / "one", {"none": METRICS["none"]}, 0.25).read_text()
    assert ('<p class="summary">none: Site-probe bacc (chance 0.250) 0.912; Age MAE (years) 5.42; '
            "Age R\u00b2 from features 0.781; Sex-probe bacc 0.660.</p>") in single  # not measured: left out
    assert "<details" not in single


#: Injected at the top of a copy of report.html: records script errors, console errors and failed resources, and
#: at load writes into <body data-check=...> whether every <img> decoded.
_CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(
  e.message || ('resource ' + (e.target.src || '').slice(0, 40))), true);
const original = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); original(...a); };
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  document.body.setAttribute('data-check', JSON.stringify({n: imgs.length, broken: broken, errors: window.__errors}));
});
</script>"""


def _browser() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _check_in_browser(browser: str, page: Path) -> dict:
    import subprocess

    checked = page.with_name("checked.html")
    checked.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>\n" + _CHECK_SCRIPT, 1),
                       encoding="utf-8")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={page.parent / 'profile'}", "--dump-dom",
                           checked.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"data-check=\"(.*?)\"", done.stdout)
    assert found, f"no check result in the DOM (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(_browser() is None, reason="no Chromium or Chrome on this machine (CI installs none)")
def test_report_in_headless_browser(tmp_path: Path, pngs: dict[str, Path]) -> None:
    """Every figure of report.html decodes in a real browser, and nothing errors."""
    browser = _browser()
    page = write_report(tmp_path / "out", METRICS, 0.25, pngs, RECON, notes=["a note"])
    assert _check_in_browser(browser, page) == {"n": 2, "broken": [], "errors": []}
    # the check itself catches a figure that does not decode
    bad = tmp_path / "bad" / "report.html"
    bad.parent.mkdir()
    bad.write_text(page.read_text().replace("base64,iVBOR", "base64,AAAA", 1))
    result = _check_in_browser(browser, bad)
    assert result["n"] == 2 and result["broken"] == ["Embeddings <by site>"]
    assert len(result["errors"]) == 1 and result["errors"][0].startswith("resource data:image/png;base64,AAAA")


def test_intervals_over_seeds_and_the_verdict(tmp_path: Path) -> None:
    seeds = {
        "none": {"site_probe_bacc": 0.45, "site_probe_bacc_ci": [0.40, 0.50], "age_mae": 5.0, "age_mae_ci": None,
                 "chance": 0.25},
        "unlearning": {"site_probe_bacc": 0.33, "site_probe_bacc_ci": [0.31, 0.35], "age_mae": 5.1, "chance": 0.25},
    }
    rows = metrics_table(seeds)
    assert rows[0]["site_probe_bacc_ci"] == [0.40, 0.50] and rows[0]["age_mae_ci"] is None
    assert "site_probe_bacc_ci" in rows[1] and "age_mae_ci" not in rows[1]
    path = write_report(tmp_path, seeds, None, verdict="Unlearning <lowered> the site probe.")
    text = path.read_text(encoding="utf-8")
    assert '<td class="best">0.330 [0.310, 0.350]</td>' in text and ">0.450 [0.400, 0.500]<" in text
    assert ">5.00<" in text  # no interval: the mean alone
    assert "mean [95 % t-interval over seeds]" in text
    verdict = text.index('<p class="verdict">Unlearning &lt;lowered&gt; the site probe.</p>')
    assert verdict < text.index("<h2>Harmonisation methods</h2>")
    md, _ = write_comparison_table(seeds, tmp_path / "t.md", tmp_path / "t.json")
    assert "| **0.330 [0.310, 0.350]** |" in md.read_text()
    assert "mean [95 % t-interval" not in write_report(tmp_path / "plain", METRICS, 0.25).read_text()
