"""torch.export `.pt2`: load into an FX module with real layer modules, save by re-exporting it
with the same input signature and dynamic dimensions as the uploaded program."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from worker.engine import archive_safety
from worker.engine.errors import CorruptModelError, UnsupportedModelError
from worker.engine.formats.fx_modules import lift_layers_to_modules
from worker.engine.formats.model import LoadedModel
from worker.engine.formats.precision import restored
from worker.engine.formats.static_batch import follow_runtime_batch


@dataclass
class InputSpec:
    """One tensor input of the program: static sizes (None where dynamic) and dynamic ranges."""

    shape: list[int | None]
    dynamic: dict[int, tuple[int, int | None]]  # dim -> (min, max or None for unbounded)
    dtype: torch.dtype


def load_pt2(path: Path) -> LoadedModel:
    archive_safety.check_pt2_archive(path)  # raises UnsafeModelError (an EngineError) naming the member
    try:
        with _weights_only_loads():
            program = torch.export.load(str(path))
    except Exception as exc:  # torch raises many kinds for a damaged archive
        raise CorruptModelError(f"{path.name} is not a readable torch.export program: {exc}") from exc
    return from_exported_program(program, path, "pt2")


def from_exported_program(program: torch.export.ExportedProgram, path: Path, fmt: str) -> LoadedModel:
    specs = _input_specs(program)
    module = _plain_graph_module(program.module())
    first = specs[0].shape
    if first and first[0] is not None:
        follow_runtime_batch(module, first[0])
    warnings = lift_layers_to_modules(module)
    module.eval()
    if len(first) == 4 and all(d is not None for d in first[1:]):
        input_shape = (1 if first[0] is None else first[0], *first[1:])
    else:
        input_shape = None
    return LoadedModel(module=module, format=fmt, input_shape=input_shape, source_path=path,
                       warnings=warnings, save_state=specs)


def save_pt2(loaded: LoadedModel, module: torch.nn.Module, path: Path, input_shape=None) -> None:
    specs: list[InputSpec] = loaded.save_state
    hint = input_shape or loaded.input_shape
    args, dynamic = [], []
    for i, spec in enumerate(specs):
        sizes = []
        for d, size in enumerate(spec.shape):
            if size is None:
                low, high = spec.dynamic[d]
                want = hint[d] if (i == 0 and hint and d > 0 and d < len(hint)) else 2
                size = max(low, want if high is None else min(want, high))
            sizes.append(size)
        args.append(torch.zeros(sizes, dtype=spec.dtype))
        dims = {d: _dim(i, d, low, high) for d, (low, high) in spec.dynamic.items()} or None
        dynamic.append(dims)
    module = restored(module.to("cpu"), loaded.stored_dtypes).eval()
    program = torch.export.export(module, tuple(args), dynamic_shapes=tuple(dynamic))
    torch.export.save(program, str(path))


def _plain_graph_module(unlifted: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The unlifted program refuses .train()/.eval(); recovery needs both, so rebuild it as a plain
    GraphModule holding the same tensors, graph and input/output tree specs."""
    module = torch.fx.GraphModule(unlifted, unlifted.graph, class_name="ZerodataModule")
    for attr in ("_in_spec", "_out_spec"):
        if hasattr(unlifted, attr):
            setattr(module, attr, getattr(unlifted, attr))
    return module


def _dim(i: int, d: int, low: int, high: int | None):
    name = ("batch" if i == 0 else f"batch{i}") if d == 0 else f"in{i}_dim{d}"
    return torch.export.Dim(name, min=low) if high is None else torch.export.Dim(name, min=low, max=high)


def _input_specs(program: torch.export.ExportedProgram) -> list[InputSpec]:
    user_inputs = [s for s in program.graph_signature.input_specs
                   if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    by_name = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = []
    for spec in user_inputs:
        val = by_name[spec.arg.name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UnsupportedModelError(f"input {spec.arg.name!r} is not a tensor; zerodata handles tensor inputs only")
        shape, dynamic = [], {}
        for d, size in enumerate(val.shape):
            if isinstance(size, int):
                shape.append(size)
                continue
            shape.append(None)
            bounds = program.range_constraints.get(size.node.expr)
            low = _finite(bounds.lower) if bounds is not None else None
            high = _finite(bounds.upper) if bounds is not None else None
            low = 0 if low is None else low
            dynamic[d] = (max(low, 1), high)
        specs.append(InputSpec(shape, dynamic, val.dtype))
    if len(specs) != 1:
        raise UnsupportedModelError(f"the program takes {len(specs)} inputs; zerodata handles single-input models")
    return specs


def _finite(bound) -> int | None:
    try:
        value = int(bound)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None  # int_oo / sympy infinity
    return value if abs(value) < 2**62 else None


@contextlib.contextmanager
def _weights_only_loads():
    """Defence in depth: make every torch.load inside torch.export.load weights-only, even where
    torch asks for weights_only=False (archive_safety already refused pickled payloads)."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old
