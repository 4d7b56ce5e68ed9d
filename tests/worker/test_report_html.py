"""The report renderer: every section drawn when present, "not measured" when absent, hostile text escaped."""
import copy
import re

import pytest

from worker.report_html import render_report_html, render_report_section, report_summary, speedup_batch1

LAYERS = ["layer1.0.conv1", "layer1.0.conv2"]


def full_report() -> dict:
    return {
        "zerodata_version": "0.1.0", "created_at": "2026-11-22T00:00:00Z",
        "model": {"format": "pt2", "sha256": "ab" * 32, "input_shape": [1, 3, 32, 32], "params": 272474},
        "config": {"entries": 4, "compile": True},
        "compression": {
            "pattern_library": [[0, 1, 4, 7], [1, 3, 4, 5]],
            "layers": [{"name": n, "kept_weights": 1024, "total_weights": 2304, "patterns_used": {"0": 10, "1": 6},
                        "connectivity": 0.25} for n in LAYERS],
            "compression_ratio": 2.25, "synthetic": {"mode": "bn-inversion", "samples": 256, "steps": 200}},
        "fidelity": {"samples": 512, "top1_agreement": 0.97, "mean_kl": 0.02, "output_cosine": 0.995,
                     "layers": [{"name": n, "relative_error": 0.01} for n in LAYERS]},
        "speed": {"isa": "avx2", "threads": 2, "batches": {"1": {"torch_dense_ms": 7.0, "onnxruntime_dense_ms": 1.8,
                                                                  "sparse_ms": 0.9}},
                  "speedup_vs_onnxruntime": 1.5,
                  "layers": [{"name": n, "kernel": "sparse", "reason": "", "dense_ms": 0.2, "sparse_ms": 0.1}
                             for n in LAYERS]},
        "sizes": {"model_bytes_before": 1_100_000, "model_bytes_after": 1_000_000, "sparse_package_bytes": 400_000},
        "seconds": {"total": 57.0},
    }


def test_full_report_draws_every_chart():
    html = render_report_html(full_report())
    assert html.startswith("<!doctype html>")
    assert "Not measured" not in html
    assert html.count("<svg class=\"zd-chart\"") == 6  # latency, layer time, sparsity, usage, error, size
    assert "2.00&times;" in html  # batch-1 speedup from the latencies, not the summary field
    assert "97.0%" in html and "55.6%" in html  # agreement, per-layer sparsity 1 - 1024/2304
    assert "upper bound" in html  # the synthetic agreement over-reads real agreement; the report says so


def test_self_contained_no_scripts_or_external_requests():
    html = render_report_html(full_report())
    assert "<script" not in html.lower()
    assert not re.search(r"(src|href)\s*=\s*\"(https?:)?//", html)
    assert "@import" not in html and "url(" not in html


@pytest.mark.parametrize("missing,phrase", [
    ("speed", "Not measured: latency"), ("fidelity", "Not measured: fidelity"),
    ("compression", "Not measured: compression"), ("sizes", None),
])
def test_missing_sections_say_not_measured(missing, phrase):
    report = full_report()
    del report[missing]
    html = render_report_section(report)
    if phrase:
        assert phrase in html
    if missing == "speed":
        assert "Not measured: per-layer kernel time" in html
        assert 'data-metric="speedup">not measured<' in html
        # Sizes from the speed section are gone too, never invented.
        assert "compact weights" not in html


def test_empty_report_renders_all_not_measured():
    html = render_report_html({})
    assert html.count("Not measured") == 5  # latency, layer time, compression, fidelity, size
    assert "<svg class=\"zd-chart\"" not in html


def test_garbage_types_do_not_crash():
    report = {"model": "x", "compression": {"layers": ["a", None, {"name": 3, "kept_weights": "lots"}],
                                            "pattern_library": "nope"},
              "speed": {"batches": {"1": None, "8": {"sparse_ms": float("nan")}}, "layers": 7},
              "fidelity": {"top1_agreement": "high", "layers": [None]}, "sizes": [], "seconds": None}
    html = render_report_html(report)
    assert "n/a" in html and "nan" not in html.lower().replace("nano", "")


def test_hostile_strings_are_escaped():
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    report = full_report()
    for section in ("compression", "fidelity", "speed"):
        report[section]["layers"][0]["name"] = evil
    report["speed"]["layers"][0]["reason"] = evil
    report["speed"]["batches"][evil] = {"sparse_ms": 1.0}
    report["model"]["format"] = evil
    report["config"][evil] = evil
    report["compression"]["layers"][0]["patterns_used"] = {evil: 3}
    html = render_report_html(report)
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_warnings_are_shown_escaped_and_absent_without_any():
    assert "zd-warnings" not in render_report_section(full_report())
    report = full_report()
    report["warnings"] = ["no BatchNorm in the model: inputs were prior-inverted", "<b>x</b>", None]
    box = re.search(r'<ul class="zd-warnings".*?</ul>', render_report_section(report)).group(0)
    assert box.count("<li>") == 2 and "prior-inverted" in box and "&lt;b&gt;x&lt;/b&gt;" in box
    report["warnings"] = "not a list"
    assert "zd-warnings" not in render_report_section(report)


@pytest.mark.parametrize("ratio, warned", [(0.62, True), (1.0, False), (1.4, False), (None, False), ("x", False)])
def test_a_package_slower_than_onnxruntime_is_a_warning(ratio, warned):
    from worker.pipeline import slower_than_onnxruntime
    warning = slower_than_onnxruntime({"speedup_vs_onnxruntime": ratio})
    assert bool(warning) == warned
    if warned:
        assert "0.62x" in warning and "ONNX Runtime" in warning


def test_a_slower_median_with_faster_best_runs_says_the_worker_was_busy():
    from worker.pipeline import slower_than_onnxruntime
    one = {"sparse_ms": 3.19, "onnxruntime_dense_ms": 2.96, "best": {"sparse_ms": 2.03, "onnxruntime_dense_ms": 2.67}}
    warning = slower_than_onnxruntime({"batches": {"1": one}})
    assert "0.93x" in warning and "1.32x by the fastest runs" in warning and "busy" in warning
    one["best"] = {"sparse_ms": 2.9, "onnxruntime_dense_ms": 2.67}  # slower either way: the plain verdict
    assert "faster here" in slower_than_onnxruntime({"batches": {"1": one}})
    one["best"] = "garbage"
    assert "faster here" in slower_than_onnxruntime({"batches": {"1": one}})


def test_summary_and_speedup():
    report = full_report()
    assert speedup_batch1(report) == pytest.approx(2.0)
    no_batches = copy.deepcopy(report)
    del no_batches["speed"]["batches"]
    assert speedup_batch1(no_batches) == 1.5
    assert report_summary({}) == {"speedup_vs_onnxruntime": None, "top1_agreement": None, "compression_ratio": None,
                                  "model_bytes_after": None, "model_bytes_before": None}
    assert report_summary(report)["top1_agreement"] == 0.97
