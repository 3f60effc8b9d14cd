"""export: the trained model to ONNX, proven equal to PyTorch, int8 when accuracy allows, timed.

`export(source, out, task, config)` writes a deploy folder (model.onnx, model.int8.onnx when it
passed its gate, tokenizer.json, labels.json, export.json). `Predictor(folder)` runs that folder
with onnxruntime, tokenizers and numpy only; importing it (or this package) does not import torch.
"""

from importlib import import_module

from ._predictor import EXPORT_RECORD, Predictor, PredictorError

_LAZY = {"export": "_export", "ExportConfig": "_export", "ExportError": "_export", "DEFAULT_OPSET": "_export"}

__all__ = ["EXPORT_RECORD", "Predictor", "PredictorError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'export' has no attribute '{name}'")
