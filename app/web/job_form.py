"""The job form, generated from the API's own `JobConfig` schema: every field the API accepts, with
its type and default, plus a one-line explanation. The browser posts the values to `POST /v1/jobs`,
so validation is the API's."""
from __future__ import annotations

import typing
from dataclasses import dataclass

from app.schemas import JobConfig

EXPLANATIONS = {
    "entries": "Weights kept in each 3x3 kernel (centre included); fewer = sparser and faster, less faithful.",
    "library_size": ("How many distinct kernel patterns the layers may choose from (up to 56 with 4 entries): "
                     "more keep more accuracy, fewer run faster (filters with the same taps share loads)."),
    "connectivity": "Fraction of the 3x3 convolutions removed as whole kernels (0 keeps every kernel).",
    "connectivity_allocation": "What connectivity is a fraction of: the 3x3 FLOPs (the kernels cheapest per FLOP "
                               "go), all 3x3 kernels (the cheapest go), or every layer's kernels (uniform).",
    "target_compression": "Overall 3x3-conv compression ratio instead of a uniform connectivity, e.g. 4.5.",
    "prune_first_conv": "Also prune the 3-channel stem convolution (small and sensitive; off by default).",
    "prune_depthwise": "Also prune depthwise convolutions.",
    "linear_sparsity": "What to do with 1x1 convolutions and linear layers.",
    "linear_rate": "Fraction of 1x1/linear weights removed when linear sparsity is unstructured.",
    "synthetic": "How synthetic inputs are made: match BatchNorm statistics, or plain Gaussian noise.",
    "synthetic_samples": "Number of synthetic inputs (no real data is ever used; empty = automatic: 128 to 768, "
                         "more for models that are cheap to run).",
    "synthetic_steps": "Optimisation steps spent making the synthetic inputs.",
    "recovery_steps": "Data-free distillation steps after pruning (empty = automatic: 200 when whole kernels are "
                      "removed, none for pattern-only jobs, where it measured no gain).",
    "distill_lr": "Learning rate of the distillation steps (empty = automatic: 1e-4 after block-wise "
                  "reconstruction, 1e-3 without it).",
    "bn_recalibration": "Re-estimate BatchNorm statistics of the pruned model on synthetic inputs.",
    "admm_iterations": "Layer-wise ADMM iterations per layer (0 = projection + masked least squares only).",
    "fidelity_samples": "Held-out synthetic inputs used to measure fidelity in the report.",
    "time_budget_s": "Wall-clock limit for the compression stage, seconds: fewer synthetic inputs when their synthesis would take over half of it (empty = the worker's own limit; the default keeps a CIFAR-sized job within about 10 minutes).",
    "input_shape": "N,C,H,W for models that do not declare an input shape, e.g. 1,3,32,32.",
    "device": "Where the job runs: cpu, or cuda (GPU workers).",
    "seed": "Random seed; the same seed and inputs give the same result.",
}  # pipeline options (compile, measure, tune, bench_runs) explain themselves in their schema descriptions
BASIC = ("entries", "library_size", "connectivity", "target_compression", "synthetic", "recovery_steps",
         "device", "compile", "measure")
SKIPPED = ("extra",)  # free-form dict: API and CLI only


@dataclass
class FormField:
    name: str
    kind: str  # bool | choice | int | float | shape | text
    default: object
    optional: bool
    choices: tuple = ()
    explanation: str = ""
    minimum: object = None
    maximum: object = None

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def _kind(annotation) -> tuple[str, bool, tuple]:
    args = typing.get_args(annotation)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)] if optional else [annotation]
    base = inner[0] if len(inner) == 1 else annotation
    if typing.get_origin(base) is typing.Literal:
        return "choice", optional, typing.get_args(base)
    if base is bool:
        return "bool", optional, ()
    if base is int:
        return "int", optional, ()
    if base is float:
        return "float", optional, ()
    if typing.get_origin(base) is tuple:
        return "shape", optional, ()
    return "text", optional, ()


def _bound(field, name: str):
    for meta in field.metadata:
        for attr in ((name,) if name in ("ge", "le") else ()) + {"ge": ("gt",), "le": ("lt",)}[name]:
            value = getattr(meta, attr, None)
            if value is not None:
                return value
    return None


def job_form_fields() -> tuple[list[FormField], list[FormField]]:
    """(basic, advanced) fields in schema order."""
    basic, advanced = [], []
    for name, field in JobConfig.model_fields.items():
        if name in SKIPPED:
            continue
        kind, optional, choices = _kind(field.annotation)
        default = field.get_default(call_default_factory=True)
        item = FormField(name, kind, default, optional, choices,
                         EXPLANATIONS.get(name, field.description or ""), _bound(field, "ge"), _bound(field, "le"))
        (basic if name in BASIC else advanced).append(item)
    return basic, advanced
