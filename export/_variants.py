"""Steps 3-5 of the export: the graph optimiser and int8 quantisation, each kept only when it
passes its gate, and the latencies that rank the variants."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from core import ExportSource

from ._checks import deploy_accuracy, batches, max_diff, parity, ort_session
from ._onnx import _quiet_logs

FASTER_BY = 0.05  # the graph optimiser's variant is kept when it is at least this much faster


class Timer:
    """Median latency in ms at batch 1 and 32, sequence length `length`, for torch and ONNX files."""

    def __init__(self, source: ExportSource, split, length: int, repeats: int):
        texts = [split.texts[i % len(split)] for i in range(32)]
        self.source, self.repeats = source, repeats
        self.feeds = {1: source.inputs(texts[:1], length=length), 32: source.inputs(texts, length=length)}

    def _median(self, run, batch: int) -> float:
        n = self.repeats if batch == 1 else max(3, self.repeats // 3)
        run(self.feeds[batch])  # warm-up
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            run(self.feeds[batch])
            times.append((time.perf_counter() - t0) * 1000)
        return float(np.median(times))

    def torch(self) -> dict:
        return {f"batch_{b}": self._median(self.source.logits, b) for b in (1, 32)}

    def onnx(self, path: Path) -> dict:
        session = ort_session(path)
        return {f"batch_{b}": self._median(lambda f: session.run(None, f), b) for b in (1, 32)}


def optimize(source, folder, split, gold, torch_logits, config, timer, variants) -> dict:
    """onnxruntime.transformers' optimiser (attention/LayerNorm/GELU fusion); kept when faster."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(str(folder / "model.onnx"), model_type="bert",
                                       num_heads=int(getattr(source.config, "num_attention_heads", 0) or 0),
                                       hidden_size=int(getattr(source.config, "hidden_size", 0) or 0))
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(folder / "model.opt.onnx"))
    except Exception as e:
        return {"tried": True, "kept": False, "why": f"the optimiser failed: {type(e).__name__}: {e}"[:300]}
    variant = {"file": "model.opt.onnx", "precision": "fp32-optimized"}
    failures = parity(source, folder / "model.opt.onnx", split, torch_logits, config.atol, variant)
    variant["latency_ms"] = timer.onnx(folder / "model.opt.onnx")
    base = variants[0]["latency_ms"]["batch_32"]
    gain = 1 - variant["latency_ms"]["batch_32"] / base
    if failures:
        why = "it failed parity: " + "; ".join(failures)
    elif gain < FASTER_BY:
        why = f"not measurably faster: {gain:+.1%} at batch 32 (needs {FASTER_BY:.0%})"
    else:
        why = ""
    variant.update(accuracy=deploy_accuracy(folder, variant["file"], split, gold), passed=not why, why=why)
    variants.append(variant)
    return {"tried": True, "kept": not why, "fused_operators": fused, "gain_at_batch_32": gain, "why": why}


def quantize(folder, base, split, gold, torch_logits, torch_acc, config, timer, variants) -> dict:
    """Dynamic int8 weights (onnxruntime.quantization); kept when the accuracy drop is small enough."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = folder / "model.int8.onnx"
    try:
        with _quiet_logs(""):  # the quantiser advises pre-processing on the root logger
            quantize_dynamic(str(folder / base), str(target), weight_type=QuantType.QInt8)
    except Exception as e:
        variants.append({"file": target.name, "precision": "int8", "passed": False,
                         "why": f"quantisation failed: {type(e).__name__}: {e}"[:300]})
        return {"tried": True, "kept": False, "why": variants[-1]["why"]}
    session = ort_session(target)
    logits = np.concatenate([session.run(None, feeds)[0] for _, feeds in batches(timer.source, split)])
    accuracy = deploy_accuracy(folder, target.name, split, gold)
    drop = torch_acc - accuracy
    why = "" if drop <= config.max_accuracy_drop else (
        f"accuracy {accuracy:.4f} is {drop:.4f} below torch's {torch_acc:.4f} (gate {config.max_accuracy_drop})")
    if not np.isfinite(logits).all():
        why = "it gives NaN or infinite logits"
    variant = {"file": target.name, "precision": "int8", "from": base,
               "max_abs_diff": max_diff(logits, torch_logits), "accuracy": accuracy,
               "accuracy_drop": drop, "latency_ms": timer.onnx(target), "passed": not why, "why": why}
    variants.append(variant)
    return {"tried": True, "kept": not why, "accuracy_drop": drop, "why": why}
