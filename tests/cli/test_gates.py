"""The CI gates of `zerodata submit --wait` on a finished job's report (no service needed)."""
from app.cli.client_commands import check_gates
from worker.engine.compress import GAUSSIAN_FIDELITY_WARNING


def _gates(report: dict, **given) -> list[str]:
    return check_gates(report, None, **{"min_speedup": None, "min_agreement": None, "max_size_mb": None, **given})


def test_agreement_gate_passes_and_misses_on_the_number():
    report = {"fidelity": {"top1_agreement": 0.96}}
    assert _gates(report, min_agreement=0.95) == []
    [missed] = _gates(report, min_agreement=0.97)
    assert "0.9600 is below --min-agreement 0.97" in missed


def test_agreement_measured_on_noise_never_passes_the_gate():
    report = {"fidelity": {"top1_agreement": 0.99, "warning": GAUSSIAN_FIDELITY_WARNING}}
    [missed] = _gates(report, min_agreement=0.5)
    assert "cannot be gated on" in missed and "gaussian-noise" in missed
    assert _gates(report) == []                      # no gate asked for: the warning alone fails nothing


def test_a_report_without_fidelity_misses_the_gate():
    for report in ({}, {"fidelity": None}, {"fidelity": "garbage"}):
        [missed] = _gates(report, min_agreement=0.5)
        assert "no top-1 agreement" in missed
