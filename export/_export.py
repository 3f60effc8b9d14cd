"""Export a trained classifier to ONNX, prove it right, quantise it when accuracy allows, time it.

Steps, all in a temporary folder beside the target that replaces RUN/export only when every
check passed (a failed export leaves the old folder, or none, and no partial one):

1. ONNX with dynamic batch and sequence axes (torch.export-based exporter; opset 18 by default).
2. Parity on real inputs: the validation split, and odd shapes (batch 1 of the shortest text,
   batch 1 at the maximum length, a mixed batch): max |logit difference| <= atol and the same
   predicted class everywhere; the deploy tokenizer (tokenizers' tokenizer.json) must give the
   same ids as the training tokenizer. One error lists every failing check.
3. Dynamic int8 quantisation (onnxruntime.quantization), kept only when its validation accuracy is
   within `max_accuracy_drop` of the torch model's.
4. onnxruntime's transformer graph optimiser, kept only when it is measurably faster (>= 5% at
   batch 32) and passes the same parity checks; export.json records what it did either way.
5. Latency at batch 1 and 32 at the data's typical length: torch eager and each variant, median
   of repeats. The recommended variant is the fastest that passed its checks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import InputError, atomic_folder, read_json, write_json_atomic

from ._predictor import EXPORT_RECORD, LABELS, Predictor

DEFAULT_OPSET = 18
FASTER_BY = 0.05  # the graph optimiser's variant is kept when it is at least this much faster


class ExportError(RuntimeError):
    """The exported model failed its checks; the message lists every failing check."""


@dataclass(frozen=True)
class ExportConfig:
    """Attributes:
        opset: ONNX opset (default 18, the lowest the torch.export-based exporter writes).
        atol: largest |logit difference| allowed between ONNX fp32 and torch.
        quantize: try dynamic int8 quantisation.
        max_accuracy_drop: int8 is kept only if its validation accuracy is at most this much lower.
        optimize: try onnxruntime's transformer graph optimiser.
        repeats: timed runs per latency figure (batch 32 uses a third as many, at least 3).
    """

    opset: int = DEFAULT_OPSET
    atol: float = 1e-4
    quantize: bool = True
    max_accuracy_drop: float = 0.01
    optimize: bool = True
    repeats: int = 30

    def __post_init__(self):
        InputError.check([
            (self.opset >= 18, f"--opset {self.opset} is too old: the exporter writes opset 18 or newer."),
            (self.atol > 0, f"--atol {self.atol} must be > 0."),
            (0 <= self.max_accuracy_drop <= 1, f"--max-accuracy-drop {self.max_accuracy_drop} must be in [0, 1]."),
            (self.repeats >= 1, f"--repeats {self.repeats} must be >= 1."),
        ])


class _Source:
    """The torch model to export: logits from (input_ids, attention_mask[, token_type_ids]), in
    that order (`input_names`), positionally."""

    def __init__(self, module, tokenizer, labels: list[str], max_length: int, input_names: tuple, family: str,
                 config=None):
        self.module, self.tokenizer, self.labels = module, tokenizer, labels
        self.max_length, self.input_names, self.family = max_length, input_names, family
        self.config = config  # the transformers config, for the graph optimiser's head count

    def inputs(self, texts, pairs=None, *, length: int | None = None) -> dict:
        """numpy inputs for `texts`: padded to the longest row, or to exactly `length` tokens."""
        enc = self.tokenizer(list(texts), list(pairs) if pairs else None, truncation=True,
                             max_length=length or self.max_length,
                             padding="max_length" if length else "longest", return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in self.input_names}

    def logits(self, feeds: dict) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(*[torch.from_numpy(feeds[k]) for k in self.input_names]).float().numpy()


def load_source(path: str | Path) -> _Source:
    """A saved classifier: RUN/best_model (finetune-advisor) or a transformers
    *ForSequenceClassification folder.

    Raises:
        InputError: the folder is missing or holds no classification model.
    """
    import torch

    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"'{path}' holds no model (no config.json). Give RUN (with best_model/, made by "
                         "finetune-advisor search) or a Hugging Face sequence-classification folder.")
    if (path / "head.safetensors").is_file():
        from core import load_classifier

        model = load_classifier(path, device="cpu")
        model.backbone.config._attn_implementation = "sdpa"
        names = ("input_ids", "attention_mask") + (("token_type_ids",) if "token_type_ids" in model.input_names else ())
        return _Source(model, model.tokenizer, model.labels, model.max_length, names, model.arch.family,
                       model.backbone.config)
    config = read_json(path / "config.json")
    heads = [a for a in config.get("architectures") or [] if a.endswith("ForSequenceClassification")]
    if not heads:
        raise InputError(f"'{path}' is not a classification model: it has no head.safetensors (finetune-advisor) "
                         f"and its architectures ({', '.join(config.get('architectures') or ['none'])}) name no "
                         "*ForSequenceClassification. Export a model trained by finetune-advisor search.")
    from core import load_sequence_classifier

    model, tokenizer = load_sequence_classifier(path)

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).logits

    import inspect

    accepted = inspect.signature(model.forward).parameters
    names = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    from core._backbone import max_positions

    max_length = min(max_positions(model.config, tokenizer), 512)
    return _Source(Logits(model).eval(), tokenizer, labels, max_length, names, model.config.model_type,
                   model.config)


def export(source_path: str | Path, out: str | Path, task, config: ExportConfig = ExportConfig(), *,
           progress=print) -> dict:
    """Export, check, quantise, time; write the deploy folder `out` and return export.json.

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
    source = load_source(source_path)
    missing = sorted(set(task.labels) - set(source.labels))
    if missing:
        raise InputError(f"the model's labels ({', '.join(source.labels)}) lack the data's "
                         f"{', '.join(missing)}: export with the data the model was trained on.")
    gold = np.array([source.labels.index(task.labels[i]) for i in task.valid.labels])
    with atomic_folder(out, marker=EXPORT_RECORD) as folder:
        return _build(source, source_path, folder, task, gold, config, progress)


