"""Step 1 of the export: the torch model to an ONNX file with dynamic batch and sequence axes
(images: a dynamic batch of fixed-size images) (torch.export-based exporter)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

from ..core import ExportSource, InputError


def to_onnx(source: ExportSource, path: Path, opset: int) -> None:
    import torch

    batch = torch.export.Dim("batch")
    if source.modality == "image":  # two blank images of the model's input size; only the batch varies
        h, w = source.image_spec.output_size
        args = (torch.zeros(2, 3, h, w),)
        shapes = ({0: batch},)
    else:
        example = source.inputs(["an example text to trace", "short"])
        args = tuple(torch.from_numpy(example[k]) for k in source.input_names)
        seq = torch.export.Dim("sequence", max=source.max_length)
        shapes = tuple({0: batch, 1: seq} for _ in source.input_names)
    try:
        with warnings.catch_warnings(), _quiet_logs("torch.onnx", "torch.export", "torch._dynamo"):
            warnings.simplefilter("ignore")
            torch.onnx.export(source.module, args, str(path), dynamo=True, input_names=list(source.input_names),
                              output_names=["logits"], dynamic_shapes=shapes, opset_version=opset,
                              external_data=False, verbose=False)
    except Exception as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise InputError(f"the {source.family} architecture does not export to ONNX here: {first[:300]}") from None


@contextlib.contextmanager
def _quiet_logs(*names: str):
    """Only errors from these loggers for a moment (the exporter and quantiser chatter on warning)."""
    loggers = [logging.getLogger(n) if n else logging.getLogger() for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
