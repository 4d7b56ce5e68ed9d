"""load(package_dir): the whole model as an nn.Module, compiled layers in place, the rest in torch.

The library is used as shipped only when it was built for this machine's ISA and matches its hash;
otherwise it is rebuilt from the (hash-checked) source, or, for another ISA, from source regenerated
out of the compact weights. An unverified .so is never loaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch import nn

from kernels import package as pkg
from kernels.allocator import keep_freed_memory
from kernels.errors import KernelError
from kernels.graph_ops import BatchDispatch, DenseLayer, install_compiled_layers
from kernels.spec import ConvSpec, TileConfig


_HALF = {torch.float16, torch.bfloat16}


def _to_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in _HALF else t


class PackagedModel(nn.Module):
    """The loaded package: call it like the original model. `manifest` says what runs where."""

    def __init__(self, graph: nn.Module, manifest: dict, library: Path | None):
        super().__init__()
        self.graph = graph
        self.manifest = manifest
        self.library = library
        self.input_shapes = _input_shapes(graph)  # per input tensor, None for a dynamic size

    def forward(self, *args, **kwargs):
        leaves = pytree.tree_leaves((args, kwargs))
        _check_inputs(leaves, self.input_shapes)
        # The kernels compute in float32: a half-precision model's float16 / bfloat16 inputs are cast up and its
        # outputs back, so the package takes and returns what the model did.
        half = {t.dtype for t in leaves if isinstance(t, torch.Tensor)} & _HALF
        if not half:
            return self.graph(*args, **kwargs)
        args, kwargs = pytree.tree_map_only(torch.Tensor, _to_float32, (args, kwargs))
        out_dtype = half.pop() if len(half) == 1 else torch.float32
        return pytree.tree_map_only(torch.Tensor, lambda t: t.to(out_dtype) if t.is_floating_point() else t,
                                    self.graph(*args, **kwargs))

    def train(self, mode: bool = True) -> "PackagedModel":
        # An exported graph has no training mode (torch raises); the package is inference-only.
        self.training = mode
        return self


def _check_inputs(leaves: list, shapes: list[tuple[int | None, ...] | None]) -> None:
    """What torch.export's own input checks said, at a fraction of their cost (they took ~0.1 ms a call, 5-10%
    of a CIFAR model's time)."""
    if len(leaves) != len(shapes):
        raise ValueError(f"the model takes {len(shapes)} input tensor(s), got {len(leaves)}")
    for i, (value, want) in enumerate(zip(leaves, shapes)):
        if want is None:
            continue
        if not isinstance(value, torch.Tensor) or value.dim() != len(want) or \
                any(w is not None and w != got for w, got in zip(want, value.shape)):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            expected = ", ".join("N" if w is None else str(w) for w in want)
            raise ValueError(f"input {i}: expected a tensor of shape ({expected}), got {got}")


def _input_shapes(graph: nn.Module) -> list[tuple[int | None, ...] | None]:
    """Each input tensor's traced shape, None where the size is dynamic (the batch)."""
    shapes = []
    for node in graph.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            shapes.append(tuple(d if type(d) is int else None for d in val.shape)
                          if isinstance(val, torch.Tensor) else None)
    return shapes


def _specs(sparse: list[dict]) -> list[tuple[ConvSpec, TileConfig]]:
    try:
        return [(ConvSpec(**layer["spec"]), TileConfig(**layer["tile"])) for layer in sparse]
    except TypeError as exc:
        raise pkg.PackageError(f"{pkg.MANIFEST} has a malformed layer spec or tile: {exc}") from None


def _library(package_dir: Path, manifest: dict, sparse: list[dict], cache_dir: Path | None) -> Path:
    from kernels.build import build_library
    from kernels.codegen import generate_source
    from kernels.graph_compile import default_cache_dir
    from kernels.isa import detect_isa
    isa = detect_isa()
    shipped = package_dir / pkg.LIBRARY
    if manifest.get("isa") == isa and shipped.is_file() and \
            pkg.sha256_file(shipped) == manifest["files"].get(pkg.LIBRARY):
        return shipped
    if manifest.get("isa") == isa:
        source = pkg.verify_hash(package_dir, manifest, pkg.SOURCE).read_text()
    else:  # the shipped source targets another ISA: regenerate it from the compact weights
        weights = pkg.verify_hash(package_dir, manifest, pkg.WEIGHTS)
        specs = _specs(sparse)
        compact = pkg.load_compact_weights(weights, [spec.name for spec, _ in specs])
        source = generate_source([(spec, compact[spec.name], tile) for spec, tile in specs], isa)
    return build_library(source, isa=isa, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir())


