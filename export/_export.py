"""Export a trained classifier to ONNX, prove it right, quantise it when accuracy allows, time it.

Steps, all in a temporary folder beside the target that replaces RUN/export only when every
check passed (a failed export leaves the old folder, or none, and no partial one):

1. ONNX with dynamic batch and sequence axes (torch.export-based exporter; opset 18 by default).
2. Parity on real inputs: the validation split, and odd shapes (batch 1 of the shortest text,
   batch 1 at the maximum length, a mixed batch): |logit difference| <= atol + rtol x the logits'
   scale (`_checks.Tolerance`) and the same predicted class everywhere; the deploy tokenizer (tokenizers' tokenizer.json) must give the
   same ids as the training tokenizer. One error lists every failing check.
3. Fusion for onnxruntime (onnxscript's rewriter: Attention, SkipLayerNormalization, BiasGelu)
   with the weights folded to constants, kept when it passes the same parity checks.
4. Dynamic int8 quantisation of the fused graph (QAttention and int8 MatMuls; of the plain graph
   when fusion was refused) and, for a graph with convolutions, static int8 (QDQ, per-channel,
   calibrated on 128 training images; depthwise convolutions stay float), each kept only when its validation accuracy is within
   `max_accuracy_drop` of the torch model's. export.json records the fusions and quantised nodes.
5. Latency at batch 1 and 32 at the data's typical length: torch eager and every kept variant
   timed in turn within each round, medians with quartiles. The recommended variant is the
   fastest, but a lossy int8 file only when it is clearly (beyond the quartiles) faster than the
   best fp32 file; otherwise export.json and the output say the two are within noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import ExportRecord, ExportSource, InputError, atomic_folder, load_export_source, write_json_atomic

from ._checks import (LOOSEN, Tolerance, deploy_accuracy, ort_session, parity, token_lengths, tokenizer_parity,
                      torch_logits_of)
from ._onnx import to_onnx
from ._predictor import EXPORT_RECORD, LABELS, PREPROCESSOR
from ._variants import (CALIBRATION_ROWS, FUSED, Timer, calibration_batches, fuse, has_convolutions, quantize, quantize_static,
                        recommend)

DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """The exported model failed its checks; the message lists every failing check."""


def _newest_opset() -> int:
    import onnx

    return onnx.defs.onnx_opset_version()


@dataclass(frozen=True)
class ExportConfig:
    """Attributes:
        opset: ONNX opset (default 18, the lowest the torch.export-based exporter writes).
        atol: absolute part of the largest |logit difference| allowed between ONNX fp32 and torch.
        rtol: relative part: times the largest |logit| of the same input (`_checks.Tolerance`).
        quantize: try int8 quantisation (dynamic; static QDQ too for convolutional graphs).
        max_accuracy_drop: int8 is kept only if its validation accuracy is at most this much lower.
        optimize: try fusing the graph for onnxruntime (attention, layer norms, activations).
        repeats: timed runs per contender at batch 1, in rounds of 5 (at least 3 rounds); batch 32
            gets as many rounds of one run.
        latency_budget_ms: the deploy budget in ms per batch of `latency_batch` requests (the
            search's): the recommended variant is one that fits when one does, and export.json's
            `budget` says whether it holds as measured here. None = no budget.
        latency_batch: the batch size the budget is for.
    """

    opset: int = DEFAULT_OPSET
    atol: float = 1e-4
    rtol: float = 1e-3
    quantize: bool = True
    max_accuracy_drop: float = 0.01
    optimize: bool = True
    repeats: int = 30
    latency_budget_ms: float | None = None
    latency_batch: int = 1

    def __post_init__(self):
        InputError.check([
            (self.opset >= 18, f"--opset {self.opset} is too old: the exporter writes opset 18 or newer."),
            (self.opset <= _newest_opset(), f"--opset {self.opset} is newer than the newest opset the installed onnx "
                                            f"knows ({_newest_opset()}). Use 18 (the default) up to {_newest_opset()}."),
            (self.atol > 0, f"--atol {self.atol} must be > 0."),
            (self.rtol >= 0, f"--rtol {self.rtol} must be >= 0."),
            (0 <= self.max_accuracy_drop <= 1, f"--max-accuracy-drop {self.max_accuracy_drop} must be in [0, 1]."),
            (self.repeats >= 1, f"--repeats {self.repeats} must be >= 1."),
            (self.latency_budget_ms is None or self.latency_budget_ms > 0,
             f"--latency-budget-ms {self.latency_budget_ms} must be > 0 milliseconds."),
            (self.latency_batch >= 1, f"--latency-batch {self.latency_batch} must be >= 1."),
        ])


def export(source_path: str | Path, out: str | Path, task, config: ExportConfig = ExportConfig(), *,
           progress=print) -> ExportRecord:
    """Export, check, quantise, time; write the deploy folder `out` (with export.json) and return its record.

    Args:
        source_path: RUN/best_model or a transformers sequence-classification folder.
        out: the deploy folder to (re)place, e.g. RUN/export.
        task: a TaskData whose validation split checks parity and accuracy.
        progress: called with one line per step.

    Raises:
        InputError: no model, not a classification model, labels that do not match the data, an
            architecture that does not export.
        ExportError: the ONNX model disagrees with torch (every failing check listed).
    """
    source = load_export_source(source_path)
    missing = sorted(set(task.labels) - set(source.labels))
    if missing:
        raise InputError(f"the model's labels ({', '.join(source.labels)}) lack the data's "
                         f"{', '.join(missing)}: export with the data the model was trained on.")
    gold = np.array([source.labels.index(task.labels[i]) for i in task.valid.labels])
    with atomic_folder(out, marker=EXPORT_RECORD) as folder:
        return _build(source, source_path, folder, task, gold, config, progress)


def _build(source: ExportSource, source_path, folder: Path, task, gold, config: ExportConfig, progress) -> ExportRecord:
    valid = task.valid
    progress(f"exporting {source.family} to ONNX (opset {config.opset})")
    to_onnx(source, folder / "model.onnx", config.opset)
    if source.modality == "image":
        write_json_atomic(folder / PREPROCESSOR, source.image_spec.to_config())
        pad = 0
    else:
        source.tokenizer.save_pretrained(folder)
        pad = int(source.tokenizer.pad_token_id or 0)
    meta = {"labels": source.labels, "max_length": source.max_length, "pad_token_id": pad,
            "input_names": list(source.input_names), "modality": source.modality}
    write_json_atomic(folder / LABELS, meta)

    progress(f"checking parity on {len(valid)} validation {'images' if source.modality == 'image' else 'texts'} "
             "and odd shapes")
    torch_logits = torch_logits_of(source, valid)
    torch_acc = float((torch_logits.argmax(1) == gold).mean())
    variants = [{"file": "model.onnx", "precision": "fp32"}]
    tol = Tolerance(config.atol, config.rtol)
    failures = parity(source, folder / "model.onnx", valid, torch_logits, tol, variants[0])
    failures += tokenizer_parity(source, folder, valid)
    if failures:
        loosen = any("|logit difference|" in f for f in failures)  # rounding, not NaN or another tokenizer
        raise ExportError("the ONNX model does not match PyTorch, so nothing was exported:\n  - "
                          + "\n  - ".join(failures) + (f"\n{LOOSEN}." if loosen else ""))
    _record = _RecordWriter(folder, source_path, config, torch_acc)
    variants[0].update(accuracy=deploy_accuracy(folder, "model.onnx", valid, gold), passed=True, why="")

    base = "model.onnx"
    fusion = {"tried": False}
    if config.optimize:
        progress("fusing attention, layer norms and activations for onnxruntime")
        fusion = fuse(source, folder, valid, gold, torch_logits, tol, variants)
        if fusion.get("kept"):
            base = FUSED

    quantization = static = {"tried": False}
    if config.quantize:
        progress(f"quantising {base} to int8 and measuring its accuracy")
        quantization = quantize(folder, base, valid, gold, torch_logits, torch_acc, config, source, variants)
        if has_convolutions(folder / base):
            progress(f"quantising {base} to static int8 (QDQ, calibrated on {min(CALIBRATION_ROWS, len(task.train))} training "
                     f"{'images' if source.modality == 'image' else 'rows'}) and measuring its accuracy")
            static = quantize_static(folder, base, calibration_batches(source, task.train), valid, gold,
                                     torch_logits, torch_acc, config, source, variants)

    for v in variants:  # refused variants are recorded, not shipped
        if not v["passed"]:
            (folder / v["file"]).unlink(missing_ok=True)
    passed = [v for v in variants if v["passed"]]
    if source.modality == "image":
        length = None
        progress(f"timing torch and {len(passed)} ONNX variant(s) in turn at "
                 f"{'x'.join(map(str, source.image_spec.output_size))} pixels")
    else:
        length = int(min(source.max_length, max(8, np.median(token_lengths(source, valid)))))
        progress(f"timing torch and {len(passed)} ONNX variant(s) in turn at {length} tokens")
    sessions = {v["file"]: ort_session(folder / v["file"], spinning=False) for v in passed}
    runners = {"torch": source.logits} | {f: (lambda feeds, s=s: s.run(None, feeds)) for f, s in sessions.items()}
    timings = Timer(source, valid, length, config.repeats, (config.latency_batch,)).measure(runners)
    at = f"batch_{config.latency_batch}"
    for v in passed:
        v.update(_standard(timings[v["file"]]))
    recommended, note = recommend(variants)
    budget = None
    if config.latency_budget_ms is not None:
        recommended, note, budget = _within_budget(variants, recommended, note, timings, config, at)
    if note:
        progress(note)
    return _record.write(variants=variants, torch_timing=_standard(timings["torch"]), recommended=recommended,
                         note=note, length=length, fusion=fusion, quantization=quantization, static_quantization=static,
                         budget=budget)


def _standard(timing: dict) -> dict:
    """A timing with the batches export.json reports for every variant (1 and 32)."""
    return {key: {b: x for b, x in value.items() if b in ("batch_1", "batch_32")} for key, value in timing.items()}


def _within_budget(variants, recommended: str, note: str, timings: dict, config: ExportConfig, at: str):
    """The recommendation under a latency budget, and export.json's `budget` entry.

    When the recommended variant's median is over the budget and another kept variant's is within
    it, the fastest of those is recommended instead. The budget holds when the median is within
    it; `within_noise` says the budget lies inside the quartiles (the verdict could go either way
    on a rerun)."""
    budget_ms = config.latency_budget_ms
    median = {v["file"]: timings[v["file"]]["latency_ms"][at] for v in variants if v["passed"]}
    if median[recommended] > budget_ms:
        fitting = sorted((ms, f) for f, ms in median.items() if ms <= budget_ms)
        if fitting:
            note = (f"{recommended} ({median[recommended]:.1f} ms) is over the {budget_ms:g} ms budget at "
                    f"{at.replace('_', ' ')}, so {fitting[0][1]} ({fitting[0][0]:.1f} ms) is recommended")
            recommended = fitting[0][1]
    q1, q3 = timings[recommended]["latency_spread_ms"][at]
    entry = {"budget_ms": budget_ms, "batch": config.latency_batch, "variant": recommended,
             "latency_ms": median[recommended], "latency_spread_ms": [q1, q3],
             "held": median[recommended] <= budget_ms, "within_noise": q1 <= budget_ms <= q3}
    return recommended, note, entry


class _RecordWriter:
    def __init__(self, folder, source_path, config, torch_acc):
        self.folder, self.source_path, self.config, self.torch_acc = folder, source_path, config, torch_acc

    def write(self, *, variants, torch_timing, recommended, note, length, fusion, quantization,
              static_quantization, budget=None) -> ExportRecord:
        from ..core import library_versions

        torch_latency = torch_timing["latency_ms"]
        record = ExportRecord.from_json({
            "source": str(self.source_path), "opset": self.config.opset, "variants": variants,
            "torch_latency_ms": torch_latency, "recommended": recommended, "torch_accuracy": self.torch_acc,
            "sequence_length": length,
            "speedup_over_torch": {v["file"]: torch_latency["batch_32"] / v["latency_ms"]["batch_32"]
                                   for v in variants if v["passed"]},
            "atol": self.config.atol, "rtol": self.config.rtol, "torch_latency_spread_ms": torch_timing["latency_spread_ms"],
            "recommendation_note": note, "fusion": fusion, "quantization": quantization,
            "static_quantization": static_quantization, "budget": budget, "versions": library_versions()})
        record.write(self.folder / EXPORT_RECORD)
        return record
