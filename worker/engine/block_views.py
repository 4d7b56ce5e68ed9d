"""Extra views of the synthetic inputs for the block stage: CutMix pairs and random resized crops.

The block stage fits each residual block to the dense one on ~128-768 inverted images and their mirror images, and
overfits them: its error on real data falls much less than on those inputs (docs/benchmarks/engine.md, session 4).
New views made from the same images (a patch of one pasted into another; a crop of 50-100% of the area resized back
and flipped at random) show the blocks input statistics the fixed set does not, at no synthesis cost. Shifted
copies and mixup blends were tried before and did nothing; these two lowered the KL to the dense model on real data
by 6-7% on ResNet-20 and -56 (session 8).
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def cutmix_views(x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n images, each a random input with a box of 20-50% of its area taken from another random input."""
    first = torch.randint(0, len(x), (n,), generator=g)
    second = torch.randint(0, len(x), (n,), generator=g)
    out = x[first.to(x.device)].clone()
    h, w = x.shape[2:]
    for k in range(n):
        area = float(torch.empty(1).uniform_(0.2, 0.5, generator=g))
        bh, bw = max(1, round(h * math.sqrt(area))), max(1, round(w * math.sqrt(area)))
        y0 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
        x0 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
        src = int(second[k])
        out[k, :, y0:y0 + bh, x0:x0 + bw] = x[src, :, y0:y0 + bh, x0:x0 + bw]
    return out


def crop_views(x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n images, each a crop of 50-100% of a random input's area (at least 8 pixels a side) resized back to the
    input's size, flipped horizontally with probability 1/2."""
    pick = torch.randint(0, len(x), (n,), generator=g)
    h, w = x.shape[2:]
    out = torch.empty(n, *x.shape[1:], dtype=x.dtype, device=x.device)
    for k in range(n):
        area = float(torch.empty(1).uniform_(0.5, 1.0, generator=g))
        ch, cw = min(h, max(8, round(h * math.sqrt(area)))), min(w, max(8, round(w * math.sqrt(area))))
        y0 = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        x0 = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        i = int(pick[k])
        crop = F.interpolate(x[i:i + 1, :, y0:y0 + ch, x0:x0 + cw], size=(h, w), mode="bilinear", align_corners=False)
        if float(torch.rand(1, generator=g)) < 0.5:
            crop = torch.flip(crop, dims=(3,))
        out[k] = crop[0]
    return out
