"""Geometry for the report's inline SVG charts: plain numbers in, positioned shapes out.

Templates under `worker/report_assets/` draw these; nothing here formats HTML, so every label
reaches the page through Jinja's autoescaping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

# Colour-blind-safe palette (Okabe-Ito, then a few extra) for pattern ids.
PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999",
           "#332288", "#88ccee", "#44aa99", "#117733", "#ddcc77", "#aa4499", "#882255", "#661100"]
LABEL_MAX = 26


def number(value) -> float | None:
    """A finite float, or None for anything else (missing, text, NaN, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def short_label(text, limit: int = LABEL_MAX) -> str:
    text = str(text)
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1):]


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    text: str
    text_x: float
    fill: str = ""
    title: str = ""


@dataclass
class Row:
    label: str
    full_label: str
    label_y: float
    bars: list[Bar] = field(default_factory=list)


@dataclass
class Chart:
    width: int
    height: int
    label_width: int
    rows: list[Row]
    legend: list[tuple[str, str]]  # (series name, css class)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (x, text)
    axis_y: float = 0.0


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    if maximum <= 0:
        return [0.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(maximum / step) + 1)]


def grouped_bars(rows: list[tuple[str, list[float | None]]], series: list[tuple[str, str]],
                 fmt: Callable[[float], str], *, width: int = 860, label_width: int = 200,
                 bar_height: int = 12, gap: int = 10, maximum: float | None = None) -> Chart:
    """Horizontal bars: one row per label, one bar per series; None values draw no bar ("n/a")."""
    values = [v for _, vals in rows for v in vals if number(v) is not None]
    top = maximum if maximum is not None else max(values, default=0.0)
    plot = width - label_width - 70  # room for the value text right of the longest bar
    scale = plot / top if top > 0 else 0.0
    y, out_rows = 4.0, []
    for label, vals in rows:
        row_height = bar_height * len(series)
        row = Row(short_label(label), str(label), y + row_height / 2 + 4)
        for i, ((name, css), value) in enumerate(zip(series, vals)):
            v = number(value)
            w = max(v * scale, 1.0) if v is not None and v > 0 else 0.0
            text = fmt(v) if v is not None else "n/a"
            row.bars.append(Bar(label_width, y + i * bar_height, w, bar_height - 2, css, text,
                                label_width + w + 4, title=f"{name}: {text}"))
        out_rows.append(row)
        y += row_height + gap
    ticks = [(label_width + t * scale, fmt(t)) for t in nice_ticks(top)] if scale else []
    return Chart(width, int(y + 18), label_width, out_rows, list(series), ticks, y)


def stacked_shares(rows: list[tuple[str, list[tuple[str, float]]]], colour_of: Callable[[str], str], *,
                   width: int = 860, label_width: int = 200, bar_height: int = 12, gap: int = 4) -> Chart:
    """One full-width bar per row split into shares (pattern usage per layer)."""
    plot = width - label_width - 10
    y, out_rows = 4.0, []
    for label, parts in rows:
        counts = [(key, c) for key, c in ((k, number(c)) for k, c in parts) if c and c > 0]
        total = sum(c for _, c in counts)
        row, x = Row(short_label(label), str(label), y + bar_height / 2 + 3), float(label_width)
        for key, c in counts:
            w = plot * c / total
            row.bars.append(Bar(x, y, w, bar_height, "share", "", x, fill=colour_of(key),
                                title=f"pattern {key}: {int(c)} kernels ({100 * c / total:.0f}%)"))
            x += w
        out_rows.append(row)
        y += bar_height + gap
    return Chart(width, int(y + 4), label_width, out_rows, [])


def pattern_colour(key) -> str:
    try:
        return PALETTE[int(key) % len(PALETTE)]
    except (TypeError, ValueError):
        return "#444444"


def pattern_glyphs(library, cell: int = 9) -> list[dict]:
    """Each pattern of the library as a 3x3 grid: kept positions filled with the pattern's colour."""
    glyphs = []
    for index, kept in enumerate(library if isinstance(library, list) else []):
        positions = {int(p) for p in kept if number(p) is not None and 0 <= p <= 8} if isinstance(kept, list) else set()
        cells = [{"x": (p % 3) * cell, "y": (p // 3) * cell, "kept": p in positions} for p in range(9)]
        glyphs.append({"index": index, "colour": pattern_colour(index), "cells": cells, "size": 3 * cell,
                       "title": f"pattern {index}: keeps {sorted(positions)}"})
    return glyphs
