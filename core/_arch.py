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
        shallower: cuts a copy of the model to its first d blocks (`keep_depth`): its config says
            d, so it saves and reloads as such, and a final layer sized for the last block (a
            ConvNeXt's or Swin's norm, an EfficientNet's top conv) is replaced by one that passes
            block d's output through; None where the blocks are shared (ALBERT).
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

    def keep_depth(self, model, depth: int) -> None:
        """Make `model` (a copy whose block list already holds its first `depth` blocks) and its
        config describe those blocks only."""
        self.shallower(model, depth)

    def can_cache_inner(self, model) -> bool:
        return self.cache_inner(model) if callable(self.cache_inner) else self.cache_inner


def _layers(model, depth: int) -> None:
    model.config.num_hidden_layers = depth  # DistilBERT maps it to n_layers


def _stage_names(config, depth: int) -> None:
    """A staged config's stage names and backbone outputs cut to the stem and `depth` stages."""
    config.stage_names = config.stage_names[:depth + 1]
    config._out_features, config._out_indices = [config.stage_names[-1]], [depth]


def _stages(model, depth: int) -> None:
    """A ResNet's first `depth` stages; the pooler averages whatever the last one gives."""
    config = model.config
    config.depths, config.hidden_sizes = list(config.depths[:depth]), list(config.hidden_sizes[:depth])
    _stage_names(config, depth)


def _fresh_norm(width: int, eps: float, like):
    """A LayerNorm at its initial values (scale 1, shift 0): it standardises the pooled features of
    the last kept stage, as the dropped norm did for the last stage, with nothing learnt for them."""
    import torch

    weight = next(like.parameters())
    return torch.nn.LayerNorm(width, eps=eps, device=weight.device, dtype=weight.dtype)


def _convnext_stages(model, depth: int) -> None:
    """A ConvNeXt's first `depth` stages; the final LayerNorm (sized for the last stage) is replaced
    by a fresh one of the kept stage's width."""
    _stages(model, depth)
    model.config.num_stages = depth
    model.layernorm = _fresh_norm(model.config.hidden_sizes[-1], model.config.layer_norm_eps, model.layernorm)


def _swin_stages(model, depth: int) -> None:
    """A Swin's first `depth` stages: the last kept one stops merging patches (as a last stage does),
    and the final LayerNorm is replaced by a fresh one of its width."""
    config = model.config
    config.depths, config.num_heads = list(config.depths[:depth]), list(config.num_heads[:depth])
    config.num_layers = depth
    config.hidden_size = int(config.embed_dim * 2 ** (depth - 1))
    _stage_names(config, depth)
    model.encoder.num_layers = depth
    model.encoder.layers[-1].downsample = None
    model.num_features = config.hidden_size
    model.layernorm = _fresh_norm(config.hidden_size, config.layer_norm_eps, model.layernorm)


def _efficientnet_blocks(model, depth: int) -> None:
    """An EfficientNet's first `depth` MBConv blocks. The config lists blocks per stage, so it keeps
    the stages that hold them with the last one's repeats cut (depth coefficient 1: the counts are
    exact). The top 1x1 conv (sized for the last block's channels) is replaced by one that passes
    block `depth`'s channels through, zero-padded to the model's width, and its batch norm by an
    identity: the head reads the pooled, activated output of block `depth`."""
    import math

    import torch

    config = model.config
    counts = [math.ceil(config.depth_coefficient * n) for n in config.num_block_repeats]
    kept, left = [], depth
    for count in counts:
        if left <= 0:
            break
        kept.append(min(count, left))
        left -= kept[-1]
    for name in ("in_channels", "out_channels", "strides", "kernel_sizes", "expand_ratios"):
        setattr(config, name, list(getattr(config, name)[:len(kept)]))
    config.depth_coefficient, config.num_block_repeats = 1.0, kept
    config.num_hidden_layers = sum(kept) * 4  # as EfficientNetConfig counts them
    encoder, old = model.encoder, model.encoder.top_conv
    channels = encoder.blocks[-1].projection.project_conv.out_channels
    conv = torch.nn.Conv2d(channels, old.out_channels, 1, padding="same", bias=False,
                           device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:channels, :, 0, 0] = torch.eye(channels)
    encoder.top_conv = conv
    bn = encoder.top_bn
    encoder.top_bn = torch.nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                                          device=old.weight.device, dtype=old.weight.dtype)


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
    ArchSpec("ConvNeXt", ("convnext",), "encoder.stages", pooling="pooler", modality="image", uniform=False,
             shallower=_convnext_stages),
    ArchSpec("ViT", ("vit",), "layers", pooling="cls", modality="image", shallower=_layers),
    # EfficientNet: a block is one MBConv block (16 in B0 and Lite0)
    ArchSpec("EfficientNet", ("efficientnet",), "encoder.blocks", pooling="pooler", modality="image", uniform=False,
             shallower=_efficientnet_blocks),
    ArchSpec("DINOv2", ("dinov2",), "encoder.layer", pooling="cls", modality="image", shallower=_layers),
    # Swin: a block is a stage; each stage is told its input's height and width by the encoder's
    # loop, which starts from the embeddings' size, so a stage above the first cannot be fed a
    # cached input (k = 0 and k = L are cached as for any model; 0 < k < L trains uncached)
    ArchSpec("Swin", ("swin",), "encoder.layers", pooling="pooler", cache_inner=False, modality="image", uniform=False,
             shallower=_swin_stages),
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