def _build(source: _Source, source_path, folder: Path, task, gold, config: ExportConfig, progress) -> dict:
    valid = task.valid
    progress(f"exporting {source.family} to ONNX (opset {config.opset})")
    _to_onnx(source, folder / "model.onnx", config.opset)
    source.tokenizer.save_pretrained(folder)
    meta = {"labels": source.labels, "max_length": source.max_length,
            "pad_token_id": int(source.tokenizer.pad_token_id or 0), "input_names": list(source.input_names)}
    write_json_atomic(folder / LABELS, meta)

    progress(f"checking parity on {len(valid)} validation texts and odd shapes")
    torch_logits = _torch_logits(source, valid)
    torch_acc = float((torch_logits.argmax(1) == gold).mean())
    variants = [{"file": "model.onnx", "precision": "fp32"}]
    failures = _parity(source, folder / "model.onnx", valid, torch_logits, config.atol, variants[0])
    failures += _tokenizer_parity(source, folder, valid)
    if failures:
        raise ExportError("the ONNX model does not match PyTorch, so nothing was exported:\n  - "
                          + "\n  - ".join(failures))
    _record = _RecordWriter(folder, source_path, config, torch_acc)
    variants[0].update(accuracy=_accuracy(folder, "model.onnx", valid, gold), passed=True, why="")

    length = int(min(source.max_length, max(8, np.median(_lengths(source, valid)))))
    timer = _Timer(source, valid, length, config.repeats)
    torch_latency = timer.torch()
    variants[0]["latency_ms"] = timer.onnx(folder / "model.onnx")
    base = "model.onnx"

    optimization = {"tried": False}
    if config.optimize:
        progress("trying onnxruntime's transformer graph optimiser")
        optimization = _optimize(source, folder, valid, gold, torch_logits, config, timer, variants)
        if optimization.get("kept"):
            base = "model.opt.onnx"

    quantization = {"tried": False}
    if config.quantize:
        progress("quantising to int8 and measuring its accuracy")
        quantization = _quantize(folder, base, valid, gold, torch_logits, torch_acc, config, timer, variants)

    passed = [v for v in variants if v["passed"]]
    recommended = min(passed, key=lambda v: v["latency_ms"]["batch_32"])["file"]
    for v in variants:  # refused variants are recorded, not shipped
        if not v["passed"]:
            (folder / v["file"]).unlink(missing_ok=True)
    return _record.write(variants=variants, torch_latency=torch_latency, recommended=recommended,
                         length=length, optimization=optimization, quantization=quantization)


