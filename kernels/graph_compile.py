"""compile_model: dense pruned model -> package directory whose `load()` runs it with compiled convs.

export (dynamic batch) -> fold BN -> find 3x3 (1x1, 5x5, 7x7) convs + epilogues -> per layer: compact format, build the
candidate tiles, time them against dense, keep the winner -> one final library -> rewrite the graph
-> verify against the dense model and time the whole thing -> publish the package atomically.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from kernels import package as pkg
from kernels.allocator import keep_freed_memory
from kernels.autotune import LayerChoice, batch_checks, choose, dense_reference, relative_error, time_interleaved
from kernels.errors import KernelError, NotPatternSparse, UnsupportedConv
from kernels.fold import safe_name
from kernels.graph import ConvSite, capture_inputs, eval_module, export_rewritten, find_conv_sites, prepare_graph, \
    replace_with_compiled
from kernels.graph_readme import package_readme
from kernels.spec import ConvSpec

MAX_MODEL_REL_ERROR = 1e-4


class _Silent:
    def update(self, stage, done, total, detail=""):
        pass

    def check_cancelled(self):
        pass


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZERODATA_KERNEL_CACHE") or Path(tempfile.gettempdir()) / "zerodata-kernel-cache")


def _spec_dict(spec: ConvSpec) -> dict:
    return dataclasses.asdict(spec)


def _tile_dict(tile) -> dict:
    return dataclasses.asdict(tile)


def _site_spec(site: ConvSite, symbol: str, x: torch.Tensor) -> ConvSpec:
    return ConvSpec(symbol, site.in_channels, site.out_channels, int(x.shape[2]), int(x.shape[3]),
                    site.stride[0], site.compiled_padding[0], site.dilation[0], site.relu, site.residual is not None,
                    site.kernel_size)


def _layer_entry(site: ConvSite, symbol: str) -> dict:
    return {"name": site.layer, "symbol": symbol, "kernel": "dense", "reason": "",
            "shape": list(site.weight.shape), "stride": list(site.stride), "padding": list(site.padding),
            "dilation": list(site.dilation), "groups": site.groups, "relu": site.relu,
            "residual": site.residual is not None,
            **({"compiled_as": "3x3 conv, centre tap only (padding +1)"} if site.pointwise else {})}


def _flops(spec: ConvSpec, compact, batch: int, pointwise: bool = False) -> dict:
    # A 1x1 conv compiled as a centre-tap 3x3: its dense cost is the 1x1 conv's, a ninth of the 3x3's.
    dense = spec.dense_flops(batch) // (9 if pointwise else 1)
    sparse = 2 * batch * compact.nnz * spec.out_height * spec.out_width
    return {"dense_flops": dense, "sparse_flops": sparse, "flop_ratio_limit": round(dense / max(sparse, 1), 3)}


def _apply_choice(entry: dict, choice: LayerChoice, spec: ConvSpec, compact) -> tuple | None:
    """Record a decision in the manifest entry; (spec, compact, tile) when the kernel is kept."""
    entry.update({"kernel": choice.kernel, "reason": choice.reason, "dense_ms": choice.dense_ms,
                  "sparse_ms": choice.sparse_ms, "candidates": choice.candidates,
                  "max_rel_error": choice.max_rel_error})
    if choice.batch_checks:
        entry["batch_checks"] = choice.batch_checks
        entry["dense_from_batch"] = choice.dense_from_batch
    if choice.sparse_ms:
        entry["effective_gflops"] = round(entry["sparse_flops"] / choice.sparse_ms / 1e6, 2)
    if choice.kernel != "sparse":
        return None
    entry["tile"] = _tile_dict(choice.tile)
    return spec, compact, choice.tile


class _Compiler:
    def __init__(self, isa: str, cache_dir: Path):
        from kernels.build import build_library  # imported late: the build module finds the compiler
        from kernels.codegen import generate_source
        from kernels.conv_op import CompiledConv
        from kernels.tiles import candidate_tiles
        self.build_library, self.generate_source = build_library, generate_source
        self.CompiledConv, self.candidate_tiles = CompiledConv, candidate_tiles
        self.isa, self.cache_dir = isa, cache_dir

    def build(self, layers: list[tuple]) -> Path:
        return self.build_library(self.generate_source(layers, self.isa), isa=self.isa, cache_dir=self.cache_dir)

    def build_candidates(self, layers: list[tuple]) -> list[Path]:
        """For each (spec, compact), the library of all its candidate tiles; built side by side."""
        from kernels.build import build_libraries
        sources = [self.generate_source([(s, compact, t) for s, t in self.variants(spec, compact)], self.isa)
                   for spec, compact in layers]
        return build_libraries(sources, isa=self.isa, cache_dir=self.cache_dir)

    def prepare(self, site: ConvSite, symbol: str, inputs, batch: int) -> tuple[dict, tuple | None]:
        """Manifest entry for one conv, plus (spec, compact) when the generator can take it."""
        from kernels.format import compact_conv
        entry = _layer_entry(site, symbol)
        if site.unsupported:
            entry["reason"] = site.unsupported
            return entry, None
        x, _ = inputs[site.layer]
        try:
            # Any number of entries per kernel: 5x5 / 7x7 convs (a ResNet stem) are compiled dense too.
            compact = compact_conv(site.compiled_weight, site.bias, name=symbol, max_entries=site.kernel_size ** 2)
            spec = _site_spec(site, symbol, x)
        except (NotPatternSparse, UnsupportedConv) as exc:
            entry["reason"] = str(exc)
            return entry, None
        entry.update({"spec": _spec_dict(spec), **_flops(spec, compact, batch, site.pointwise),
                      "format": {"dense_bytes": compact.dense_nbytes, "compact_bytes": compact.nbytes,
                                 "density": round(compact.density, 5), "patterns": int(compact.patterns.size),
                                 "kernels": compact.n_kernels, "nnz": compact.nnz}})
        return entry, (spec, compact)

    def candidates(self, spec: ConvSpec, compact) -> list:
        from kernels.pointwise_conv import is_pointwise
        return self.candidate_tiles(spec, self.isa, pointwise=is_pointwise(compact))

    def variants(self, spec: ConvSpec, compact, tiles=None) -> list[tuple[ConvSpec, object]]:
        """(spec renamed per tile, tile) for every candidate tile of a layer, or (spec, tile) for one given tile:
        then the layer's code is the final library's, whose compiled unit that build reuses (unit_cache.py)."""
        if tiles and len(tiles) == 1:
            return [(spec, tiles[0])]
        return [(dataclasses.replace(spec, name=f"{spec.name}_{t.label}"), t)
                for t in (tiles or self.candidates(spec, compact))]

    def tune(self, site: ConvSite, spec: ConvSpec, compact, x, residual, check_batches=(), tiles=None,
             library: Path | None = None) -> LayerChoice:
        """Time every candidate tile of one layer (or just `tiles`) against dense, from `library` or one built
        here; then time the winner at each larger batch of `check_batches` too (`choice.batch_checks`,
        `choice.dense_from_batch`)."""
        variants = self.variants(spec, compact, tiles)
        library = library or self.build([(s, compact, t) for s, t in variants])
        fns = {t.label: self.CompiledConv(library, s) for s, t in variants}
        dense_fn = dense_reference(site.weight, site.bias, site.stride, site.padding, site.relu)
        choice = choose(dense_fn, fns, {t.label: t for _, t in variants}, x, residual)
        if choice.kernel == "sparse" and check_batches:
            choice.batch_checks, choice.dense_from_batch = batch_checks(
                dense_fn, fns[choice.tile.label], x, residual, check_batches)
        return choice

    def untuned(self, prepared: list[tuple], inputs) -> list[LayerChoice]:
        """tune=False: each layer's first tile, all in one library (the final one), checked not timed."""
        layers = [(spec, compact, self.candidates(spec, compact)[0]) for _, spec, compact in prepared]
        library = self.build(layers)
        choices = []
        for (site, spec, _), (_, _, tile) in zip(prepared, layers):
            x, residual = inputs[site.layer]
            dense_fn = dense_reference(site.weight, site.bias, site.stride, site.padding, site.relu)
            with torch.inference_mode():
                error = relative_error(self.CompiledConv(library, spec)(x, residual), dense_fn(x, residual))
            if error > MAX_MODEL_REL_ERROR:
                choices.append(LayerChoice("dense", f"generated kernel disagrees with dense (relative error "
                                                    f"{error:.2e})", max_rel_error=error))
            else:
                choices.append(LayerChoice("sparse", "not timed (tune=False)", tile=tile, max_rel_error=error))
        return choices


