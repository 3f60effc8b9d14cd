"""The classifier: the pretrained encoder (`Classifier.encoder`, an nn.Module taken from a
`Backbone`), its pooling and a linear head; saving and reloading it.

Saved form (e.g. RUN/best_model/): `save_pretrained` of the backbone and tokenizer (an image
model: its preprocessor_config.json), so plain transformers reloads the encoder with
`AutoModel.from_pretrained`, plus `head.safetensors` (the linear head) and `labels.json` (labels
in id order, pooling, max length, modality). The head sits on the
family's pooling (mean for sentence-transformers models), which transformers' own
`*ForSequenceClassification` classes cannot express; `load_classifier` rebuilds the whole.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ._backbone import POOLINGS, Backbone, Pixels, pool_output, tokenize
from ._errors import InputError, first_line
from ._files import read_json
from ._quiet import quiet_transformers

LABELS_FILE = "labels.json"
HEAD_FILE = "head.safetensors"


class Classifier(nn.Module):
    """Logits for each label from a backbone, its pooling and a linear head.

    Args:
        backbone: the pretrained encoder (its arch facts, pooling and tokenizer are taken).
        num_labels: number of classes.
        dropout: dropout before the head.
        model: the base model to use instead of `backbone.model` (the trainer passes a copy).
    """

    def __init__(self, backbone: Backbone, num_labels: int, *, dropout: float = 0.1, model=None):
        super().__init__()
        self.encoder = model if model is not None else backbone.model
        self.arch = backbone.arch
        self.pooling = backbone.pooling
        self.input_names = backbone.input_names
        self.tokenizer = backbone.tokenizer
        self.image_spec = backbone.image_spec
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.hidden_size, num_labels)
        self.labels: list[str] = []
        self.max_length = 128
        self.injected = None

    @property
    def modality(self) -> str:
        return self.arch.modality

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None):
        if pixel_values is not None:
            inputs = {"pixel_values": pixel_values}
        else:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
        output = self.encoder(**inputs)
        return self.head(self.dropout(pool_output(output, attention_mask, self.pooling)))

    def from_pooled(self, pooled):
        """Logits from already pooled features (the head-only path)."""
        return self.head(self.dropout(pooled))

    @contextlib.contextmanager
    def starting_at(self, start: int):
        """Run blocks `start`.. only, fed by `self.injected` (hidden states entering block `start`).

        The block list is cut to its top part and a pre-hook swaps the first kept block's input
        for `self.injected`; the model's own forward still builds masks and position biases.
        """
        blocks = self.arch.block_list(self.encoder)

        def inject(module, args, kwargs):
            return (self.injected, *args[1:]), kwargs

        handle = blocks[start].register_forward_pre_hook(inject, with_kwargs=True)
        self.arch.set_block_list(self.encoder, nn.ModuleList(blocks[start:]))
        try:
            yield self
        finally:
            handle.remove()
            self.arch.set_block_list(self.encoder, blocks)
            self.injected = None

    def encode(self, texts, pairs=None):
        """The model's inputs for raw texts (or image paths), as `Backbone.tokenize` makes them."""
        if self.modality == "image":
            return Pixels.load(texts, self.image_spec)
        return tokenize(self.tokenizer, self.input_names, texts, pairs, max_length=self.max_length)

    def predict_proba(self, texts, pairs=None, *, batch_size: int = 32) -> np.ndarray:
        """Class probabilities [n, num_labels] for raw texts (or image paths)."""
        device = next(self.parameters()).device
        encoded = self.encode(texts, pairs)
        out = np.empty((len(texts), self.head.out_features), dtype=np.float32)
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            for idx in encoded.sorted_batches(batch_size):
                out[idx] = self(**encoded.batch(idx, device)).softmax(-1).float().cpu().numpy()
        self.train(was_training)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the encoder and tokenizer or image processor (save_pretrained), head.safetensors and
        labels.json."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = self.encoder.config
        before = config.id2label, config.label2id  # the encoder may be a shared backbone's: restore after
        config.id2label = dict(enumerate(self.labels))
        config.label2id = {label: i for i, label in enumerate(self.labels)}
        try:
            with quiet_transformers():
                self.encoder.save_pretrained(path)
                if self.image_spec is not None:
                    from ._images import PREPROCESSOR_FILE

                    (path / PREPROCESSOR_FILE).write_text(json.dumps(self.image_spec.to_config(), indent=2) + "\n")
                else:
                    self.tokenizer.save_pretrained(path)
        finally:
            config.id2label, config.label2id = before
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(path / HEAD_FILE))
        (path / LABELS_FILE).write_text(json.dumps(
            {"labels": self.labels, "pooling": self.pooling, "max_length": self.max_length,
             "modality": self.modality}, indent=2) + "\n")
        return path


def load_classifier(path: str | Path, *, device=None) -> Classifier:
    """Reload a classifier written by `Classifier.save` (e.g. RUN/best_model), in eval mode.

    Raises:
        InputError: the folder lacks labels.json or head.safetensors.
    """
    from safetensors.torch import load_file

    from ._backbone import load_backbone

    path = Path(path)
    missing = [f for f in (LABELS_FILE, HEAD_FILE) if not (path / f).exists()]
    if missing:
        raise InputError(f"'{path}' is not a saved finetune-advisor classifier: it lacks {', '.join(missing)}.")
    meta = read_json(path / LABELS_FILE)
    labels = meta.get("labels")
    InputError.check([
        (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels),
         f"'{path / LABELS_FILE}' must list at least 2 labels as strings; it holds {labels!r}."),
        (isinstance(meta.get("max_length"), int) and meta["max_length"] >= 8,
         f"'{path / LABELS_FILE}': max_length {meta.get('max_length')!r} must be an integer >= 8."),
        (meta.get("pooling") in POOLINGS, f"'{path / LABELS_FILE}': pooling {meta.get('pooling')!r} must be one of "
                                          f"{', '.join(POOLINGS)}."),
    ])
    try:
        head = load_file(str(path / HEAD_FILE))
    except Exception as e:
        raise InputError(f"'{path / HEAD_FILE}' cannot be read ({first_line(e)}): "
                         "it is truncated or not a safetensors file. Run the search again.") from None
    weight = head.get("weight")
    if weight is None or weight.ndim != 2 or weight.shape[0] != len(labels):
        rows = "no weight" if weight is None else f"a head for {weight.shape[0]} classes"
        raise InputError(f"'{path / LABELS_FILE}' lists {len(labels)} labels but '{path / HEAD_FILE}' holds {rows}: "
                         "the two files come from different models. Run the search again.")
    backbone = load_backbone(str(path), device=device, pooling=meta["pooling"], label=f"the model in '{path}'")
    if weight.shape[1] != backbone.hidden_size:
        raise InputError(f"'{path / HEAD_FILE}' expects features of size {weight.shape[1]}, but the model in "
                         f"'{path}' makes {backbone.hidden_size}: the files come from different models.")
    model = Classifier(backbone, len(labels))
    model.head.load_state_dict(head)
    model.labels, model.max_length = list(labels), int(meta["max_length"])
    return model.to(backbone.device).eval()
