"""The deploy-side predictor: an exported folder, run with onnxruntime, tokenizers and numpy only
(an image model: onnxruntime, numpy and Pillow).

Copy RUN/export anywhere with those packages installed and:

    from finetune_advisor import Predictor
    predictor = Predictor("export")                  # the recommended variant (export.json)
    predictor.predict(["Shares fell sharply today"])  # [{"label": "business", "score": 0.97}]
    Predictor("photos/export").predict(["cat.jpg"])  # an image model takes image paths

Of the project it imports only core's torch-free parts (the export record's type; for an image
model, core._images: numpy + Pillow, the preprocessing training used), never torch or transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EXPORT_RECORD = "export.json"
LABELS = "labels.json"
TOKENIZER = "tokenizer.json"
PREPROCESSOR = "preprocessor_config.json"


class PredictorError(ValueError):
    """The folder or model file cannot be used; the message says what is wrong and what to do."""


class Predictor:
    """Classify texts with an exported model.

    Args:
        folder: an export folder (RUN/export): labels.json, tokenizer.json, *.onnx and, unless
            `variant` is given, export.json.
        variant: the .onnx file to use (default: the one export.json recommends).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).

    Raises:
        PredictorError: a missing file, or a model file onnxruntime cannot load.
    """

    def __init__(self, folder: str | Path, variant: str | None = None, *, threads: int | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        images = (self.folder / PREPROCESSOR).is_file() and not (self.folder / TOKENIZER).is_file()
        needed = (LABELS, PREPROCESSOR if images else TOKENIZER) + (() if variant else (EXPORT_RECORD,))
        missing = [f for f in needed if not (self.folder / f).is_file()]
        if missing:
            raise PredictorError(f"'{folder}' is not an export folder: it lacks {', '.join(missing)}. "
                                 "Make one with: finetune-advisor export RUN")
        if not images:
            from tokenizers import Tokenizer
        record = _export_record(self.folder / EXPORT_RECORD) if (self.folder / EXPORT_RECORD).is_file() else None
        meta = _read_record(self.folder / LABELS)
        if not isinstance(meta.get("labels"), list) or not meta["labels"] or "max_length" not in meta:
            raise PredictorError(f"'{self.folder / LABELS}' lacks the labels or the max_length. "
                                 "Export again: finetune-advisor export RUN")
        known = [v.file for v in record.variants if v.passed] if record else []
        self.variant = variant or (record.recommended if record else None)
        if not isinstance(self.variant, str) or not self.variant:
            raise PredictorError(f"'{self.folder / EXPORT_RECORD}' names no recommended model. Give --variant "
                                 f"(one of: {', '.join(map(str, known)) or 'none'}) or export again.")
        path = _inside(self.folder, self.variant, known)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PredictorError(f"'{path}' is not a loadable ONNX model ({first}). "
                                 "Export it again: finetune-advisor export RUN") from None
        self.labels: list[str] = list(meta["labels"])
        self.max_length = int(meta["max_length"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.modality = "image" if images else "text"
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(self.labels):
            raise PredictorError(f"'{self.folder / LABELS}' names {len(self.labels)} labels, but '{path.name}' "
                                 f"scores {outputs} classes: the files come from different exports. "
                                 "Export again: finetune-advisor export RUN")
        if images:
            self.spec = _image_spec(self.folder)
            return
        try:
            self.tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER))
        except Exception as e:  # tokenizers raises a bare Exception on a damaged file
            raise PredictorError(f"'{self.folder / TOKENIZER}' cannot be read ({str(e).splitlines()[0][:120]}): "
                                 "it is damaged or cut short. Export again: finetune-advisor export RUN") from None
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = int(meta.get("pad_token_id", 0))

    def encode(self, texts, pairs=None) -> list[dict[str, np.ndarray]]:
        """Token ids per text, unpadded: [{input_ids, attention_mask, token_type_ids}]."""
        inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
        return [{"input_ids": np.asarray(e.ids, dtype=np.int64),
                 "token_type_ids": np.asarray(e.type_ids, dtype=np.int64)}
                for e in self.tokenizer.encode_batch(inputs)]

    def logits(self, texts, pairs=None, *, batch_size: int = 32) -> np.ndarray:
        """Raw logits [n, num_labels]; batches of similar length, each padded to its longest row
        (an image model: `texts` are image paths)."""
        texts = [texts] if isinstance(texts, (str, Path)) else list(texts)
        if batch_size < 1:
            raise PredictorError(f"batch size {batch_size} must be >= 1 (e.g. 32).")
        if self.modality == "image":
            return self._image_logits(texts, batch_size)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            shown = ", ".join(str(i + 1) for i in bad[:10]) + (", …" if len(bad) > 10 else "")
            raise PredictorError(f"empty text: {len(bad)} of {len(texts)} inputs are empty or only whitespace "
                                 f"(number {shown}). Give each text some words.")
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for idx, feeds in self.batches(texts, pairs, batch_size=batch_size):
            out[idx] = self.session.run(None, feeds)[0]
        return out

    def _image_logits(self, paths, batch_size: int) -> np.ndarray:
        """Logits of image files, each decoded once; on a bad file, every bad one is named."""
        from ..core._images import ImageError, image_problems, unreadable_message

        out = np.empty((len(paths), len(self.labels)), dtype=np.float32)
        try:
            for idx, feeds in self.batches(paths, batch_size=batch_size):
                out[idx] = self.session.run(None, feeds)[0]
        except ImageError:
            raise PredictorError(unreadable_message(image_problems(paths)) + ".") from None
        return out

    def batches(self, texts, pairs=None, *, batch_size: int = 32):
        """(row indices, padded inputs) for the texts, longest first, `batch_size` rows a batch, each
        batch padded to its longest row: similar lengths share a batch, so little is padding. Image
        paths go in order, each batch their normalised pixels."""
        if self.modality == "image":
            for s in range(0, len(texts), batch_size):
                idx = np.arange(s, min(s + batch_size, len(texts)))
                yield idx, {"pixel_values": self.spec.pixel_values([texts[i] for i in idx])}
            return
        encoded = self.encode(texts, pairs)
        order = np.argsort([-len(e["input_ids"]) for e in encoded], kind="stable")
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            yield idx, self.batch([encoded[i] for i in idx])

    def batch(self, rows: list[dict]) -> dict[str, np.ndarray]:
        """Pad rows to a batch of the model's inputs."""
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], mask[i, :n], types[i, :n] = r["input_ids"], 1, r["token_type_ids"]
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: feeds[name] for name in self.input_names}

    def predict_proba(self, texts, pairs=None, *, batch_size: int = 32) -> np.ndarray:
        """Class probabilities [n, num_labels] (softmax of the logits), labels in `self.labels` order."""
        z = self.logits(texts, pairs, batch_size=batch_size)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, texts, pairs=None, *, batch_size: int = 32) -> list[dict]:
        """[{"label": best label, "score": its probability}] per text."""
        p = self.predict_proba(texts, pairs, batch_size=batch_size)
        return [{"label": self.labels[i], "score": float(row[i])} for row, i in zip(p, p.argmax(axis=1))]


