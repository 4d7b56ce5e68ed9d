"""zerodata's sparse kernel compiler.

Public API (imported lazily so `import kernels` stays cheap):
    compile_model(model, example_input, out_dir, *, progress=None, tune=True, cache_dir=None) -> manifest dict
    load(package_dir) -> torch.nn.Module
    benchmark(model, package_dir, example_input, *, batches=(1, 8), runs=50, progress=None) -> speed dict
"""
from __future__ import annotations

__all__ = ["compile_model", "load", "benchmark"]


def __getattr__(name: str):
    if name == "compile_model":
        from kernels.graph_compile import compile_model
        return compile_model
    if name == "load":
        from kernels.runtime import load
        return load
    if name == "benchmark":
        from kernels.bench import benchmark
        return benchmark
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
