"""Latency as a property of a trial's shape, and the front of accuracy against latency.

A trial's latency depends on its shape (kept_layers; max_length up to the texts' typical length;
fp32 or int8), not on its weights, so it is measured once per shape, with onnxruntime on this
machine (`export._latency.ShapeTimer`), before the trial trains, and kept in latency.json in the
cache folder (under a file lock, keyed by the machine, the model's fingerprint and the shape) for
every later trial, worker, resume and search of the same model on this machine. The trial carries
it in its user attributes (`latency_ms`: {variant: {"batch_B": ms}}).

The study stays single-objective (Optuna cannot prune multi-objective studies): with a budget, a
trial whose fastest variant is over it is pruned before it trains, so every finished trial fits
and the most accurate is the best model. The front of validation accuracy against latency is
computed from the finished trials afterwards (`front`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

LATENCY_FILE = "latency.json"
LATENCY_ATTR = "latency_ms"
LENGTH_ATTR = "latency_length"  # the input length (tokens) a trial's latency was measured at


@dataclass(frozen=True)
class Budget:
    """A latency budget: `ms` per batch of `batch` requests (None: no budget, the front only)."""

    ms: float | None = None
    batch: int = 1

    def fits(self, latency: dict) -> bool:
        """Whether some variant of a shape ({variant: {"batch_B": ms}}) is within the budget."""
        return self.ms is None or min(v[f"batch_{self.batch}"] for v in latency.values()) <= self.ms

    def fastest(self, latency: dict) -> tuple[str, float]:
        """(variant, ms) of the fastest variant at the budget's batch."""
        return min(((name, v[f"batch_{self.batch}"]) for name, v in latency.items()), key=lambda x: x[1])


class LatencyTable:
    """Measured latencies of shapes on this machine, in FOLDER/latency.json, measured on first need.

    Args:
        folder: where latency.json lives (the feature cache's folder).
        backbone: the loaded model; shallower shapes are cut from it (`Backbone.keep_first`).
        num_labels: the head's width (a head of this size is timed with the rest).
        typical_length: the texts' median length in tokens (None for images): a request of
            max_length L is timed at min(L, typical_length), the length export times at.
        batches: batch sizes to time (1 and 32, and the budget's).
    """

    def __init__(self, folder, backbone, num_labels: int, typical_length: int | None, batches=(1, 32)):
        from ..export._latency import machine

        self.folder, self.backbone, self.num_labels = Path(folder), backbone, num_labels
        self.typical_length, self.batches = typical_length, tuple(dict.fromkeys(batches))
        self.machine = machine()
        self.timers: dict[int, object] = {}
        self.untimed = ""  # why the model cannot be timed, once it is known

    def length(self, max_length: int) -> int | None:
        """The length a request capped at max_length is timed at (None for images)."""
        return None if self.typical_length is None else max(8, min(max_length, self.typical_length))

    def of(self, depth: int, max_length: int) -> dict | None:
        """{variant: {"batch_B": ms}} of the shape (measured now if it is not in the file); None when
        the model does not export to ONNX (`untimed` says why)."""
        length = self.length(max_length)
        key = f"{self.backbone.fingerprint}: kept_layers={depth}, length={length}"
        file = self.folder / LATENCY_FILE
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(self.folder / ".latency.lock"):
            table = self._read(file)
            shapes = table.setdefault(self.machine, {})
            known = shapes.get(key, {})
            if known and all(f"batch_{b}" in v for v in known.values() for b in self.batches):
                return known
            timer = self._timer(depth)
            if timer is None:
                return None
            shapes[key] = timer.measure(length, self.batches)
            from ..core import write_json_atomic

            write_json_atomic(file, table)
            return shapes[key]

    def _timer(self, depth: int):
        from ..core import Classifier, InputError, export_source_of
        from ..export._latency import ShapeTimer

        if self.untimed:
            return None
        if depth not in self.timers:
            backbone = self.backbone.keep_first(depth)
            # a copy: the export folds layers out of the module it is given, and the search trains this backbone
            model = Classifier(backbone, self.num_labels, dropout=0.0, model=copy.deepcopy(backbone.model).cpu()).eval()
            model.labels = [str(i) for i in range(self.num_labels)]
            model.max_length = min(backbone.max_positions, 512)
            try:
                self.timers[depth] = ShapeTimer(export_source_of(model))
            except InputError as e:  # e.g. Swin: its window attention does not trace with a dynamic batch
                self.untimed = str(e)
                return None
        return self.timers[depth]

    @staticmethod
    def _read(file) -> dict:
        try:
            table = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or unreadable: measured again
            return {}
        return table if isinstance(table, dict) else {}

    def close(self) -> None:
        for timer in self.timers.values():
            timer.close()
        self.timers = {}


def latency_row(trial, params: dict) -> dict:
    """A finished trial as `points` reads it: {"number", "value", "params", "latency_ms"}, and
    "latency_length" where the trial recorded the length it was timed at (None: an image model)."""
    row = {"number": trial.number, "value": trial.value, "params": params,
           "latency_ms": trial.user_attrs.get(LATENCY_ATTR)}
    if LENGTH_ATTR in trial.user_attrs:
        row["latency_length"] = trial.user_attrs[LENGTH_ATTR]
    return row


def points(rows: list[dict], batch: int = 1) -> list[dict]:
    """Every (trial, variant) timed at `batch`, fastest first (rows as `latency_row` makes them). An
    image model's points carry no max_length: an image has pixels, not tokens."""
    timed = [{"number": r["number"], "kept_layers": r["params"].get("kept_layers"),
              "max_length": None if r.get("latency_length", 0) is None else r["params"].get("max_length"),
              "variant": variant, "accuracy": r["value"],
              "latency_ms_batch_1": v.get("batch_1"), "latency_ms_batch_32": v.get("batch_32"),
              "latency_ms": v[f"batch_{batch}"]}
             for r in rows for variant, v in (r.get("latency_ms") or {}).items() if f"batch_{batch}" in v]
    return sorted(timed, key=lambda p: (p["latency_ms"], -p["accuracy"], p["number"]))


def front(rows: list[dict], batch: int = 1) -> list[dict]:
    """The trials on the front of validation accuracy against latency at `batch`: each point a
    (trial, variant) that no other point beats on both (at least as accurate and faster, or more
    accurate and as fast), fastest first.

    Args:
        rows: finished trials as `latency_row` makes them (latency as `LatencyTable.of`).
    """
    kept, best = [], float("-inf")
    for p in points(rows, batch):
        if p["accuracy"] > best:
            kept.append(p)
            best = p["accuracy"]
    return kept
