"""Step 2 of the export: is the ONNX model the PyTorch model? Logits on the validation split and
on odd shapes within tolerance (`Tolerance`: absolute + relative to the logits' scale), the same
classes, no NaN, and a deploy tokenizer that gives the same ids (images: a deploy folder whose
preprocessing gives the same pixels). Each check returns its failures as sentences, so one error
can list them all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import ExportSource

from ._predictor import Predictor, image_inputs


def token_lengths(source: ExportSource, split) -> np.ndarray:
    enc = source.tokenizer(list(split.texts), list(split.pairs) if split.pairs else None, truncation=True,
                           max_length=source.max_length)
    return np.array([len(ids) for ids in enc["input_ids"]])


def batches(source: ExportSource, split, batch_size: int = 32):
    """(row indices, numpy inputs) over the split, in order."""
    for s in range(0, len(split), batch_size):
        idx = np.arange(s, min(s + batch_size, len(split)))
        pairs = [split.pairs[i] for i in idx] if split.pairs else None
        yield idx, source.inputs([split.texts[i] for i in idx], pairs)


def torch_logits_of(source: ExportSource, split) -> np.ndarray:
    return np.concatenate([source.logits(feeds) for _, feeds in batches(source, split)])


def ort_session(path: Path, *, spinning: bool = True):
    """A CPU session; spinning=False makes its threads sleep right after each run (for timing it
    beside other contenders, whose threads its spinning would slow)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a graph that fails to run is reported by the caller
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class DoesNotRun(Exception):
    """onnxruntime cannot run a variant; the message is one sentence naming it and why."""


def onnx_logits(source: ExportSource, path: Path, split):
    """(session, logits of `path` on the split).

    Raises:
        DoesNotRun: onnxruntime refuses the graph or one of its kernels the shapes it meets (e.g. a
            fused MatMul of SigLIP's attention-pooling head).
    """
    try:
        session = ort_session(path)
        return session, np.concatenate([session.run(None, feeds)[0] for _, feeds in batches(source, split)])
    except Exception as e:
        message = str(e).split("Status Message:")[-1].strip().splitlines()[0]
        raise DoesNotRun(f"{path.name} does not run in onnxruntime: "
                         f"{'…' if len(message) > 160 else ''}{message[-160:]}") from None


@dataclass(frozen=True)
class Tolerance:
    """How far ONNX logits may be from torch's: |onnx - torch| <= atol + rtol * scale, element by
    element, where scale is the largest |torch logit| of the same input (numpy's `allclose` rule,
    with the row's scale in place of each element's, so a logit near 0 beside large ones is held
    to the error the large ones allow). Float32 rounding grows with the logits' size and the
    graph's depth; a deep CNN with large logits differs from torch by more than a small encoder."""

    atol: float = 1e-4
    rtol: float = 1e-3

    def excess(self, onnx: np.ndarray, torch: np.ndarray) -> tuple[float, float]:
        """(the largest |difference|, what the rule allows at that element); the gate holds when
        the first is no larger than the second everywhere (the element with the largest ratio)."""
        diff = np.abs(onnx - torch)
        allowed = self.atol + self.rtol * np.abs(torch).max(axis=1, keepdims=True)
        worst = np.unravel_index(np.argmax(diff / allowed), diff.shape)
        return float(diff[worst]), float(np.broadcast_to(allowed, diff.shape)[worst])

    def describe(self, diff: float, allowed: float) -> str:
        return (f"|logit difference| {diff:.2e} where atol {self.atol:g} + rtol {self.rtol:g} x the logits' "
                f"scale allows {allowed:.2e}")


LOOSEN = "ExportConfig.atol / rtol (--atol / --rtol) loosen the gate if the difference is rounding you accept"