def _dense_layers(package_dir: Path, manifest: dict, sparse: list[dict]) -> dict[str, nn.Module]:
    weights = pkg.verify_hash(package_dir, manifest, pkg.WEIGHTS)
    specs = _specs(sparse)
    compact = pkg.load_compact_weights(weights, [spec.name for spec, _ in specs])
    layers = {}
    for layer, (spec, _) in zip(sparse, specs):
        weight, padding = compact[spec.name].to_dense(), spec.padding
        if list(layer.get("shape", [])[-2:]) == [1, 1]:  # a 1x1 conv compiled as a centre-tap 3x3: dense is 1x1
            weight, padding = weight[:, :, 1:2, 1:2].contiguous(), spec.padding - 1
        layers[layer["name"]] = DenseLayer(layer["name"], weight, torch.from_numpy(compact[spec.name].bias.copy()),
                                           spec.stride, padding, spec.dilation, spec.relu)
    return layers


def load(package_dir: Path, *, cache_dir: Path | None = None, dense: bool = False,
         padded_layout: bool = True, segments: bool = True, head: bool = True, conv_pool: bool = True) -> nn.Module:
    """Open a package written by compile_model; the module takes and returns what the model did.

    dense=True runs the compiled layers as dense torch convs instead (from the compact weights):
    the package's own dense baseline, for benchmarking a package without its original model.
    padded_layout=False hands every activation between compiled layers over as NCHW (each 3x3 layer pads its
    own input), for comparisons; the default passes them in the padded layout where it can
    (kernels/padded_layout.py). segments=False calls every compiled layer from Python instead of each run of them
    in one library call (kernels/segments.py). head=False leaves the classifier head (pool, flatten, linear) to
    torch instead of the library (kernels/head_op.py). conv_pool=False runs a few-channel conv (the ResNet stem) and
    the max-pool reading it as two calls instead of one (kernels/stem_pool.py)."""
    from kernels.conv_op import CompiledConv
    keep_freed_memory()  # the torch parts of the model must not page-fault their buffers in on every call
    package_dir = Path(package_dir)
    manifest = pkg.read_manifest(package_dir)
    graph_file = pkg.verify_hash(package_dir, manifest, pkg.GRAPH)
    try:
        program = torch.export.load(str(graph_file))
    except Exception as exc:  # a corrupt archive surfaces as many exception types
        raise pkg.PackageError(f"{pkg.GRAPH} cannot be loaded: {type(exc).__name__}: {exc}") from None
    # Without torch.export's per-call guards and input-constraint hook; PackagedModel checks the shapes itself
    graph = program.module(check_guards=False)
    graph.validate_inputs = False
    sparse = [layer for layer in manifest["layers"] if layer["kernel"] == "sparse"]
    library = None
    kernels: dict[str, nn.Module] = {}
    if sparse and dense:
        kernels = _dense_layers(package_dir, manifest, sparse)
    elif sparse:
        library = _library(package_dir, manifest, sparse, cache_dir)
        dispatched = [layer for layer in sparse if layer.get("dense_from_batch")]
        dense_layers = _dense_layers(package_dir, manifest, dispatched) if dispatched else {}
        for layer, (spec, _) in zip(sparse, _specs(sparse)):
            kernels[layer["name"]] = CompiledConv(library, spec)
            if layer["name"] in dense_layers:
                kernels[layer["name"]] = BatchDispatch(kernels[layer["name"]], dense_layers[layer["name"]],
                                                       layer["dense_from_batch"])
    try:
        install_compiled_layers(graph, kernels)
    except RuntimeError as exc:
        raise pkg.PackageError(str(exc)) from None
    if library is not None:  # the library also carries a max-pool far faster than torch's NCHW one
        from kernels.head_op import install_head_layers
        from kernels.pool_op import install_pool_layers
        install_pool_layers(graph, library)
        if conv_pool:
            from kernels.stem_pool import fuse_conv_pools
            fuse_conv_pools(graph)
        if head:  # and the classifier head, on the threads the layers just used
            install_head_layers(graph, library)
        if padded_layout:
            from kernels.padded_layout import chain_padded_layouts
            chain_padded_layouts(graph)
        if segments:
            from kernels.segments import fuse_compiled_segments
            fuse_compiled_segments(graph)
    return PackagedModel(graph, manifest, library)


__all__ = ["load", "PackagedModel", "KernelError"]