class _RecordWriter:
    def __init__(self, folder, source_path, config, torch_acc):
        self.folder, self.source_path, self.config, self.torch_acc = folder, source_path, config, torch_acc

    def write(self, *, variants, torch_latency, recommended, length, optimization, quantization) -> dict:
        from core import library_versions

        record = {"source": str(self.source_path), "opset": self.config.opset, "atol": self.config.atol,
                  "torch_accuracy": self.torch_acc, "sequence_length": length,
                  "variants": variants, "torch_latency_ms": torch_latency, "recommended": recommended,
                  "speedup_over_torch": {v["file"]: torch_latency["batch_32"] / v["latency_ms"]["batch_32"]
                                         for v in variants if v["passed"]},
                  "optimization": optimization, "quantization": quantization,
                  "versions": library_versions()}
        write_json_atomic(self.folder / EXPORT_RECORD, record)
        return record


def _to_onnx(source: _Source, path: Path, opset: int) -> None:
    import torch

    example = source.inputs(["an example text to trace", "short"])
    args = tuple(torch.from_numpy(example[k]) for k in source.input_names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=source.max_length)
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


def _lengths(source: _Source, split) -> np.ndarray:
    enc = source.tokenizer(list(split.texts), list(split.pairs) if split.pairs else None, truncation=True,
                           max_length=source.max_length)
    return np.array([len(ids) for ids in enc["input_ids"]])


def _batches(source: _Source, split, batch_size: int = 32):
    """(row indices, numpy inputs) over the split, in order."""
    for s in range(0, len(split), batch_size):
        idx = np.arange(s, min(s + batch_size, len(split)))
        pairs = [split.pairs[i] for i in idx] if split.pairs else None
        yield idx, source.inputs([split.texts[i] for i in idx], pairs)


def _torch_logits(source: _Source, split) -> np.ndarray:
    return np.concatenate([source.logits(feeds) for _, feeds in _batches(source, split)])


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _parity(source: _Source, path: Path, split, torch_logits, atol: float, variant: dict) -> list[str]:
    """Every failing parity check of `path` against torch, as one line each; fills max_abs_diff."""
    session = _session(path)
    onnx_logits = np.concatenate([session.run(None, feeds)[0] for _, feeds in _batches(source, split)])
    failures = _non_finite(path.name, "the validation split", onnx_logits, torch_logits)
    if failures:  # nothing else to learn from a model that gives NaN
        variant["max_abs_diff"] = None
        return failures
    diff = _max_diff(onnx_logits, torch_logits)
    variant["max_abs_diff"] = diff
    flipped = int((onnx_logits.argmax(1) != torch_logits.argmax(1)).sum())
    if diff is not None and diff > atol:
        failures.append(f"{path.name} on the validation split: max |logit difference| {diff:.2e} > atol {atol:.0e}")
    if flipped and diff is not None:
        failures.append(f"{path.name} on the validation split: {flipped} of {len(split)} predicted classes differ")
    lengths = _lengths(source, split)
    shortest, longest = int(lengths.argmin()), int(lengths.argmax())
    odd = {"batch 1, shortest text": [split.texts[shortest]],
           f"batch 1, {source.max_length} tokens": [" ".join([split.texts[longest]] * 8)],
           "batch 3, mixed lengths": [split.texts[shortest], split.texts[longest], split.texts[0][:40]]}
    for name, texts in odd.items():
        feeds = source.inputs(texts)
        a, b = session.run(None, feeds)[0], source.logits(feeds)
        d = _max_diff(a, b)
        if d is None:
            failures += _non_finite(path.name, name, a, b)
            continue
        variant["max_abs_diff"] = None if variant["max_abs_diff"] is None else max(variant["max_abs_diff"], d)
        if d > atol or (a.argmax(1) != b.argmax(1)).any():
            failures.append(f"{path.name}, {name}: max |logit difference| {d:.2e} (atol {atol:.0e})"
                            + ("; the predicted class differs" if (a.argmax(1) != b.argmax(1)).any() else ""))
    return failures