def _compiler_info(isa: str) -> dict:
    from kernels.build import compiler_flags, compiler_version, resolve_compiler
    cxx = resolve_compiler(None)  # raises KernelBuildError naming what to install
    return {"compiler": compiler_version(cxx).splitlines()[0], "compiler_path": cxx, "flags": compiler_flags(isa)}


def _reference_output(model, example: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return eval_module(model)(example)


# Densities within a factor of this share a shape class. Connectivity pruning gives every layer its own rate:
# with classes per 0.01 of density, ResNet-56 at 0.5 tuned ~45 classes and compiled in 154 s on a 2-core Zen (74 s
# pattern-only); with classes per 1.6x, 73 s, and its package ran as fast (3.02 vs 3.10 ms, docs/benchmarks/kernels.md).
DENSITY_CLASS_RATIO = 1.6


def _shape_class(spec: ConvSpec, compact, pointwise: bool) -> tuple:
    """Layers of one class share a tile: every candidate is built and timed for the first layer of each class
    only; the others time that tile against dense (still kept only where it wins). The candidates'
    ranking follows shape and density (ResNet-18 at 1 thread, both densities: the first layer's winner was within
    1% of a later same-class layer's own best in 17 of 18 cases, 6.5% in the other), and each candidate costs a
    compile, most of the compile time (ResNet-56 has 55 convs in a handful of classes)."""
    density_class = round(math.log(max(compact.density, 1e-6)) / math.log(DENSITY_CLASS_RATIO))
    return (spec.in_channels, spec.out_channels, spec.height, spec.width, spec.stride, spec.padding,
            spec.dilation, spec.kernel_size, pointwise, density_class)


def _tune_layers(compiler: _Compiler, prepared: list[tuple], inputs, check_batches, progress) -> list[LayerChoice]:
    """One LayerChoice per prepared layer. The first layer of each shape class times every candidate (one
    library each, all built side by side up front); the rest of the class then time that class's tile against
    dense, all of them built into one library (one compiler run: its fixed cost was most of a small layer's
    compile time)."""
    choices: list[LayerChoice | None] = [None] * len(prepared)
    tuned_on: dict[tuple, tuple[str, object]] = {}  # shape class -> (layer that was tuned, its fastest tile)
    later = []
    firsts: dict[tuple, int] = {}
    for index, (site, _, spec, compact) in enumerate(prepared):
        firsts.setdefault(_shape_class(spec, compact, site.pointwise), index)
    progress.update("compile", 0, len(prepared) + 2, f"building candidate kernels of {len(firsts)} layer shapes")
    prebuilt = dict(zip(firsts.values(), compiler.build_candidates([prepared[i][2:] for i in firsts.values()])))
    for index, (site, entry, spec, compact) in enumerate(prepared):
        key = _shape_class(spec, compact, site.pointwise)
        if key in tuned_on:
            later.append((index, tuned_on[key]))
            continue
        progress.check_cancelled()
        progress.update("compile", index - len(later), len(prepared) + 2, f"tuning {site.layer}")
        x, residual = inputs[site.layer]
        choices[index] = compiler.tune(site, spec, compact, x, residual, check_batches, library=prebuilt.get(index))
        if choices[index].tile is not None:
            tuned_on[key] = (site.layer, choices[index].tile)
    if later:
        progress.check_cancelled()
        progress.update("compile", len(prepared) - len(later), len(prepared) + 2,
                        f"building {len(later)} same-shape layers")
        library = compiler.build([(prepared[index][2], prepared[index][3], tile) for index, (_, tile) in later])
        for done, (index, (tuned_layer, tile)) in enumerate(later):
            site, entry, spec, compact = prepared[index]
            progress.check_cancelled()
            progress.update("compile", len(prepared) - len(later) + done, len(prepared) + 2, f"timing {site.layer}")
            x, residual = inputs[site.layer]
            choices[index] = compiler.tune(site, spec, compact, x, residual, check_batches, tiles=[tile],
                                           library=library)
            entry["tile_tuned_on"] = tuned_layer
    return choices


def _decide_layers(compiler: _Compiler, sites: list[ConvSite], inputs, batch: int, tune: bool,
                   progress, check_batches=()) -> tuple[list[dict], list[tuple]]:
    """Manifest entries for every conv, and (site, (spec, compact, tile)) for those that run compiled."""
    entries, prepared = [], []
    for index, site in enumerate(sites):
        symbol = f"l{index}_{safe_name(site.layer)}"[:96]
        entry, ready = compiler.prepare(site, symbol, inputs, batch)
        entries.append(entry)
        if ready:
            prepared.append((site, entry, *ready))
    chosen = []
    if tune:
        for (site, entry, spec, compact), choice in zip(prepared, _tune_layers(compiler, prepared, inputs,
                                                                               check_batches, progress)):
            winner = _apply_choice(entry, choice, spec, compact)
            if winner:
                chosen.append((site, winner))
    elif prepared:
        progress.update("compile", 0, len(prepared) + 2, "building kernels")
        choices = compiler.untuned([(site, spec, compact) for site, _, spec, compact in prepared], inputs)
        for (site, entry, spec, compact), choice in zip(prepared, choices):
            winner = _apply_choice(entry, choice, spec, compact)
            if winner:
                chosen.append((site, winner))
    progress.check_cancelled()
    progress.update("compile", len(prepared), len(prepared) + 2, "building library")
    return entries, chosen


def compile_model(model, example_input: torch.Tensor, out_dir: Path, *, progress=None, tune: bool = True,
                  cache_dir: Path | None = None, check_batches=(8,)) -> dict:
    """Compile `model` (dense tensors with zeros) into the package `out_dir`; returns its manifest.

    With tune=True each kept kernel is also timed against dense at every batch of `check_batches` larger
    than the example's (when the graph has a dynamic batch); where dense wins, the package runs that layer
    dense from that batch on (manifest: `dense_from_batch`)."""
    from kernels.isa import detect_isa
    keep_freed_memory()  # dense contenders are timed as the loaded package will run them
    progress = progress or _Silent()
    out_dir, cache_dir = Path(out_dir), Path(cache_dir) if cache_dir else default_cache_dir()
    example = example_input.detach().contiguous()
    if example.is_floating_point():
        example = example.to(torch.float32)  # the kernels are float32; other dtypes stay dense anyway
    isa = detect_isa()
    compiler_info = _compiler_info(isa)  # fails early and clearly when there is no compiler
    progress.update("compile", 0, 1, "exporting graph")
    reference = _reference_output(model, example)
    gm, dynamic, folded = prepare_graph(model, example)
    sites = find_conv_sites(gm)
    inputs = capture_inputs(gm, [s for s in sites if not s.unsupported], example)
    compiler = _Compiler(isa, cache_dir)
    entries, chosen = _decide_layers(compiler, sites, inputs, int(example.shape[0]), tune, progress,
                                     tuple(check_batches) if dynamic else ())
    manifest = {"format_version": pkg.FORMAT_VERSION, "created_at": datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds"), "torch_version": torch.__version__,
        "isa": isa, **compiler_info, "threads": torch.get_num_threads(),
        "input_shape": list(example.shape), "dynamic_batch": dynamic, "folded_batchnorm": folded,
        "layers": entries, "library": None, "files": {}}
    staging = pkg.new_staging_dir(out_dir)
    try:
        _write_package(staging, gm, chosen, manifest, example, dynamic, compiler)
        progress.check_cancelled()
        progress.update("compile", 1, 2, "verifying")
        _verify(staging, manifest, model, reference, example, tune)
        if chosen and manifest["whole_model"].get("fallback"):
            # Slower than dense as a whole: ship the all-dense graph instead (honesty rule).
            for entry in entries:
                if entry["kernel"] == "sparse":
                    entry.update(kernel="dense", reason="whole model with kernels was slower than dense torch")
            shutil.rmtree(staging)
            staging = pkg.new_staging_dir(out_dir)
            whole = manifest["whole_model"]
            _write_package(staging, prepare_graph(model, example)[0], [], manifest, example, dynamic, compiler)
            manifest["whole_model"] = whole
            pkg.write_manifest(staging, manifest)
        pkg.publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress.update("compile", 2, 2, "done")
    return manifest


def _write_package(staging: Path, gm, chosen, manifest: dict, example, dynamic: bool, compiler) -> None:
    layers = [winner for _, winner in chosen]
    manifest["library"] = None
    manifest["files"] = {}
    if layers:
        source = compiler.generate_source(layers, compiler.isa)
        (staging / pkg.SOURCE).write_text(source)
        library = compiler.build(layers)
        shutil.copyfile(library, staging / pkg.LIBRARY)
        pkg.save_compact_weights(staging / pkg.WEIGHTS, {spec.name: compact for spec, compact, _ in layers})
        manifest["library"] = pkg.LIBRARY
    replace_with_compiled(gm, [site for site, _ in chosen])
    program = export_rewritten(gm, example, dynamic)
    torch.export.save(program, str(staging / pkg.GRAPH))
    for name in (pkg.SOURCE, pkg.LIBRARY, pkg.WEIGHTS, pkg.GRAPH):
        if (staging / name).is_file():
            manifest["files"][name] = pkg.sha256_file(staging / name)
    pkg.write_manifest(staging, manifest)
    (staging / pkg.README).write_text(package_readme(manifest))


def _verify(staging: Path, manifest: dict, model, reference, example, tune: bool) -> None:
    """Load the staged package like a user would: outputs must match dense; time it against dense."""
    from kernels.runtime import load
    compiled = load(staging)
    with torch.inference_mode():
        result = compiled(example)
    error = relative_error(result, reference)
    manifest["verification"] = {"max_rel_error": error, "batch": int(example.shape[0])}
    if error > MAX_MODEL_REL_ERROR:
        raise KernelError(f"the compiled model disagrees with the dense model (relative error {error:.2e})")
    manifest["whole_model"] = {}
    if tune and any(e["kernel"] == "sparse" for e in manifest["layers"]):
        dense = eval_module(model)
        times = time_interleaved({"dense": lambda: dense(example), "compiled": lambda: compiled(example)},
                                 budget_s=1.0, min_runs=5, statistic="min")
        manifest["whole_model"] = {"statistic": "fastest interleaved run",
                                   "dense_torch_ms": round(times["dense"], 4),
                                   "compiled_ms": round(times["compiled"], 4),
                                   "fallback": times["compiled"] > times["dense"]}
    pkg.write_manifest(staging, manifest)
