"""Logits of a model's own head, read as zero-shot: a sequence classifier (its labels or NLI),
an image classifier, an image-text model (CLIP, SigLIP) against label prompts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._backbone import Pixels
from ._hub import _load_error, load_sequence_classifier
from ._quiet import quiet_transformers


@dataclass
class ClassifierLogits:
    """What `sequence_classifier_logits` and `image_classifier_logits` return: the logits and the
    model's label names."""

    logits: np.ndarray
    id2label: dict


def sequence_classifier_logits(source: str, texts: list[str], pairs: list[str] | None = None, *, device="cpu",
                               max_length: int = 128, batch_size: int = 32,
                               truncation: bool | str = True) -> ClassifierLogits:
    """Logits [n, num_labels] of a transformers *ForSequenceClassification model on raw texts (or
    text pairs), in inference mode, with the model's label names."""
    import torch

    model, tokenizer = load_sequence_classifier(source)
    model = model.to(device)
    out = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            batch = tokenizer(texts[s:s + batch_size], pairs[s:s + batch_size] if pairs else None,
                              truncation=truncation, max_length=max_length, padding=True, return_tensors="pt")
            out[s:s + batch_size] = model(**batch.to(device)).logits.float().cpu().numpy()
    return ClassifierLogits(out, dict(model.config.id2label or {}))


def image_classifier_logits(source: str, spec, paths: list[str], *, device="cpu", batch_size: int = 32,
                            trust_remote_code: bool = False) -> ClassifierLogits:
    """Logits [n, num_labels] of a transformers *ForImageClassification model (e.g. an ImageNet head)
    on image files, prepared by `spec` (core._images.ImageSpec), in inference mode, with its label
    names.

    Raises:
        InputError: the model cannot be loaded (or needs its own code).
    """
    import torch
    from transformers import AutoModelForImageClassification

    try:
        with quiet_transformers():
            model = AutoModelForImageClassification.from_pretrained(
                source, dtype=torch.float32, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise _load_error(f"the model '{source}'", e) from None
    model = model.eval().to(device, memory_format=torch.channels_last)
    pixels = Pixels.load(paths, spec)
    out = np.empty((len(paths), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for idx in pixels.sorted_batches(batch_size):
            out[idx] = model(**pixels.batch(idx, device)).logits.float().cpu().numpy()
    return ClassifierLogits(out, dict(model.config.id2label or {}))


def image_text_logits(source: str, spec, paths: list[str], prompts: list[str], *, device="cpu",
                      batch_size: int = 32) -> np.ndarray:
    """Similarities [n images, n prompts] of an image-text dual encoder (CLIP, SigLIP):
    cos(image embedding, prompt embedding), both projected into the shared space; the images
    prepared by `spec` (core._images.ImageSpec), the prompts tokenized as the model was trained
    (SigLIP: padded to 64 tokens, as transformers' zero-shot-image-classification pipeline does).

    Raises:
        InputError: the model or its tokenizer cannot be loaded.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        with quiet_transformers():
            model = AutoModel.from_pretrained(source, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise _load_error(f"the model '{source}'", e) from None
    model = model.eval().to(device)
    padding = {"padding": "max_length", "max_length": 64} if "siglip" in model.config.model_type else {"padding": True}
    text = tokenizer(prompts, truncation=True, return_tensors="pt", **padding).to(device)
    pixels = Pixels.load(paths, spec)
    out = np.empty((len(paths), len(prompts)), dtype=np.float32)
    with torch.inference_mode():
        labels = torch.nn.functional.normalize(model.get_text_features(**text).pooler_output.float(), dim=-1)
        for idx in pixels.sorted_batches(batch_size):
            images = model.get_image_features(**pixels.batch(idx, device)).pooler_output.float()
            out[idx] = (torch.nn.functional.normalize(images, dim=-1) @ labels.T).cpu().numpy()
    return out
