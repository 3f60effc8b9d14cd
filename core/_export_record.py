"""export.json as types: `ExportRecord` and its parts (see core._records for how records work).

This module imports neither torch nor any other heavy library: the dashboard and the Predictor use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ._records import EXPORT_FILE, _Record
from ._typed import Part


@dataclass
class Latency(Part):
    """Median milliseconds per batch."""

    batch_1: float
    batch_32: float


@dataclass
class Variant(Part):
    """One ONNX file: its checks, accuracy and latency; refused ones say why and are not shipped."""

    RENAMED: ClassVar[dict[str, str]] = {"from": "made_from"}
    file: str
    precision: str
    passed: bool
    why: str = ""
    max_abs_diff: float | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None
    latency_ms: Latency | None = None
    latency_spread_ms: dict[str, list[float]] = field(default_factory=dict)  # {batch_b: [q1, q3]}
    made_from: str | None = None  # the file it was quantised from ("from" in export.json)
    quantized_nodes: dict[str, int] = field(default_factory=dict)
    fused_operators: dict[str, int] = field(default_factory=dict)
    float_first_convs: int | None = None  # static int8: its first convolutions kept in float (export._variants)
    tries: list[dict] = field(default_factory=list)  # static int8: the rungs refused before this one

    def to_json(self) -> dict:
        data = super().to_json()
        return {("from" if k == "made_from" else k): v for k, v in data.items()}


@dataclass
class LatencyBudget(Part):
    """A latency budget as the export measured it: the recommended variant's median (and
    quartiles) at the budget's batch size; `within_noise`: the budget lies between the quartiles."""

    budget_ms: float
    batch: int
    variant: str
    latency_ms: float
    held: bool
    latency_spread_ms: list[float] = field(default_factory=list)
    within_noise: bool = False


@dataclass
class ExportRecord(_Record):
    """export/export.json: each ONNX variant's checks, accuracy and latency (written by `export`)."""

    FILE: ClassVar[str] = EXPORT_FILE
    source: str
    opset: int
    variants: list[Variant]
    torch_latency_ms: Latency
    recommended: str
    torch_accuracy: float | None = None
    sequence_length: int | None = None
    speedup_over_torch: dict[str, float] = field(default_factory=dict)
    atol: float | None = None
    rtol: float | None = None
    torch_latency_spread_ms: dict[str, list[float]] = field(default_factory=dict)
    recommendation_note: str = ""
    fusion: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)
    static_quantization: dict = field(default_factory=dict)
    budget: LatencyBudget | None = None  # the latency budget, when the search had one, and whether it held
    versions: dict[str, str | None] = field(default_factory=dict)

    def variant(self, file: str) -> Variant | None:
        return next((v for v in self.variants if v.file == file), None)

