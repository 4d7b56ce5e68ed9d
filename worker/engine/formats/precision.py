"""Half-precision uploads: the engine prunes in float32 (ADMM solves, synthetic inputs, kernels), then the saver
writes every tensor back in the dtype the upload stored it in. Pruned zeros stay zeros in any dtype, and an
untouched float16 or bfloat16 weight survives the round trip through float32 exactly."""
from __future__ import annotations

import copy

import torch
from torch import nn

HALF_DTYPES = (torch.float16, torch.bfloat16)


def half_tensors(module: nn.Module) -> dict[str, torch.dtype]:
    """state_dict name -> dtype of every float16 / bfloat16 parameter and buffer."""
    return {name: t.dtype for name, t in module.state_dict(keep_vars=True).items() if t.dtype in HALF_DTYPES}


def to_float32(module: nn.Module) -> None:
    """Half-precision parameters and buffers become float32 in place; float64 ones are left for validation to
    refuse (a float64 model round-tripped through float32 would lose precision in the weights never pruned)."""
    with torch.no_grad():
        for mod in module.modules():
            for param in mod._parameters.values():
                if param is not None and param.dtype in HALF_DTYPES:
                    param.data = param.data.float()
            for name, buffer in mod._buffers.items():
                if buffer is not None and buffer.dtype in HALF_DTYPES:
                    mod._buffers[name] = buffer.float()


def restored(module: nn.Module, dtypes: dict[str, torch.dtype]) -> nn.Module:
    """A copy of `module` whose named tensors are cast back to `dtypes` (the upload's)."""
    if not dtypes:
        return module
    module = copy.deepcopy(module)
    with torch.no_grad():
        for name, dtype in dtypes.items():
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            if attr in owner._parameters:
                owner._parameters[attr].data = owner._parameters[attr].data.to(dtype)
            elif attr in owner._buffers:
                owner._buffers[attr] = owner._buffers[attr].to(dtype)
    return module


def precision_warning(dtype_names: set[str], tensors: int) -> str:
    names = " and ".join(sorted(dtype_names))
    what = f"stores {tensors} tensors" if tensors else "takes its input"
    return (f"the model {what} in {names}: zerodata pruned it in float32 and saved the pruned model back in the "
            f"upload's dtypes; the compiled sparse package computes in float32 (it casts half-precision inputs up "
            f"and its outputs back)")