def parity(source: ExportSource, path: Path, split, torch_logits, tol: Tolerance, variant: dict) -> list[str]:
    """Every failing parity check of `path` against torch, as one line each; fills max_abs_diff."""
    try:
        session, logits = onnx_logits(source, path, split)
    except DoesNotRun as e:
        variant["max_abs_diff"] = None
        return [str(e)]
    failures = non_finite(path.name, "the validation split", logits, torch_logits)
    if failures:  # nothing else to learn from a model that gives NaN
        variant["max_abs_diff"] = None
        return failures
    variant["max_abs_diff"] = max_diff(logits, torch_logits)
    flipped = int((logits.argmax(1) != torch_logits.argmax(1)).sum())
    diff, allowed = tol.excess(logits, torch_logits)
    if diff > allowed:
        failures.append(f"{path.name} on the validation split: {tol.describe(diff, allowed)}")
    if flipped:
        failures.append(f"{path.name} on the validation split: {flipped} of {len(split)} predicted classes differ")
    for name, texts in odd_batches(source, split).items():
        feeds = source.inputs(texts)
        a, b = session.run(None, feeds)[0], source.logits(feeds)
        d = max_diff(a, b)
        if d is None:
            failures += non_finite(path.name, name, a, b)
            continue
        variant["max_abs_diff"] = max(variant["max_abs_diff"], d)
        diff, allowed = tol.excess(a, b)
        if diff > allowed or (a.argmax(1) != b.argmax(1)).any():
            failures.append(f"{path.name}, {name}: {tol.describe(diff, allowed)}"
                            + ("; the predicted class differs" if (a.argmax(1) != b.argmax(1)).any() else ""))
    return failures


def odd_batches(source: ExportSource, split) -> dict[str, list[str]]:
    """Inputs of shapes the validation batches may not have: batch 1, the longest and shortest
    texts, mixed lengths in one batch (images: batch 1 and batch 3; their size is fixed)."""
    if source.modality == "image":
        return {"batch 1": split.texts[:1], "batch 3": [split.texts[i % len(split)] for i in range(3)]}
    lengths = token_lengths(source, split)
    shortest, longest = int(lengths.argmin()), int(lengths.argmax())
    return {"batch 1, shortest text": [split.texts[shortest]],
            f"batch 1, {source.max_length} tokens": [" ".join([split.texts[longest]] * 8)],
            "batch 3, mixed lengths": [split.texts[shortest], split.texts[longest], split.texts[0][:40]]}


def max_diff(a: np.ndarray, b: np.ndarray) -> float | None:
    """max |a - b|, or None when either side holds NaN or inf (where a comparison would be False)."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    return float(np.abs(a - b).max())


def non_finite(file: str, where: str, onnx_logits: np.ndarray, torch_logits: np.ndarray) -> list[str]:
    """A failure line for each side whose logits hold NaN or inf."""
    failures = []
    for side, logits in (("PyTorch", torch_logits), (file, onnx_logits)):
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        if bad:
            failures.append(f"{side} gives NaN or infinite logits for {bad} of {len(logits)} inputs on {where}"
                            + (": the model's weights are broken; train it again" if side == "PyTorch" else ""))
    return failures


def tokenizer_parity(source: ExportSource, folder: Path, split) -> list[str]:
    """The deploy tokenizer (tokenizers + tokenizer.json) must give the training tokenizer's ids;
    for images, the deploy folder's preprocessing (its preprocessor_config.json, read by the
    Predictor) must give the training pixels exactly."""
    if source.modality == "image":
        paths = split.texts[:64]
        ours = image_inputs(folder, paths)
        theirs = source.inputs(paths)["pixel_values"]
        return [] if ours.shape == theirs.shape and np.array_equal(ours, theirs) else [
            "the deploy folder's preprocessing gives other pixels than training's on the validation images"]
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


def deploy_accuracy(folder: Path, file: str, split, gold) -> float:
    """Validation accuracy through the deploy path (Predictor: tokenizers + onnxruntime)."""
    p = Predictor(folder, file).logits(split.texts, split.pairs)
    return float((p.argmax(1) == gold).mean())
