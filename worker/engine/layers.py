"""Find the layers the engine can prune, in the order the model runs them."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from worker.engine.errors import InvalidConfigError, UnsupportedModelError

# kind names used in the report
CONV3X3, DEPTHWISE, FIRST_CONV, CONV1X1, LINEAR, OTHER = "conv3x3", "depthwise", "first_conv", "conv1x1", "linear", "other"


@dataclass
class PrunableLayer:
    name: str            # module name, e.g. "layer1.0.conv1"
    module: nn.Module
    kind: str            # one of the kind names above
    bn_name: str | None  # the BatchNorm2d that directly consumes this conv's output, if any
    positions: int = 1   # output positions per sample (H_out * W_out for convs): FLOPs = 2 * weights * positions

    @property
    def param_name(self) -> str:
        return f"{self.name}.weight"


def _kind(module: nn.Module, first: bool) -> str:
    if isinstance(module, nn.Linear):
        return LINEAR
    w = module.weight
    if module.groups == 1 and tuple(w.shape[2:]) == (3, 3):
        return FIRST_CONV if first else CONV3X3
    if module.groups > 1 and module.groups == module.in_channels and w.shape[1] == 1:
        return DEPTHWISE
    if module.groups == 1 and tuple(w.shape[2:]) == (1, 1):
        return CONV1X1
    return OTHER


def execution_order(model: nn.Module, example: torch.Tensor) -> list[PrunableLayer]:
    """Run one example and record every Conv2d/Linear in call order, plus the BatchNorm fed by each conv."""
    named = {m: n for n, m in model.named_modules()}
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []
    bn_of: dict[str, str] = {}
    # id -> (conv name, the output itself): holding the tensor keeps its id from being reused by a later tensor
    # once the model frees it (an imported ONNX graph frees values early: a pre-activation ResNet's BN got the
    # wrong conv's scale and --connectivity crashed)
    last_out: dict[int, tuple[str, torch.Tensor]] = {}
    handles = []

    def hook(mod, inputs, output):
        name = named[mod]
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            if name not in [c[0] for c in calls]:
                channels = output.shape[-1] if isinstance(mod, nn.Linear) else output.shape[1]
                calls.append((name, mod, output[0].numel() // channels))
            last_out[id(output)] = (name, output)
        elif isinstance(mod, nn.BatchNorm2d) and inputs and id(inputs[0]) in last_out:
            producer, tensor = last_out[id(inputs[0])]
            if tensor is inputs[0]:
                bn_of.setdefault(producer, name)

    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # the model itself failed on this input: the shape is most likely wrong
        raise InvalidConfigError(f"the model does not run on an input of shape {tuple(example.shape)}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    layers, seen_conv = [], False
    for name, mod, positions in calls:
        first = isinstance(mod, nn.Conv2d) and not seen_conv
        seen_conv = seen_conv or isinstance(mod, nn.Conv2d)
        layers.append(PrunableLayer(name, mod, _kind(mod, first), bn_of.get(name), positions))
    return layers


def check_weights_float32(model: nn.Module) -> None:
    """The ADMM solves, the synthetic inputs and the compiled kernels are float32. Loading already turned float16 /
    bfloat16 tensors into float32 (formats/precision.py); what is left here (float64) would fail later on a dtype
    mismatch that names neither the tensor nor the fix."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise UnsupportedModelError(f"{name} is {str(tensor.dtype).removeprefix('torch.')}; zerodata compresses "
                                        "float32, float16 and bfloat16 models: export it after model.float() (and a "
                                        "float32 example input)")


def check_weights_finite(model: nn.Module) -> None:
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UnsupportedModelError(f"{name} contains NaN or Inf values; the model cannot be compressed")
