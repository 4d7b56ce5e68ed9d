"""The one report renderer: report.json -> HTML with inline SVG charts.

`render_report_section` gives the fragment the browser's job page shows; `render_report_html`
wraps the same fragment in a self-contained page (inline CSS, no scripts, no external requests)
that the pipeline writes as the `report.html` artifact. A section the pipeline did not run is
absent from report.json and shows as "not measured"; nothing is ever filled in.
Pure: no torch, no app imports, so the API process may use it too.
"""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from worker.report_charts import grouped_bars, number, pattern_colour, pattern_glyphs, stacked_shares

ASSETS = Path(__file__).with_name("report_assets")
LATENCY_SERIES = [("dense PyTorch", "s-torch"), ("dense ONNX Runtime", "s-ort"), ("compiled sparse", "s-sparse")]


def as_dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value) -> list:
    return value if isinstance(value, list) else []


def fmt_ms(v: float) -> str:
    return f"{v:.3g} ms" if v < 100 else f"{v:.0f} ms"


def fmt_bytes(v) -> str:
    v = number(v)
    if v is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.2f} {unit}"
    return f"{v:.0f} B"


def fmt_pct(v) -> str:
    v = number(v)
    return "n/a" if v is None else f"{100 * v:.1f}%"


def fmt_num(v, digits: int = 3) -> str:
    v = number(v)
    return "n/a" if v is None else f"{v:.{digits}g}"


def _ort_over_sparse(timings) -> float | None:
    timings = as_dict(timings)
    ort, sparse = number(timings.get("onnxruntime_dense_ms")), number(timings.get("sparse_ms"))
    return ort / sparse if ort and sparse and ort > 0 and sparse > 0 else None


def _batch1(report: dict) -> dict:
    return as_dict(as_dict(as_dict(as_dict(report).get("speed")).get("batches")).get("1"))


def speedup_batch1(report: dict) -> float | None:
    """Compiled sparse vs dense ONNX Runtime at batch 1 (the CI gate); falls back to the summary figure."""
    return _ort_over_sparse(_batch1(report)) or number(as_dict(as_dict(report).get("speed")).get(
        "speedup_vs_onnxruntime"))


def fastest_runs_speedup_batch1(report: dict) -> float | None:
    """The same ratio from the fastest interleaved run of each contender (None if not recorded)."""
    return _ort_over_sparse(_batch1(report).get("best"))


def report_summary(report: dict) -> dict:
    """The at-a-glance numbers for job lists and CI gates; None where not measured."""
    report = as_dict(report)
    sizes = as_dict(report.get("sizes"))
    return {"speedup_vs_onnxruntime": speedup_batch1(report),
            "top1_agreement": number(as_dict(report.get("fidelity")).get("top1_agreement")),
            "compression_ratio": number(as_dict(report.get("compression")).get("compression_ratio")),
            "model_bytes_after": number(sizes.get("model_bytes_after")),
            "model_bytes_before": number(sizes.get("model_bytes_before"))}


def compression_view(section: dict) -> dict | None:
    if not section:
        return None
    layers = [as_dict(layer) for layer in as_list(section.get("layers"))]
    sparsity_rows = []
    for layer in layers:
        kept, total = number(layer.get("kept_weights")), number(layer.get("total_weights"))
        sparsity = 1 - kept / total if kept is not None and total else None
        sparsity_rows.append((layer.get("name", "?"), [sparsity, number(layer.get("connectivity"))]))
    usage_rows = [(layer.get("name", "?"), list(as_dict(layer.get("patterns_used")).items()))
                  for layer in layers if as_dict(layer.get("patterns_used"))]
    return {
        "section": section, "layers": layers,
        "sparsity_chart": grouped_bars(sparsity_rows, [("weights removed", "s-sparsity"),
                                                       ("kernels removed (connectivity)", "s-conn")],
                                       fmt_pct, maximum=1.0) if layers else None,
        "usage_chart": stacked_shares(usage_rows, pattern_colour) if usage_rows else None,
        "glyphs": pattern_glyphs(section.get("pattern_library")),
        "synthetic": as_dict(section.get("synthetic")), "seconds": as_dict(section.get("seconds")),
    }


