"""Which output the engine compares. Models may return a tuple, list or dict of tensors (e.g. a
segmentation map plus an auxiliary head); the data-free objectives and fidelity metrics use the first
tensor in order. Every output is still computed and saved unchanged."""
from __future__ import annotations

import torch


def output_tensors(out) -> list[torch.Tensor]:
    """Every tensor the model returned, depth first, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for value in out for t in output_tensors(value)]
    return []


def primary_output(out) -> torch.Tensor:
    tensors = output_tensors(out)
    if not tensors:
        raise TypeError(f"the model returned no tensor (got {type(out).__name__})")
    return tensors[0]
