"""The hostile .pt2 fixtures are not strawmen: stock `torch.export.load` (torch 2.13) runs each
payload, in a throwaway subprocess, and intake refuses every one of them before anything loads."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.intake import IntakeError, inspect_upload
from tests.hostile_models import (SHARED_MODELS, evil_pickle, pt2_with_pickled_weight, pt2_with_program_edit,
                                  rewrite_zip, torch_save_zip)

RESNET20_PT2 = SHARED_MODELS / "resnet20_cifar10.pt2"


def _touch(marker: Path) -> str:
    return f"__import__('pathlib').Path('{marker}').touch()"


def hostile_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (hostile .pt2, marker its payload creates)."""
    markers = {name: folder / f"marker-{name}" for name in ("sample_inputs", "pickled_weight", "sympy", "guard")}
    files = {
        "sample_inputs": rewrite_zip(RESNET20_PT2, folder / "sample_inputs.pt2", replace={
            "data/sample_inputs/model.pt": torch_save_zip(evil_pickle(markers["sample_inputs"]))}),
        "pickled_weight": pt2_with_pickled_weight(RESNET20_PT2, folder / "pickled_weight.pt2",
                                                  torch_save_zip(evil_pickle(markers["pickled_weight"]))),
    }

    def sympy_payload(program):
        sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        sizes[0]["as_expr"]["expr_str"] = f"{_touch(markers['sympy'])} or Symbol('s77', positive=True, integer=True)"

    def guard_payload(program):
        program["guards_code"] = [f"{_touch(markers['guard'])} is None"]

    files["sympy"] = pt2_with_program_edit(RESNET20_PT2, folder / "sympy.pt2", sympy_payload)
    files["guard"] = pt2_with_program_edit(RESNET20_PT2, folder / "guard.pt2", guard_payload)
    return {name: (files[name], markers[name]) for name in files}


STOCK_LOADER = textwrap.dedent("""
    import sys, torch
    for path in sys.argv[1:]:
        try:
            program = torch.export.load(path)
            program.module()(torch.zeros(1, 3, 32, 32))
        except Exception:
            pass
""")


def test_stock_loading_runs_every_payload_and_intake_refuses_them(tmp_path):
    cases = hostile_files(tmp_path)
    for name, (path, marker) in cases.items():
        with pytest.raises(IntakeError) as caught:
            inspect_upload(path, max_bytes=1 << 30)
        assert caught.value.status_code == 400, name
        assert not marker.exists(), f"{name}: intake ran the payload"
    # Now show what would have happened without intake: stock torch in a child process.
    subprocess.run([sys.executable, "-c", STOCK_LOADER, *(str(p) for p, _ in cases.values())],
                   capture_output=True, timeout=300, cwd=tmp_path)
    ran = sorted(name for name, (_, marker) in cases.items() if marker.exists())
    assert ran == sorted(cases), f"payloads stock torch ran: {ran}"