def _max_diff(a: np.ndarray, b: np.ndarray) -> float | None:
    """max |a - b|, or None when either side holds NaN or inf (where `diff > atol` would be False)."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    return float(np.abs(a - b).max())


def _non_finite(file: str, where: str, onnx_logits: np.ndarray, torch_logits: np.ndarray) -> list[str]:
    """A failure line for each side whose logits hold NaN or inf."""
    failures = []
    for side, logits in (("PyTorch", torch_logits), (file, onnx_logits)):
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        if bad:
            failures.append(f"{side} gives NaN or infinite logits for {bad} of {len(logits)} inputs on {where}"
                            + (": the model's weights are broken; train it again" if side == "PyTorch" else ""))
    return failures


def _tokenizer_parity(source: _Source, folder: Path, split) -> list[str]:
    """The deploy tokenizer (tokenizers + tokenizer.json) must give the training tokenizer's ids."""
    from tokenizers import Tokenizer

    if not (folder / "tokenizer.json").is_file():
        return ["the tokenizer has no tokenizer.json (a slow tokenizer), so the deploy folder cannot tokenize"]
    deploy = Tokenizer.from_file(str(folder / "tokenizer.json"))
    deploy.no_padding()
    deploy.enable_truncation(source.max_length)
    texts = list(split.texts)
    pairs = list(split.pairs) if split.pairs else None
    ours = [e.ids for e in deploy.encode_batch(list(zip(texts, pairs)) if pairs else texts)]
    theirs = source.tokenizer(texts, pairs, truncation=True, max_length=source.max_length)["input_ids"]
    bad = sum(a != list(b) for a, b in zip(ours, theirs))
    return [f"tokenizer.json gives other token ids than the model's tokenizer for {bad} of {len(texts)} texts"] \
        if bad else []


def _accuracy(folder: Path, file: str, split, gold) -> float:
    """Validation accuracy through the deploy path (Predictor: tokenizers + onnxruntime)."""
    predictor = Predictor(folder, file) if (folder / EXPORT_RECORD).exists() else _bare_predictor(folder, file)
    p = predictor.logits(split.texts, split.pairs)
    return float((p.argmax(1) == gold).mean())


def _bare_predictor(folder: Path, file: str) -> Predictor:
    """A Predictor before export.json exists (it only needs to name the file)."""
    write_json_atomic(folder / EXPORT_RECORD, {"recommended": file, "variants": []})
    try:
        return Predictor(folder, file)
    finally:
        (folder / EXPORT_RECORD).unlink()


class _Timer:
    """Median latency in ms at batch 1 and 32, sequence length `length`, for torch and ONNX files."""

    def __init__(self, source: _Source, split, length: int, repeats: int):
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
        session = _session(path)
        return {f"batch_{b}": self._median(lambda f: session.run(None, f), b) for b in (1, 32)}


def _optimize(source, folder, split, gold, torch_logits, config, timer, variants) -> dict:
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
    failures = _parity(source, folder / "model.opt.onnx", split, torch_logits, config.atol, variant)
    variant["latency_ms"] = timer.onnx(folder / "model.opt.onnx")
    base = variants[0]["latency_ms"]["batch_32"]
    gain = 1 - variant["latency_ms"]["batch_32"] / base
    if failures:
        why = "it failed parity: " + "; ".join(failures)
    elif gain < FASTER_BY:
        why = f"not measurably faster: {gain:+.1%} at batch 32 (needs {FASTER_BY:.0%})"
    else:
        why = ""
    variant.update(accuracy=_accuracy(folder, variant["file"], split, gold), passed=not why, why=why)
    variants.append(variant)
    return {"tried": True, "kept": not why, "fused_operators": fused, "gain_at_batch_32": gain, "why": why}


def _quantize(folder, base, split, gold, torch_logits, torch_acc, config, timer, variants) -> dict:
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
    session = _session(target)
    logits = np.concatenate([session.run(None, feeds)[0] for _, feeds in _batches(timer.source, split)])
    accuracy = _accuracy(folder, target.name, split, gold)
    drop = torch_acc - accuracy
    why = "" if drop <= config.max_accuracy_drop else (
        f"accuracy {accuracy:.4f} is {drop:.4f} below torch's {torch_acc:.4f} (gate {config.max_accuracy_drop})")
    if not np.isfinite(logits).all():
        why = "it gives NaN or infinite logits"
    variant = {"file": target.name, "precision": "int8", "from": base,
               "max_abs_diff": _max_diff(logits, torch_logits), "accuracy": accuracy,
               "accuracy_drop": drop, "latency_ms": timer.onnx(target), "passed": not why, "why": why}
    variants.append(variant)
    return {"tried": True, "kept": not why, "accuracy_drop": drop, "why": why}
