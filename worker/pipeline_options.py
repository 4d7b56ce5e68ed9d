"""Options of the pipeline stages after compression (pure: the API schema is generated from it)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PipelineOptions:
    compile: bool = field(default=True, metadata={"doc": "build the compiled sparse package (sparse.zip)"})
    measure: bool = field(default=True, metadata={
        "doc": "time dense torch, dense ONNX Runtime and the sparse package"})
    tune: bool = field(default=True, metadata={
        "doc": "time several kernel blockings per layer and keep the fastest (off: one default blocking, faster compile)"})
    bench_runs: int = field(default=50, metadata={"doc": "timed runs per contender and batch size"})
