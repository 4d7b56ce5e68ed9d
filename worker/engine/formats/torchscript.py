"""TorchScript `.pt`: run through torch's own TorchScript -> torch.export converter to get an FX
module with real layer modules; save by copying the pruned tensors into the loaded ScriptModule.

`torch.jit.load` runs TorchScript (not Python) code from the archive; the worker process is the
sandbox for that, and archive_safety has checked the archive's layout and pickles first.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from worker.engine import archive_safety
from worker.engine.errors import CorruptModelError, InvalidConfigError, UnsupportedModelError
from worker.engine.formats.model import LoadedModel
from worker.engine.formats.precision import HALF_DTYPES
from worker.engine.formats.pt2 import from_exported_program


def load_torchscript(path: Path, input_shape: tuple[int, ...] | None) -> LoadedModel:
    archive_safety.check_torchscript_archive(path)
    if input_shape is None:
        raise InvalidConfigError("TorchScript models do not declare their input shape: "
                                 "give one with --input-shape N,C,H,W (e.g. 1,3,32,32)")
    try:
        script = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CorruptModelError(f"{path.name} is not a loadable TorchScript archive: {exc}") from exc
    script.eval()
    # Batch 2 (not 1) so torch.export keeps the batch dimension dynamic instead of specialising it; a
    # half-precision script runs on inputs of its weights' dtype (load_model then prunes it in float32).
    sample = torch.zeros(2, *input_shape[1:], dtype=_compute_dtype(script))
    try:
        with torch.no_grad():
            script(sample)
    except Exception as exc:
        raise InvalidConfigError(f"the model does not run on an input of shape {list(input_shape)}: "
                                 f"{str(exc).strip().splitlines()[-1][:300]}") from exc
    try:
        from torch._export.converter import TS2EPConverter
        with warnings.catch_warnings():  # "num_batches_tracked is never used": expected in eval mode
            warnings.simplefilter("ignore", UserWarning)
            program = TS2EPConverter(script, (sample,)).convert()
    except Exception as exc:
        raise UnsupportedModelError(
            f"cannot convert this TorchScript model for pruning ({type(exc).__name__}: {str(exc)[:300]}); "
            "upload it as a torch.export .pt2 or ONNX instead") from exc
    loaded = from_exported_program(program, path, "torchscript")
    loaded.input_shape = (1, *input_shape[1:])
    # Constants the conversion lifted out of the script's code (no state_dict entry there): kept to check that
    # pruning left them alone, since the saver can only write back what the script's state_dict holds.
    own = script.state_dict()
    lifted = {name: t.detach().clone() for name, t in loaded.module.state_dict().items() if name not in own}
    loaded.save_state = (script, lifted)
    return loaded


def _compute_dtype(script: torch.jit.ScriptModule) -> torch.dtype:
    floating = [t.dtype for t in script.state_dict().values() if t.is_floating_point()]
    return floating[0] if floating and floating[0] in HALF_DTYPES else torch.float32


def save_torchscript(loaded: LoadedModel, module: torch.nn.Module, path: Path) -> None:
    script, lifted = loaded.save_state
    target = script.state_dict()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name not in target and name in lifted and torch.equal(lifted[name], tensor):
                continue  # a constant of the script's code, unchanged
            if name not in target:
                raise UnsupportedModelError(f"pruned tensor {name!r} has no counterpart in the TorchScript module")
            if target[name].shape != tensor.shape:
                raise UnsupportedModelError(f"{name!r}: pruned shape {tuple(tensor.shape)} differs from "
                                            f"the TorchScript module's {tuple(target[name].shape)}")
            target[name].copy_(tensor)
    torch.jit.save(script, str(path))
