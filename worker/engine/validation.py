"""Check a job's options and model before any expensive work, with errors that name the option or layer.

`validate_config` runs before the model is loaded (device, budget, seed, input shape format);
`validate_model` runs on the loaded module: the algorithm's own option ranges (compress.validate_config,
the one copy of those rules), finite weights, a forward pass on the input shape, something to prune.
"""
from __future__ import annotations

import math

import torch

from worker.engine.config import CompressionConfig
from worker.engine.compress import select_device
from worker.engine.compress import validate_config as validate_compression_options
from worker.engine.errors import InvalidConfigError, UnsupportedModelError
from worker.engine.formats.model import LoadedModel
from worker.engine.layers import (CONV1X1, CONV3X3, DEPTHWISE, FIRST_CONV, LINEAR, check_weights_finite,
                                  check_weights_float32, execution_order)


def validate_config(config: CompressionConfig) -> None:
    """What can be checked before loading the model. The algorithm's own ranges (entries, rates,
    sample and step counts, modes) are checked by `compress.validate_config` once the input shape is
    known: one copy of each rule."""
    select_device(config.device)  # names the device; says so when CUDA is missing
    if config.time_budget_s is not None:
        _number("time_budget_s", config.time_budget_s)
        if config.time_budget_s <= 0:
            raise InvalidConfigError(f"time_budget_s must be positive, got {config.time_budget_s}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        raise InvalidConfigError(f"seed must be a non-negative integer, got {config.seed!r}")
    if not isinstance(config.extra, dict):
        raise InvalidConfigError(f"extra must be a mapping, got {type(config.extra).__name__}")
    if config.input_shape is not None:
        check_input_shape(config.input_shape)


def check_input_shape(shape) -> tuple[int, ...]:
    if (not isinstance(shape, (tuple, list)) or len(shape) != 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 8192 for d in shape)):
        raise InvalidConfigError(f"input_shape must be four positive integers N,C,H,W (each <= 8192), got {shape!r}")
    return tuple(shape)


def resolve_input_shape(loaded: LoadedModel, config: CompressionConfig) -> tuple[int, ...]:
    """The model's own shape when it declares one (the config may only repeat it), else the config's."""
    declared, given = loaded.input_shape, config.input_shape
    if given is not None:
        given = check_input_shape(given)
        if declared is not None and tuple(given[1:]) != tuple(declared[1:]):
            raise InvalidConfigError(f"input_shape {list(given)} does not match the model's declared input "
                                     f"{list(declared)} (C,H,W must agree)")
        return (1, *given[1:])
    if declared is None:
        raise InvalidConfigError("the model does not declare its input shape: give one with input_shape "
                                 "(CLI: --input-shape N,C,H,W, e.g. 1,3,32,32)")
    return (1, *declared[1:])


def validate_model(loaded: LoadedModel, input_shape: tuple[int, ...], config: CompressionConfig) -> None:
    check_weights_float32(loaded.module)
    check_weights_finite(loaded.module)
    example = torch.zeros(2, *input_shape[1:])
    try:
        layers = execution_order(loaded.module, example)  # raises InvalidConfigError naming the shape
    except InvalidConfigError as exc:
        if _runs_only_at_batch_one(loaded.module, input_shape):
            raise InvalidConfigError(f"{exc}; the model runs on one input at a time only: it was exported with a "
                                     "fixed batch size of 1 that its graph computes sizes from, and the engine runs "
                                     "batches of synthetic inputs. Re-export it with a dynamic batch: "
                                     "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("
                                     "'batch')},)), the same dynamic_shapes for torch.onnx.export") from exc
        raise
    prunable = {CONV3X3} | ({FIRST_CONV} if config.prune_first_conv else set()) \
        | ({DEPTHWISE} if config.prune_depthwise else set())
    if config.linear_sparsity != "dense":
        prunable |= {CONV1X1, LINEAR}
    if not any(layer.kind in prunable for layer in layers):
        kinds = sorted({layer.kind for layer in layers}) or ["none"]
        raise UnsupportedModelError(f"the model has no prunable 3x3 convolutions (groups=1) besides the first "
                                    f"layer, so pattern pruning has nothing to do (layer kinds found: {', '.join(kinds)})"
                                    + _opt_in_hint(kinds))


def _runs_only_at_batch_one(module: torch.nn.Module, input_shape: tuple[int, ...]) -> bool:
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape[1:]))
    except Exception:  # it does not run at all: the shape is wrong, and the first error says so
        return False
    return True


def _opt_in_hint(kinds: list[str]) -> str:
    """Name the options that would give the job something to prune (e.g. a MobileNet: depthwise 3x3 only)."""
    options = [option for kind, option in ((DEPTHWISE, "prune_depthwise=true"), (FIRST_CONV, "prune_first_conv=true"),
                                           (CONV1X1, "linear_sparsity=2:4"), (LINEAR, "linear_sparsity=2:4"))
               if kind in kinds]
    options = list(dict.fromkeys(options))
    if not options:
        return ""
    return ("; those layers stay dense by default, to prune them set " + " or ".join(options)
            + " (CLI: " + " ".join(f"--set {option}" for option in options) + ")")


def _number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidConfigError(f"{name} must be a finite number, got {value!r}")


