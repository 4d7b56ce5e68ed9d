"""How a model's inversion steps run fastest on this worker: memory format and precision.

Inverting inputs (a forward and an input-gradient backward per step) is most of a job's compression stage, and
the time budget cuts the inputs when it runs long. oneDNN's convolutions are often faster channels-last, and on
CPUs with bfloat16 instructions (AVX512-BF16, AMX) faster still in bfloat16: ResNet-56 at batch 64 on an AMD EPYC
Zen 4, 2 threads, a bare step 4.3 ms per input contiguous, 3.3 channels-last, 1.9 channels-last in bfloat16
(docs/benchmarks/engine.md, sessions 22-23). Without bfloat16 instructions it is emulated and slower, and some graphs
cannot run channels-last at all (a `view` of a permuted activation). The mode is chosen from what the hardware
has, not from a timing race, so the same seed gives the same inputs on the same machine: the first of
`preferred_modes` whose output matches the plain model's. DeepInversion itself ran its steps in mixed precision;
the BatchNorm statistics and the loss stay float32 (bn_stats.py).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from worker.engine.bn_stats import BNStatLoss
from worker.engine.outputs import primary_output


@dataclass(frozen=True)
class StepMode:
    memory_format: torch.memory_format
    bfloat16: bool = False  # the model's forward (and so its backward) under bfloat16 autocast
    rtol: float = 1e-3      # how far its output may be from the plain float32 model's, relative to the largest logit


MODES = {"contiguous": StepMode(torch.contiguous_format),
         "channels_last": StepMode(torch.channels_last),
         "channels_last_bf16": StepMode(torch.channels_last, bfloat16=True, rtol=5e-2)}
# Timed inputs: the batch the inversion will run (a step's fixed cost makes small batches dearer per input), but at
# most this many pixels (4 inputs at 224x224, where the cost per input no longer depends on the batch).
PROBE_PIXELS = 64 * 32 * 32
PROBE_SECONDS = 0.25  # a single step of a small model is too short to time alone
PROBE_MAX_STEPS = 20


def preferred_modes(device: torch.device) -> list[str]:
    """Fastest first by what the hardware runs natively: bfloat16 where it has bfloat16 instructions (AVX512-BF16,
    AMX; CUDA devices that support it), channels-last where measured faster (AVX2 and AVX-512 CPUs, bfloat16 GPUs).
    With oneDNN, MKL and ATen held to AVX2 on the Zen 4 (session 23) a ResNet-56 step read 0.88-0.93x contiguous's
    time channels-last, as on AVX-512 (0.91x)."""
    if device.type == "cuda":
        bf16 = channels_last = torch.cuda.is_bf16_supported()
    else:
        bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        channels_last = torch.cpu._is_avx2_supported() or torch.cpu._is_avx512_supported()
    return ["channels_last_bf16"] * bf16 + ["channels_last"] * channels_last + ["contiguous"]


def prepare(net: nn.Module, mode: str) -> nn.Module:
    """The model's 4-d parameters in the mode's memory format (in place)."""
    return net.to(memory_format=MODES[mode].memory_format) if mode != "contiguous" else net


def forward(net: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The model's primary output for x in this mode, as float32."""
    step = MODES[mode]
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=step.bfloat16):
        out = primary_output(net(x.contiguous(memory_format=step.memory_format)))
    return out.float()


def choose_mode(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, batch: int) -> str:
    """The first preferred mode the model runs correctly in (contiguous for non-image inputs)."""
    if len(input_shape) != 4:
        return "contiguous"
    x = _probe_input(input_shape, device, batch)
    with torch.no_grad():
        want = forward(frozen_copy(model), x, "contiguous")
    for mode in preferred_modes(device):  # ends with contiguous, which always qualifies
        if mode == "contiguous" or _same_output(prepare(frozen_copy(model), mode), x, mode, want):
            return mode


def seconds_per_input_step(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, batch: int,
                           mode: str) -> float:
    """Wall seconds of a forward + input-gradient pass per input in this mode, with the BatchNorm term (its hooks
    cost a third more in bfloat16 than in float32), after a warm-up pass: what the time budget prices."""
    net = prepare(frozen_copy(model), mode)
    x = _probe_input(input_shape, device, batch).requires_grad_(True)
    stats = BNStatLoss(net, 1.0)
    timed, start = -1, 0.0  # the first pass warms up; then steps until PROBE_SECONDS (one, on large models)
    while timed < PROBE_MAX_STEPS:
        (forward(net, x, mode).square().mean() + stats.pop()).backward()
        x.grad = None
        _synchronize(x.device)  # CUDA runs asynchronously: time the work, not its launch
        timed += 1
        if timed == 0:
            start = time.perf_counter()
        elif time.perf_counter() - start >= PROBE_SECONDS:
            break
    stats.close()
    return (time.perf_counter() - start) / timed / x.shape[0]


def _probe_input(input_shape: tuple[int, ...], device: torch.device, batch: int) -> torch.Tensor:
    inputs = max(1, min(batch, PROBE_PIXELS // max(1, math.prod(input_shape[2:]))))
    return torch.randn(inputs, *input_shape[1:], device=device)


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy without weight gradients: inversion needs only input gradients (skips the weight-gradient
    half of backward), and hooks on the copy never fire on the caller's model."""
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _same_output(net: nn.Module, x: torch.Tensor, mode: str, want: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            got = forward(net, x, mode)
    except Exception:  # e.g. a view the permuted strides do not allow, an op without a bfloat16 kernel
        return False
    scale = want.abs().max().clamp_min(1e-12)
    return got.shape == want.shape and bool(((got - want).abs().max() / scale) <= MODES[mode].rtol)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
