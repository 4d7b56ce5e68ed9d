"""Synthetic inputs, never real data: Gaussian noise (the paper's) or images inverted from the model's own
BatchNorm statistics (DeepInversion-style), deterministic from the seed and cached per model."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from worker.engine.bn_stats import BNStatLoss
from worker.engine.inversion_modes import forward, frozen_copy, prepare
from worker.engine.schedule import CosineSchedule
from worker.progress import Progress

ALGORITHM_VERSION = 3  # bump when the synthesis changes so old cache entries are not reused


@dataclass
class InversionSettings:
    batch: int = 64
    lr: float = 0.2
    first_bn_weight: float = 10.0  # the stem's statistics pin down colour and contrast
    tv_weight: float = 3e-4        # smoothness prior (squared total variation, per pixel)
    l2_weight: float = 1e-5
    class_weight: float = 0.05     # class-conditional cross-entropy on the model's own logits
    jitter: int = 2                # random shift in pixels, plus random horizontal flip
    low_res_fraction: float = 0.0  # first part of the steps optimised at half resolution (upsampled for the model)
    # Starting noise with amplitude spectrum 1/f^noise_decay per image (0 = white noise; 1 = natural images'
    # spectrum). White noise left the inverted images with ~10x real data's high-frequency power and ~6x too
    # little at the lowest frequencies; see docs/benchmarks/engine.md, session 4.
    noise_decay: float = 1.0


@dataclass
class SyntheticSet:
    images: torch.Tensor
    info: dict = field(default_factory=dict)  # the report's "synthetic" section


def model_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# Without BatchNorm statistics the class term is the only thing tying the inputs to the model. A quarter-width
# VGG-11 exported to ONNX with its BatchNorms folded (zoo benchmark, 5000 held-out images, dense 64.38): gaussian
# inputs 50.34 after pruning, inverted with class weight 0.05 62.66, with 1.0 63.04 (its .pt2 with BatchNorm: 63.34).
PRIOR_CLASS_WEIGHT = 1.0
# ... and a 10x stronger smoothness prior: without the stem's statistics (which pin down contrast and edges) the
# class term grows high-frequency detail real images do not have. ONNX ResNet-20 pattern-only, full test set,
# seeds 0 / 1: tv 3e-4 85.66 / 86.32, 3e-3 88.41 / 88.46 (docs/benchmarks/engine.md, session 19 helper).
PRIOR_TV_WEIGHT = 3e-3


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def local_cache_dir() -> Path:
    """Where runs without a cache_dir (the local CLI) keep their synthetic inputs."""
    return Path.home() / ".cache" / "zerodata"


def _mark_used(path: Path) -> None:
    """A reused cache file gets a fresh mtime: the worker's cache trim removes the least recently used first."""
    try:
        os.utime(path)
    except OSError:
        pass


def _cache_path(cache_dir: Path | None, model: nn.Module, mode: str, samples: int, steps: int, seed: int,
                input_shape: tuple[int, ...], settings: InversionSettings) -> Path:
    cache_dir = Path(cache_dir) if cache_dir is not None else local_cache_dir()
    key = {"mode": mode, "samples": samples, "steps": steps, "seed": seed, "shape": list(input_shape[1:]),
           "settings": asdict(settings)}
    blob = json.dumps({**key, "model": model_fingerprint(model), "v": ALGORITHM_VERSION}, sort_keys=True)
    return cache_dir / "synthetic" / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.pt"


def _mode_run(model: nn.Module, mode: str, settings: InversionSettings) -> tuple[str, InversionSettings]:
    """The mode and settings synthesis really runs: bn-inversion without BatchNorm is prior-inversion with a
    stronger class term and smoothness prior."""
    if mode == "bn-inversion" and not has_batchnorm(model):
        return "prior-inversion", replace(settings, class_weight=max(settings.class_weight, PRIOR_CLASS_WEIGHT),
                                          tv_weight=max(settings.tv_weight, PRIOR_TV_WEIGHT))
    return mode, settings


def is_cached(model: nn.Module, input_shape: tuple[int, ...], mode: str, samples: int, steps: int, seed: int, *,
              cache_dir: Path | None = None, settings: InversionSettings | None = None) -> bool:
    """Whether synthesize_inputs with these arguments would read its inputs from the cache (gaussian: always free)."""
    if mode == "gaussian":
        return True
    mode, settings = _mode_run(model, mode, settings or InversionSettings())
    return _cache_path(cache_dir, model, mode, samples, steps, seed, input_shape, settings).exists()


