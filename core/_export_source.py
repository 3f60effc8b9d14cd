"""The trained classifier in the form the exporter needs: one loading path for RUN/best_model
(finetune-advisor's classifier) and for transformers *ForSequenceClassification folders, with
logits from numpy inputs, so that export/ compares ONNX with PyTorch without touching torch."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from ._errors import InputError
from ._files import read_json
from ._hub import load_sequence_classifier, max_positions
from ._model import load_classifier


class ExportSource:
    """A trained classifier as the exporter needs it: `module` maps (input_ids, attention_mask[,
    token_type_ids]) or (pixel_values,), in that order (`input_names`), positionally, to logits;
    `inputs` and `logits` run it on numpy arrays, as onnxruntime does."""

    def __init__(self, module, tokenizer, labels: list[str], max_length: int, input_names: tuple, family: str,
                 config=None, image_spec=None):
        self.module, self.tokenizer, self.labels = module, tokenizer, labels
        self.max_length, self.input_names, self.family = max_length, input_names, family
        self.config = config  # the transformers config, for the graph optimiser's head count
        self.image_spec = image_spec  # core._images.ImageSpec of an image model, else None

    @property
    def modality(self) -> str:
        return "image" if self.image_spec is not None else "text"

    def inputs(self, texts, pairs=None, *, length: int | None = None) -> dict:
        """numpy inputs for `texts`: padded to the longest row, or to exactly `length` tokens; for
        an image model, `texts` are image paths and the inputs their normalised pixels."""
        if self.image_spec is not None:
            return {"pixel_values": self.image_spec.pixel_values(texts)}
        enc = self.tokenizer(list(texts), list(pairs) if pairs else None, truncation=True,
                             max_length=length or self.max_length,
                             padding="max_length" if length else "longest", return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in self.input_names}

    def logits(self, feeds: dict) -> np.ndarray:
        inputs = [torch.from_numpy(feeds[k]) for k in self.input_names]
        if self.modality == "image":  # the model's own layout (NHWC, as the backbone keeps it)
            inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
        with torch.inference_mode():
            return self.module(*inputs).float().numpy()


def load_export_source(path: str | Path) -> ExportSource:
    """A saved classifier: RUN/best_model (finetune-advisor) or a transformers
    *ForSequenceClassification folder.

    Raises:
        InputError: the folder is missing or holds no classification model.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"'{path}' holds no model (no config.json). Give RUN (with best_model/, made by "
                         "finetune-advisor search) or a Hugging Face sequence-classification folder.")
    if (path / "head.safetensors").is_file():
        return export_source_of(load_classifier(path, device="cpu"))
    config = read_json(path / "config.json")
    heads = [a for a in config.get("architectures") or [] if a.endswith("ForSequenceClassification")]
    if not heads:
        raise InputError(f"'{path}' is not a classification model: it has no head.safetensors (finetune-advisor) "
                         f"and its architectures ({', '.join(config.get('architectures') or ['none'])}) name no "
                         "*ForSequenceClassification. Export a model trained by finetune-advisor search.")
    model, tokenizer = load_sequence_classifier(path)

    accepted = inspect.signature(model.forward).parameters
    names = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    max_length = min(max_positions(model.config, tokenizer), 512)
    return ExportSource(_Logits(model).eval(), tokenizer, labels, max_length, names, model.config.model_type,
                        model.config)


def export_source_of(model) -> ExportSource:
    """A finetune-advisor Classifier (on the CPU, in eval mode) as the exporter takes it; an image
    model's opened squeeze-excite gates are folded out first (`fold_open_gates`)."""
    if model.modality == "image":
        fold_open_gates(model.encoder)
        return ExportSource(_PixelLogits(model).eval(), None, model.labels, model.max_length, ("pixel_values",),
                            model.arch.family, model.encoder.config, model.image_spec)
    model.encoder.config._attn_implementation = "sdpa"
    names = ("input_ids", "attention_mask") + (("token_type_ids",) if "token_type_ids" in model.input_names else ())
    return ExportSource(model, model.tokenizer, model.labels, model.max_length, names, model.arch.family,
                        model.encoder.config)


def fold_open_gates(module) -> int:
    """Replace every squeeze-excite layer whose gate is open (its input passes unchanged) by the
    identity; returns how many. A gate is open when its reduce and expand weights are all zero and
    sigmoid(expand bias) is exactly 1.0 in float32: the output is then x * 1 for any x, so the fold
    is exact. EfficientNet-Lite has no squeeze-excite; demo:efficientnet-lite0 keeps transformers'
    layers opened this way (core._demos), and training cannot move them (the sigmoid's gradient
    there is 0 in float32). Folded, they cost no time, and static int8 does not quantise their
    constant-one gates (a zero-weight conv whose bias 30 overflows int8 bias scales).
    """
    import torch

    folded = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            reduce, expand = getattr(child, "reduce", None), getattr(child, "expand", None)
            if not ("SqueezeExcite" in type(child).__name__ and isinstance(reduce, torch.nn.Conv2d)
                    and isinstance(expand, torch.nn.Conv2d) and expand.bias is not None):
                continue
            with torch.no_grad():
                opened = (not reduce.weight.any() and not expand.weight.any()
                          and bool((torch.sigmoid(expand.bias.float()) == 1.0).all()))
            if opened:
                setattr(parent, name, torch.nn.Identity())
                folded += 1
    return folded


class _PixelLogits(torch.nn.Module):
    """An image classifier with its one input, pixel_values, positional."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, pixel_values):
        return self.inner(pixel_values=pixel_values)


class _Logits(torch.nn.Module):
    """A *ForSequenceClassification model with positional inputs and a tensor (not a dict) out."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
