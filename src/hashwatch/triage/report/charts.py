"""The report's charts, drawn with matplotlib: inline SVG for the HTML page (text kept as
text, no external asset) and PNG for the PDF. Each chart is drawn from report.json's data.
"""

from __future__ import annotations

import io
import re
from typing import Any

__all__ = ["CHARTS", "chart_png", "chart_svg"]

_COLORS = {"known": "#b03030", "known_exact": "#b03030", "known_near": "#d07020",
           "unknown": "#3060a0", "not_image": "#909090", "error": "#505050"}
_GROUPS = ("known", "unknown", "not_image", "error")


def _figure(height: float = 2.6) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, height), dpi=100)
    fig.set_layout_engine("constrained")
    return fig


def _states(ax: Any, s: dict[str, Any]) -> None:
    items = [(k, v) for k, v in s["per_state"].items()]
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1],
            color=[_COLORS.get(k, "#777") for k, _ in items][::-1])
    ax.set_title("Files per state")
    ax.set_xlabel("files")
    for i, (_, v) in enumerate(items[::-1]):
        ax.text(v, i, f" {v:,}", va="center", fontsize=8)


def _categories(ax: Any, s: dict[str, Any]) -> None:
    items = list(s["per_category"].items()) or [("none", 0)]
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#b03030")
    ax.set_title("Known files per category")
    ax.set_xlabel("files")
    for i, (_, v) in enumerate(items[::-1]):
        ax.text(v, i, f" {v:,}", va="center", fontsize=8)


def _timeline(fig: Any, s: dict[str, Any]) -> None:
    axes = fig.subplots(1, 2, sharey=False)
    for ax, key, title in ((axes[0], "taken", "Files by month taken (EXIF / container)"),
                           (axes[1], "modified", "Files by month last modified")):
        data = s["timeline"][key]
        months = list(data)
        bottom = [0] * len(months)
        for g in _GROUPS:
            vals = [data[m].get(g, 0) for m in months]
            if any(vals):
                ax.bar(months, vals, bottom=bottom, color=_COLORS[g], label=g)
                bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
        ax.set_title(title, fontsize=9)
        if not months:
            ax.text(0.5, 0.5, "no dates recorded", ha="center", va="center",
                    transform=ax.transAxes)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        if any(bottom):
            ax.legend(fontsize=7)


def _devices(ax: Any, s: dict[str, Any]) -> None:
    devs = s["devices"][:15]
    labels = [d["label"][:48] for d in devs][::-1]
    known = [d["known"] for d in devs][::-1]
    unknown = [d["unknown"] for d in devs][::-1]
    if devs:
        ax.barh(labels, known, color=_COLORS["known"], label="known")
        ax.barh(labels, unknown, left=known, color=_COLORS["unknown"], label="unknown")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no camera or device recorded in any file", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_title("Files per recording device (make, model, serial)")
    ax.set_xlabel("files")
    ax.tick_params(axis="y", labelsize=7)


def _draw(name: str, s: dict[str, Any]) -> Any:
    if name == "states":
        fig = _figure(2.4)
        _states(fig.add_subplot(), s)
    elif name == "categories":
        fig = _figure(0.6 + 0.28 * max(len(s["per_category"]), 2))
        _categories(fig.add_subplot(), s)
    elif name == "timeline":
        fig = _figure(3.0)
        _timeline(fig, s)
    elif name == "devices":
        fig = _figure(0.9 + 0.3 * max(min(len(s["devices"]), 15), 2))
        _devices(fig.add_subplot(), s)
    else:
        raise ValueError(f"unknown chart {name!r}")
    return fig


CHARTS = ("states", "categories", "timeline", "devices")


def chart_svg(name: str, s: dict[str, Any]) -> str:
    """One chart as an ``<svg>`` element (no XML prolog, no date metadata, text as text)."""
    import matplotlib

    fig = _draw(name, s)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "hashwatch"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    # inline in HTML the parser sets the SVG and XLink namespaces itself: drop the
    # declarations, so the page holds no URL at all
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    return svg.replace("<svg ", f'<svg class="chart" data-chart="{name}" role="img" '
                       f'aria-label="{name} chart" ', 1)


def chart_png(name: str, s: dict[str, Any], dpi: int = 150) -> bytes:
    fig = _draw(name, s)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