def image_inputs(folder: str | Path, paths) -> np.ndarray:
    """The normalised pixels [n, 3, H, W] of images as an export folder's preprocessing makes them."""
    return _image_spec(Path(folder)).pixel_values(paths)


def _image_spec(folder: Path):
    from ..core._images import ImageSpec

    try:
        spec = ImageSpec.from_folder(folder)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise PredictorError(f"'{folder / PREPROCESSOR}' cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}). "
                             "Export again: finetune-advisor export RUN") from None
    if spec.output_size is None:
        raise PredictorError(f"'{folder / PREPROCESSOR}' gives no fixed image size. Export again: finetune-advisor export RUN")
    return spec


def _export_record(path: Path):
    """export.json as its record type (core.ExportRecord), or PredictorError naming the file."""
    from ..core import ExportRecord, InputError

    try:
        return ExportRecord.read(path)
    except InputError as e:
        raise PredictorError(f"{e} Export again: finetune-advisor export RUN") from None


def _read_record(path: Path) -> dict:
    """A JSON object from the export folder, or PredictorError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PredictorError(f"'{path}' is not readable JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__}). "
                             "Export again: finetune-advisor export RUN") from None
    if not isinstance(value, dict):
        raise PredictorError(f"'{path}' holds a JSON {type(value).__name__}, not an object. "
                             "Export again: finetune-advisor export RUN")
    return value


def _inside(folder: Path, name: str, known: list) -> Path:
    """The model file `name` inside `folder`; anything that resolves outside it is refused, so an
    export.json or a --variant cannot make the predictor load a file from elsewhere."""
    root = folder.resolve()
    path = (folder / name).resolve()
    choices = ", ".join(map(str, known)) or "none"
    if path.parent != root:
        raise PredictorError(f"variant '{name}' is outside the export folder '{folder}': only its own .onnx files "
                             f"are loaded. Use one of: {choices}.")
    if path.suffix != ".onnx" or not path.is_file():
        raise PredictorError(f"variant '{name}' is not an .onnx file in '{folder}'. Use one of: {choices}.")
    return path