def synthesize_inputs(model: nn.Module, input_shape: tuple[int, ...], mode: str, samples: int, steps: int,
                      seed: int, progress: Progress, *, cache_dir: Path | None = None,
                      settings: InversionSettings | None = None, stage: str = "synthesize",
                      inversion_mode: str = "contiguous") -> SyntheticSet:
    """`samples` inputs of shape input_shape[1:]. bn-inversion without BatchNorm falls back to prior-inversion
    (said in info). `inversion_mode` (inversion_modes.py) is how the steps run: memory format and precision."""
    settings = settings or InversionSettings()
    info: dict = {"mode": mode, "samples": samples, "steps": steps if mode == "bn-inversion" else 0,
                  "seed": seed, "cached": False}
    if mode == "bn-inversion":
        info["class_weight"] = settings.class_weight
        info["noise_decay"] = settings.noise_decay
    run_mode, settings = _mode_run(model, mode, settings)
    if run_mode != mode:
        info.update(mode=run_mode, class_weight=settings.class_weight, tv_weight=settings.tv_weight, fallback=(
            "the model has no BatchNorm layers (an ONNX export folds them into the convs), so bn-inversion is "
            "impossible; fell back to prior-inversion: inputs optimised for the model's own class scores under "
            "natural-image priors (1/f-spectrum start, smoothness, jitter)"))
        progress.update(stage, 0, 1, "no BatchNorm in the model: inverting class scores under image priors")
        mode = run_mode
    if mode == "gaussian":
        g = torch.Generator().manual_seed(seed)
        images = torch.randn(samples, *input_shape[1:], generator=g)
        progress.update(stage, 1, 1, f"{samples} gaussian inputs")
        return SyntheticSet(images, info)
    if mode not in ("bn-inversion", "prior-inversion"):
        raise ValueError(f"unknown synthetic mode {mode!r}")
    path = _cache_path(cache_dir, model, mode, samples, steps, seed, input_shape, settings)
    if path.exists():
        try:
            images = torch.load(path, weights_only=True)["images"]
            if tuple(images.shape) == (samples, *input_shape[1:]):
                info["cached"] = True
                _mark_used(path)
                progress.update(stage, 1, 1, f"{samples} inverted inputs from cache")
                return SyntheticSet(images, info)
        except Exception:
            pass  # a damaged cache entry is simply rebuilt
    images = invert_batchnorm(model, input_shape, samples, steps, seed, progress, settings, stage, inversion_mode)
    info["inversion_mode"] = inversion_mode
    _atomic_save({"images": images}, path)
    return SyntheticSet(images, info)


def _atomic_save(obj, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation; an unwritable cache dir must not fail the job


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()


def spectral_noise(n: int, c: int, h: int, w: int, decay: float, g: torch.Generator) -> torch.Tensor:
    """Gaussian noise whose amplitude spectrum falls as 1/f^decay, scaled to unit standard deviation per batch:
    each image gets its own random low-frequency content (brightness, colour, large shapes), as real photos do."""
    white = torch.randn(n, c, h, w, generator=g)
    if decay == 0:
        return white
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    freq = torch.sqrt(fy * fy + fx * fx)
    freq[0, 0] = 1.0 / max(h, w)  # the mean gets the lowest frequency's amplitude, not infinity
    x = torch.fft.irfft2(torch.fft.rfft2(white) / freq.pow(decay), s=(h, w))
    return x / x.std().clamp_min(1e-12)


def invert_batchnorm(model: nn.Module, input_shape: tuple[int, ...], samples: int, steps: int, seed: int,
                     progress: Progress, settings: InversionSettings, stage: str = "synthesize",
                     inversion_mode: str = "contiguous") -> torch.Tensor:
    net = prepare(frozen_copy(model), inversion_mode)
    device = next(iter(net.parameters())).device
    g = torch.Generator().manual_seed(seed)
    stats = BNStatLoss(net, settings.first_bn_weight)
    out: list[torch.Tensor] = []
    n_batches = math.ceil(samples / settings.batch)
    try:
        for b in range(n_batches):
            n = min(settings.batch, samples - b * settings.batch)
            out.append(_invert_batch(net, stats, input_shape, n, steps, g, settings, device, progress,
                                     stage, b, n_batches, inversion_mode))
    finally:
        stats.close()
    return torch.cat(out).cpu()


def _invert_batch(net, stats, input_shape, n, steps, g, settings, device, progress, stage, b, n_batches,
                  inversion_mode):
    c, h, w = input_shape[1:]
    low = int(steps * settings.low_res_fraction) if h >= 16 and w >= 16 else 0
    x = spectral_noise(n, c, (h // 2 if low else h), (w // 2 if low else w), settings.noise_decay, g).to(device)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=settings.lr, betas=(0.5, 0.9))
    schedule = CosineSchedule(settings.lr, steps, None)
    labels = None
    for step in range(steps):
        if step == low and low:
            x = F.interpolate(x.detach(), size=(h, w), mode="bilinear", align_corners=False).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=settings.lr, betas=(0.5, 0.9))
        lr = schedule.lr(step)
        for group in opt.param_groups:
            group["lr"] = lr
        dx, dy = (int(v) for v in torch.randint(-settings.jitter, settings.jitter + 1, (2,), generator=g))
        flip = bool(torch.rand(1, generator=g) < 0.5)
        xin = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
        if flip:
            xin = torch.flip(xin, dims=(3,))
        if xin.shape[-2:] != (h, w):
            xin = F.interpolate(xin, size=(h, w), mode="bilinear", align_corners=False)
        logits = forward(net, xin, inversion_mode)
        loss = stats.pop() + settings.tv_weight * _tv(x) * x.shape[-1] * x.shape[-2] + settings.l2_weight * x.pow(2).mean()
        if settings.class_weight > 0 and logits.dim() == 2 and logits.shape[1] > 1:
            if labels is None:
                labels = (torch.arange(n) + b * n) % logits.shape[1]
                labels = labels[torch.randperm(n, generator=g)].to(device)
            loss = loss + settings.class_weight * F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0:
            progress.check_cancelled()
            progress.update(stage, b * steps + step, n_batches * steps, f"batch {b + 1}/{n_batches} step {step}")
    return x.detach()
