"""Request and response bodies. `JobConfig` is generated from the engine's `CompressionConfig`
(same field names, types and defaults) plus the pipeline options, so the API can never drift from it."""
from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from worker.engine.config import CompressionConfig
from worker.pipeline_options import PipelineOptions

# Bounds the API enforces on top of the types (the engine re-checks against the actual model).
_BOUNDS: dict[str, dict[str, Any]] = {
    "entries": dict(ge=1, le=9),
    "library_size": dict(ge=1, le=126),
    "connectivity": dict(ge=0.0, lt=1.0),
    "target_compression": dict(ge=1.0, le=100.0),
    "linear_rate": dict(ge=0.0, lt=1.0),
    "synthetic_samples": dict(ge=1, le=65536),
    "synthetic_steps": dict(ge=0, le=1_000_000),
    "recovery_steps": dict(ge=0, le=1_000_000),
    "distill_lr": dict(gt=0.0, le=1.0),
    "time_budget_s": dict(gt=0),
    "seed": dict(ge=0, le=2**63 - 1),
    "bench_runs": dict(ge=1, le=1000),
}


def _dataclass_fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        fields[f.name] = (hints[f.name], Field(default=default, description=f.metadata.get("doc"),
                                               **_BOUNDS.get(f.name, {})))
    return fields


_JobConfigBase = create_model(
    "_JobConfigBase",
    __config__=ConfigDict(extra="forbid", strict=False),
    **_dataclass_fields(CompressionConfig),
    **_dataclass_fields(PipelineOptions),
)


class JobConfig(_JobConfigBase):  # type: ignore[misc, valid-type]
    """Every field optional; defaults are the engine's. Unknown fields are refused (422)."""

    def pipeline_config(self) -> dict:
        """The flat dict `worker.pipeline.run_pipeline` takes (JSON-safe)."""
        return self.model_dump(mode="json")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str = Field(max_length=64)
    config: JobConfig = Field(default_factory=JobConfig)
    webhook_url: str | None = Field(default=None, max_length=2048,
                                    description="called with an HMAC-signed POST when the job ends (operator allow-list)")


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    sha256: str
    format: str
    filename: str
    size_bytes: int
    params: int | None
    prunable_layers: list[str]
    input_shape: list[int] | None
    warnings: list[str]
    created_at: datetime
    deduplicated: bool = Field(default=False, description="true when this tenant had already uploaded the same bytes")


class Progress(BaseModel):
    stage: str | None
    done: int
    total: int
    detail: str | None
    percent: float
    eta_seconds: float | None


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_seconds: float | None
    run_seconds: float | None
    stages: dict[str, float]


JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobPublic(BaseModel):
    id: str
    model_id: str
    status: JobStatus
    config: dict
    queue: str
    attempts: int
    cancel_requested: bool
    progress: Progress
    timings: Timings
    error: str | None
    summary: dict | None
    webhook_url: str | None
    created_at: datetime


class ArtifactPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    size_bytes: int
    sha256: str
    url: str


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int = Field(description="total number of items (all pages)")


class Message(BaseModel):
    detail: str
