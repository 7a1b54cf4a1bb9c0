"""The reconstruction-unlearning table as Markdown, and its two Pareto plots (quality vs time, vs retain data).

Written by :func:`~harmonize.workflows.recon_unlearning.run_recon_unlearning` from the rows of
:func:`~harmonize.metrics.reconstruction.unlearning_row`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from harmonize.audit.verdict import with_interval
from harmonize.io import atomic_write
from harmonize.keys import ReconMethod

__all__ = ["format_markdown", "plot_pareto"]


def _psnr(row: Mapping[str, Any], key: str) -> str:
    """A PSNR with its 95 % interval over seeds when the row has one (``<key>_ci``)."""
    return with_interval(row[key], row.get(f"{key}_ci"), 2)


def format_markdown(
    table: Sequence[Mapping[str, Any]],
    fraction_table: Sequence[Mapping[str, Any]] = (),
    zero_filled: Mapping[str, Any] | None = None,
) -> str:
    """The table as markdown: PSNR (dB) and SSIM per set, seconds and time as a percentage of the oracle's.

    Rows with ``iterations`` (training iterations) get it and its percentage of the oracle's; PSNRs with an
    interval over seeds (``bta_psnr_ci``, ...) are shown as ``mean [low, high]``.
    """
    oracle_row = next((r for r in table if r["method"] == ReconMethod.ORACLE), {})
    oracle = oracle_row.get("seconds")
    steps = bool(table) and all(r.get("iterations") is not None for r in table)
    oracle_steps = oracle_row.get("iterations") if steps else None
    header = "| method | BTA PSNR | BTA SSIM | KTA PSNR | KTA SSIM | UA PSNR | UA SSIM | seconds | % oracle time |"
    header += " iterations | % oracle iterations |" if steps else ""
    lines = [header, "|---" * header.count(" |") + "|"]
    for r in table:
        share = f"{100 * r['seconds'] / oracle:.0f}" if oracle else "-"
        line = (f"| {r['method']} | {_psnr(r, 'bta_psnr')} | {r['bta_ssim']:.3f} | {_psnr(r, 'kta_psnr')} "
                f"| {r['kta_ssim']:.3f} | {_psnr(r, 'ua_psnr')} | {r['ua_ssim']:.3f} | {r['seconds']:.1f} | {share} |")
        if steps:
            step_share = f"{100 * r['iterations'] / oracle_steps:.1f}" if oracle_steps else "-"
            line += f" {r['iterations']:g} | {step_share} |"
        lines.append(line)
    intro = ("BTA: retain test set; KTA: forget test set; UA: forget training set (Xue et al.). PSNR in dB, "
             "per volume, averaged over volumes")
    intro += (", then over seeds: mean [95 % interval]" if any(r.get("bta_psnr_ci") for r in table) else "")
    text = intro + ".\n\n" + "\n".join(lines) + "\n"
    if zero_filled:
        text += (f"\nZero-filled input (no network): BTA {zero_filled['bta_psnr']:.2f} dB, KTA "
                 f"{zero_filled['kta_psnr']:.2f} dB, UA {zero_filled['ua_psnr']:.2f} dB.\n")
    if fraction_table:
        text += "\nRetain-fraction sweep:\n\n| method | fraction | BTA PSNR | KTA PSNR | UA PSNR | seconds |\n"
        text += "|---|---|---|---|---|---|\n"
        for r in fraction_table:
            text += (f"| {r['method']} | {r['fraction']:.2f} | {r['bta_psnr']:.2f} | {r['kta_psnr']:.2f} "
                     f"| {r['ua_psnr']:.2f} | {r['seconds']:.1f} |\n")
    return text


def plot_pareto(
    table: Sequence[Mapping[str, Any]],
    fraction_table: Sequence[Mapping[str, Any]],
    seconds_path: str | os.PathLike,
    fraction_path: str | os.PathLike,
) -> None:
    """Two Pareto plots: retain and forget PSNR vs wall time, and vs the retain fraction (FT variants).

    The original and the oracle are drawn as horizontal reference lines in both.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = {r["method"]: r for r in table if r["method"] in (ReconMethod.ORIGINAL, ReconMethod.ORACLE)}
    styles = {ReconMethod.ORIGINAL: ("tab:red", "--"), ReconMethod.ORACLE: ("tab:green", ":")}

    def references(ax: Any, key: str) -> None:
        for name, r in refs.items():
            color, style = styles[ReconMethod(name)]
            ax.axhline(r[key], color=color, linestyle=style, linewidth=1, label=f"{name}")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "bta_psnr", "retain test (BTA)"), (axes[1], "kta_psnr", "forget test (KTA)")):
        references(ax, key)
        for r in table:
            ax.scatter(r["seconds"], r[key], color="black" if r["method"] not in refs else styles[r["method"]][0])
            ax.annotate(r["method"], (r["seconds"], r[key]), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("wall time (s, log)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Reconstruction unlearning: quality vs time (higher BTA and lower KTA are better)")
    fig.tight_layout()
    _save_figure(fig, seconds_path)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = list(dict.fromkeys(r["method"] for r in fraction_table))
    for ax, key, title in ((axes[0], "bta_psnr", "retain test (BTA)"), (axes[1], "kta_psnr", "forget test (KTA)")):
        references(ax, key)
        for m in methods:
            rows = sorted((r for r in fraction_table if r["method"] == m), key=lambda r: r["fraction"])
            ax.plot([r["fraction"] for r in rows], [r[key] for r in rows], marker="o", label=m)
        ax.set_xlabel("fraction of the retain set used")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Reconstruction unlearning: quality vs retain data used")
    fig.tight_layout()
    _save_figure(fig, fraction_path)
    plt.close(fig)


def _save_figure(fig: Any, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
