"""Per-architecture facts, in one table: where the blocks live (transformer layers, or the stages
of a CNN), the default pooling, text or image, and whether the model can be run from a cached
middle layer.

Running from a middle layer (the cached-frozen-layers trick of the training loop) works by
truncating the block list to its top k and feeding the cached hidden states into the first kept
block; the model's own forward still builds the attention mask and any position bias. Two cases
cannot be cut that way, and the table says so:
- DeBERTa-v2 with a convolution layer (`conv_kernel_size > 0`) applies it after block 0 only;
- ALBERT shares its blocks between layers (`num_hidden_groups`, usually 1), so its unit of
  freezing is a layer group, and a group is used at many depths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ArchSpec:
    """Facts about one architecture family.

    Attributes:
        family: display name.
        model_types: the `config.model_type` values it covers.
        blocks: dotted attribute path, from the base model, to the nn.ModuleList of blocks.
        pooling: default pooling of its classification head: "cls" (first token), "mean", or
            "pooler" (the base model's own pooled output: global average pooling of a CNN).
        cache_inner: whether the model can be run from a cached hidden state entering block i,
            0 < i < number of blocks (see the module docstring); a callable takes the model.
        modality: "text" (a tokenizer) or "image" (an image processor, `pixel_values`).
        uniform: whether every block's output has the same width (transformers), so per-layer
            features can be averaged; a CNN's or Swin's stages widen as they go.
        shallower: how the model's config says "the first d blocks only" (`keep_depth`), so that a
            model cut to its first d blocks saves and reloads as such; None where the head cannot
            read the output of a middle block (a final layer sized for the last stage, shared
            blocks).
    """

    family: str
    model_types: tuple[str, ...]
    blocks: str
    pooling: str = "cls"
    cache_inner: bool | Callable = True
    modality: str = "text"
    uniform: bool = True
    shallower: Callable | None = None

    def block_list(self, model):
        """The nn.ModuleList of transformer blocks of `model` (a base model from AutoModel)."""
        obj = model
        for part in self.blocks.split("."):
            obj = getattr(obj, part)
        return obj

    def set_block_list(self, model, blocks) -> None:
        parent_path, _, name = self.blocks.rpartition(".")
        parent = model
        for part in parent_path.split(".") if parent_path else ():
            parent = getattr(parent, part)
        setattr(parent, name, blocks)

    def keep_depth(self, config, depth: int) -> None:
        """Set `config` (a copy) to describe the first `depth` blocks of the model."""
        self.shallower(config, depth)

    def can_cache_inner(self, model) -> bool:
        return self.cache_inner(model) if callable(self.cache_inner) else self.cache_inner


def _layers(config, depth: int) -> None:
    config.num_hidden_layers = depth  # DistilBERT maps it to n_layers


def _stages(config, depth: int) -> None:
    """A ResNet's first `depth` stages; the pooler averages whatever the last one gives."""
    config.depths, config.hidden_sizes = list(config.depths[:depth]), list(config.hidden_sizes[:depth])
    config.stage_names = config.stage_names[:depth + 1]
    config._out_features, config._out_indices = [config.stage_names[-1]], [depth]


ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec("BERT", ("bert",), "encoder.layer", shallower=_layers),
    ArchSpec("RoBERTa", ("roberta",), "encoder.layer", shallower=_layers),
    ArchSpec("XLM-RoBERTa", ("xlm-roberta",), "encoder.layer", shallower=_layers),
    ArchSpec("DistilBERT", ("distilbert",), "transformer.layer", shallower=_layers),
    ArchSpec("ELECTRA", ("electra",), "encoder.layer", shallower=_layers),
    ArchSpec("DeBERTa-v2/v3", ("deberta-v2",), "encoder.layer",
             cache_inner=lambda model: getattr(model.encoder, "conv", None) is None, shallower=_layers),
    ArchSpec("MPNet", ("mpnet",), "encoder.layer", shallower=_layers),
    ArchSpec("ALBERT", ("albert",), "encoder.albert_layer_groups", cache_inner=False),
    # image models: a ResNet or ConvNeXt block is a stage (a group of residual blocks at one resolution)
    ArchSpec("ResNet", ("resnet",), "encoder.stages", pooling="pooler", modality="image", uniform=False,
             shallower=_stages),
    ArchSpec("ConvNeXt", ("convnext",), "encoder.stages", pooling="pooler", modality="image", uniform=False),
    ArchSpec("ViT", ("vit",), "layers", pooling="cls", modality="image", shallower=_layers),
    # EfficientNet: a block is one MBConv block (16 in B0 and Lite0)
    ArchSpec("EfficientNet", ("efficientnet",), "encoder.blocks", pooling="pooler", modality="image", uniform=False),
    ArchSpec("DINOv2", ("dinov2",), "encoder.layer", pooling="cls", modality="image", shallower=_layers),
    # Swin: a block is a stage; each stage is told its input's height and width by the encoder's
    # loop, which starts from the embeddings' size, so a stage above the first cannot be fed a
    # cached input (k = 0 and k = L are cached as for any model; 0 < k < L trains uncached)
    ArchSpec("Swin", ("swin",), "encoder.layers", pooling="pooler", cache_inner=False, modality="image", uniform=False),
    # image-text dual encoders: the image tower is the backbone (its pooled output, before the
    # projection into the shared space); the text tower serves the zero-shot only
    ArchSpec("CLIP", ("clip", "clip_vision_model"), "encoder.layers", pooling="pooler", modality="image",
             shallower=_layers),
    ArchSpec("SigLIP", ("siglip", "siglip_vision_model"), "encoder.layers", pooling="pooler", modality="image",
             shallower=_layers),
)

_BY_TYPE = {t: spec for spec in ARCHITECTURES for t in spec.model_types}


def arch_for(model_type: str) -> ArchSpec:
    """The ArchSpec of a `config.model_type`.

    Raises:
        InputError: the architecture is not in the table; the message lists the known ones.
    """
    from ._errors import InputError

    try:
        return _BY_TYPE[model_type]
    except KeyError:
        known = ", ".join(f"{s.family} ({'/'.join(s.model_types)})" for s in ARCHITECTURES)
        raise InputError(f"Model architecture '{model_type}' is not supported yet. "
                         f"Supported: {known}. Pick a model of one of these families.") from None
