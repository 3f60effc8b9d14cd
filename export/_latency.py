"""Latency of a model's shape, measured before it is trained: how long the deployed ONNX model
takes per batch at a depth (blocks kept), an input length (text) and a variant (fp32 or int8).

Latency depends on the shape, not on the weights, so a search times each shape once, on a model
of that shape with the pretrained weights and an untrained head, the way export ships it: the
graph fused for onnxruntime (text), and int8 as export makes it (dynamic int8 of the fused graph;
static QDQ for a graph with convolutions, calibrated on random inputs, which set ranges but not
cost). Contenders are timed in turn within each round (`time_in_turn`), medians over the rounds.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..core import ExportSource

from ._checks import ort_session
from ._onnx import _quiet_logs, to_onnx
from ._variants import dynamic_int8, fuse_graph, has_convolutions, static_int8, time_in_turn

ROUNDS = 3  # timed rounds per (length, batch); each runs every variant once untimed, then `BLOCK` times
BLOCK = {1: 5}  # timed runs per round at batch 1; one at larger batches


class ShapeTimer:
    """The ONNX files of one model shape, made once, timed at any input length and batch size.

    Args:
        source: the model as the exporter takes it (`core.export_source_of`).
        opset: ONNX opset of the export.
    """

    def __init__(self, source: ExportSource, opset: int = 18):
        self.source = source
        self.folder = tempfile.TemporaryDirectory(prefix="finetune-advisor-latency-")
        folder = Path(self.folder.name)
        with warnings.catch_warnings(), _quiet_logs("", "onnxscript"):
            warnings.simplefilter("ignore")
            to_onnx(source, folder / "model.onnx", opset)
            base = folder / "model.onnx"
            if source.modality == "text":
                try:
                    fuse_graph(base, folder / "model.opt.onnx")
                    base = folder / "model.opt.onnx"
                except Exception:  # noqa: BLE001 - the plain graph is what export ships then
                    pass
            files = {"fp32": base}
            try:
                if has_convolutions(base):
                    static_int8(base, folder / "model.int8.onnx", [self._feeds(8, 0)])
                else:
                    dynamic_int8(base, folder / "model.int8.onnx")
                files["int8"] = folder / "model.int8.onnx"
            except Exception:  # noqa: BLE001 - no int8 for this graph: fp32 only
                pass
        self.sessions = {name: ort_session(path, spinning=False) for name, path in files.items()}
        source.module = None  # exported: the torch model is not needed to time the files

    def _feeds(self, batch: int, length: int) -> dict:
        """Inputs of `batch` rows at exactly `length` tokens (images: blank ones of the model's size)."""
        if self.source.modality == "image":
            h, w = self.source.image_spec.output_size
            return {"pixel_values": np.random.default_rng(0).standard_normal((batch, 3, h, w)).astype(np.float32)}
        text = " ".join(["word"] * length)
        return self.source.inputs([text] * batch, length=length)

    def measure(self, length: int | None, batches=(1, 32)) -> dict:
        """{variant: {"batch_B": median ms}} at this input length (None for images)."""
        out = {name: {} for name in self.sessions}
        for batch in dict.fromkeys(batches):
            feeds = self._feeds(batch, length or 0)
            runners = {name: (lambda f, s=s: s.run(None, f)) for name, s in self.sessions.items()}
            for name, (_, median, _) in time_in_turn(runners, [feeds], ROUNDS, BLOCK.get(batch, 1)).items():
                out[name][f"batch_{batch}"] = round(median, 3)
        return out

    def close(self) -> None:
        self.sessions = {}
        self.folder.cleanup()


def vector_extensions() -> list[str]:
    """The CPU's vector extensions that set int8's speed-up (VNNI multiplies int8 in one
    instruction; AVX2 alone needs two): those of /proc/cpuinfo's flags, [] where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return []
    return [x for x in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if x in flags]


def machine() -> str:
    """The machine latencies are measured on, as one key: CPU model, cores onnxruntime uses, vector
    extensions (a latency measured elsewhere is not this machine's)."""
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line for line in f if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores, " \
           f"{'+'.join(vector_extensions()) or 'no avx2'}"
