"""Which memory format runs a model's inversion steps faster on this worker.

Inverting inputs (a forward and an input-gradient backward per step) is most of a job's compression stage, and
the time budget cuts the inputs when it runs long. oneDNN's convolutions are often faster channels-last: ResNet-56
at batch 64 on an AMD EPYC Zen 4, 2 threads, 4.61 ms per input-step contiguous, 3.81 channels-last
(docs/benchmarks/engine.md, session 22). Not every machine or model gains, and some graphs cannot run
channels-last at all (a `view` of a permuted activation), so both are timed and the faster one that gives the
same output is used. The images are the same up to float rounding: the format is not part of the cache key.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from worker.engine.outputs import primary_output

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
# Timed inputs: the batch the inversion will run (a step's fixed cost makes small batches dearer per input), but at
# most this many pixels (4 inputs at 224x224, where the cost per input no longer depends on the batch).
PROBE_PIXELS = 64 * 32 * 32
PROBE_SECONDS = 0.25  # a single step of a small model is too short to time alone
PROBE_MAX_STEPS = 20
SAME_OUTPUT_RTOL = 1e-3


@dataclass(frozen=True)
class InversionProbe:
    memory_format: str                 # the faster of the formats timed, a FORMATS key
    seconds_per_input_step: dict       # format -> wall seconds of a bare forward + input-gradient pass per input

    @property
    def seconds(self) -> float:
        return self.seconds_per_input_step[self.memory_format]


def convert(net: nn.Module, x: torch.Tensor, memory_format: str) -> tuple[nn.Module, torch.Tensor]:
    """The model's parameters and an input in `memory_format` (4-d tensors only; the rest is left as it is)."""
    if memory_format == "contiguous":
        return net, x
    return net.to(memory_format=FORMATS[memory_format]), x.contiguous(memory_format=FORMATS[memory_format])


def probe_inversion(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, batch: int) -> InversionProbe:
    """Time inversion steps in each format the model runs correctly in; channels-last only for image inputs."""
    inputs = max(1, min(batch, PROBE_PIXELS // max(1, math.prod(input_shape[2:]))))
    x = torch.randn(inputs, *input_shape[1:], device=device)
    nets = {"contiguous": _frozen_copy(model)}
    if len(input_shape) == 4 and _same_output(nets["contiguous"], x):
        nets["channels_last"] = _frozen_copy(model).to(memory_format=torch.channels_last)
    timings = {name: _seconds_per_input_step(net, x, name) for name, net in nets.items()}
    return InversionProbe(min(timings, key=timings.get), timings)


def _frozen_copy(model: nn.Module) -> nn.Module:
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)  # only input gradients are needed
    return net


def _same_output(net: nn.Module, x: torch.Tensor) -> bool:
    """Whether a channels-last copy runs and gives the contiguous model's output (within float rounding)."""
    try:
        with torch.no_grad():
            want = primary_output(net(x)).float()
            got = primary_output(copy.deepcopy(net).to(memory_format=torch.channels_last)(
                x.contiguous(memory_format=torch.channels_last))).float()
    except Exception:  # e.g. a view the permuted strides do not allow: this model stays contiguous
        return False
    scale = want.abs().max().clamp_min(1e-12)
    return got.shape == want.shape and bool(((got - want).abs().max() / scale) <= SAME_OUTPUT_RTOL)


def _seconds_per_input_step(net: nn.Module, x: torch.Tensor, memory_format: str) -> float:
    """Wall seconds of one forward + input-gradient pass per input, after a warm-up pass."""
    _, x = convert(net, x, memory_format)
    x = x.detach().requires_grad_(True)
    timed, start = -1, 0.0  # the first pass warms up; then steps until PROBE_SECONDS (one, on large models)
    while timed < PROBE_MAX_STEPS:
        primary_output(net(x)).float().square().mean().backward()
        x.grad = None
        _synchronize(x.device)  # CUDA runs asynchronously: time the work, not its launch
        timed += 1
        if timed == 0:
            start = time.perf_counter()
        elif time.perf_counter() - start >= PROBE_SECONDS:
            break
    return (time.perf_counter() - start) / timed / x.shape[0]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