def speed_view(section: dict) -> dict | None:
    if not section:
        return None
    batches = as_dict(section.get("batches"))
    latency_rows = [(f"batch {name}", [as_dict(b).get("torch_dense_ms"), as_dict(b).get("onnxruntime_dense_ms"),
                                       as_dict(b).get("sparse_ms")]) for name, b in batches.items()]
    layers = [as_dict(layer) for layer in as_list(section.get("layers"))]
    layer_rows = [(layer.get("name", "?"), [layer.get("dense_ms"), layer.get("sparse_ms")]) for layer in layers]
    return {
        "section": section, "layers": layers, "speedup_batch1": speedup_batch1({"speed": section}),
        "latency_chart": grouped_bars(latency_rows, LATENCY_SERIES, fmt_ms) if latency_rows else None,
        "layer_chart": grouped_bars(layer_rows, [("dense", "s-ort"), ("sparse kernel", "s-sparse")], fmt_ms,
                                    bar_height=9, gap=5) if layer_rows else None,
    }


def fidelity_view(section: dict) -> dict | None:
    if not section:
        return None
    layers = [as_dict(layer) for layer in as_list(section.get("layers"))]
    rows = [(layer.get("name", "?"), [layer.get("relative_error")]) for layer in layers]
    return {"section": section,
            "error_chart": grouped_bars(rows, [("relative output error", "s-error")], fmt_pct) if rows else None}


def sizes_view(sizes: dict, speed: dict) -> dict | None:
    rows = [(label, [sizes.get(key)]) for label, key in
            (("model before", "model_bytes_before"), ("model after", "model_bytes_after"),
             ("masks", "masks_bytes"), ("compiled sparse package", "sparse_package_bytes")) if key in sizes]
    rows += [(label, [speed.get(key)]) for label, key in
             (("dense weights", "dense_weight_bytes"), ("compact weights", "compact_weight_bytes")) if key in speed]
    if not rows:
        return None
    return {"sizes": sizes, "chart": grouped_bars(rows, [("bytes", "s-size")], fmt_bytes)}


def report_view(report: dict) -> dict:
    report = as_dict(report)
    speed = as_dict(report.get("speed"))
    return {
        "report": report, "model": as_dict(report.get("model")), "config": as_dict(report.get("config")),
        "summary": report_summary(report), "seconds": as_dict(report.get("seconds")),
        "compression": compression_view(as_dict(report.get("compression"))),
        "speed": speed_view(speed), "fidelity": fidelity_view(as_dict(report.get("fidelity"))),
        "sizes": sizes_view(as_dict(report.get("sizes")), speed), "latency_series": LATENCY_SERIES,
        "warnings": [str(w) for w in as_list(report.get("warnings")) if w],
    }


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(ASSETS)), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ms=lambda v: "n/a" if number(v) is None else fmt_ms(number(v)), bytes=fmt_bytes,
                       pct=fmt_pct, num=fmt_num)
    return env


_ENV = environment()


def render_report_section(report: dict) -> str:
    """The report as an HTML fragment (`<section class="zd-report">`) for embedding in a page."""
    return _ENV.get_template("report_section.html.j2").render(**report_view(report))


def report_css() -> str:
    return (ASSETS / "report.css").read_text()


def render_report_html(report: dict) -> str:
    """A complete, self-contained page: inline CSS and SVG, no scripts, no external requests."""
    model = as_dict(as_dict(report).get("model"))
    return _ENV.get_template("report_page.html.j2").render(
        css=report_css(), section=render_report_section(report), model=model,
        created_at=as_dict(report).get("created_at", ""))
