"""Helpers the tests share (the fixtures are in conftest.py): tiny models of every family, small
datasets, and the command line in a fresh process. Imported one way everywhere: `from helpers import …`."""

from __future__ import annotations

import csv
import os
from pathlib import Path

# Tiny models of each family in the architecture table: 3 blocks, hidden size 32.
_COMMON = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
               intermediate_size=37, max_position_embeddings=160, pad_token_id=0)
TINY_CONFIGS = {
    "bert": ("BertConfig", _COMMON),
    "roberta": ("RobertaConfig", _COMMON),
    "xlm-roberta": ("XLMRobertaConfig", _COMMON),
    "distilbert": ("DistilBertConfig", dict(vocab_size=30522, dim=32, n_layers=3, n_heads=2, hidden_dim=37,
                                            max_position_embeddings=160, pad_token_id=0)),
    "electra": ("ElectraConfig", dict(_COMMON, embedding_size=16)),
    "deberta-v2": ("DebertaV2Config", dict(_COMMON, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                           position_buckets=16, max_relative_positions=-1)),
    "mpnet": ("MPNetConfig", _COMMON),
    "albert": ("AlbertConfig", dict(_COMMON, embedding_size=16, num_hidden_groups=1)),
}



def make_tiny_model(folder: Path, family: str, tokenizer_source: str, **overrides) -> Path:
    """Save a randomly initialised tiny model of `family` with the MiniLM tokenizer into `folder`."""
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    class_name, kwargs = TINY_CONFIGS[family]
    torch.manual_seed(0)
    config = getattr(transformers, class_name)(**{**kwargs, **overrides})
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(folder)
    return folder


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


TOPICS = {
    "sport": ["the striker scored a late goal", "the team won the match", "a tennis final in the rain",
              "the coach praised his players", "the league title race tightens", "a record in the sprint"],
    "money": ["shares fell on the stock market", "the bank raised interest rates", "profits rose this quarter",
              "the company cut its forecast", "inflation slowed last month", "investors sold their bonds"],
    "tech": ["a new phone with a faster chip", "the software update fixes bugs", "a startup builds robots",
             "the laptop battery lasts longer", "an app for private messages", "cloud servers went down"],
}


def topic_rows(copies: int = 2) -> list[dict]:
    """A small separable 3-class dataset: 6 sentences per topic, `copies` variants of each."""
    rows = []
    for label, sentences in TOPICS.items():
        for i in range(copies):
            rows += [{"text": f"{s} {'today' if i % 2 else 'again'} {i}", "label": label} for s in sentences]
    return rows


def run_cli(*args, timeout=900):
    """`finetune-advisor ARGS` in a fresh process, offline, from the project root."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "finetune_advisor", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).parent.parent)


# Tiny image models of each image family in the architecture table: 3 blocks, 32x32 inputs.
TINY_IMAGE_CONFIGS = {
    "resnet": ("ResNetConfig", dict(embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1], layer_type="basic"),
               {"shortest_edge": 32}),
    "convnext": ("ConvNextConfig", dict(hidden_sizes=[8, 16, 16], depths=[1, 1, 1], num_stages=3),
                 {"shortest_edge": 32}),
    # a CNN with BatchNorm in TensorFlow's momentum convention (batch_norm_momentum=0.99), as Hugging Face's is
    "efficientnet": ("EfficientNetConfig", dict(image_size=32, width_coefficient=0.25, depth_coefficient=1.0,
                                                in_channels=[32, 16], out_channels=[16, 24], kernel_sizes=[3, 3],
                                                strides=[1, 2], num_block_repeats=[1, 2], expand_ratios=[1, 2],
                                                hidden_dim=320, num_hidden_layers=12), {"height": 32, "width": 32}),
    "vit": ("ViTConfig", dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                              image_size=32, patch_size=8), {"height": 32, "width": 32}),
    "dinov2": ("Dinov2Config", dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2,
                                    image_size=32, patch_size=8), {"height": 32, "width": 32}),
    "swin": ("SwinConfig", dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 2, 2],
                                window_size=2), {"height": 32, "width": 32}),
    # image-text dual encoders; the text tower reads the demo MiniLM's WordPiece vocabulary
    "clip": ("CLIPConfig", dict(
        vision_config=dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, pad_token_id=0, bos_token_id=101,
                         eos_token_id=102),
        projection_dim=8), {"shortest_edge": 32}),
    "siglip": ("SiglipConfig", dict(
        vision_config=dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, pad_token_id=0)), {"height": 32, "width": 32}),
}


def make_tiny_image_model(folder: Path, family: str, *, head_labels: list[str] | None = None) -> Path:
    """Save a randomly initialised tiny image model of `family` and its image processor (the Pillow
    one transformers ships) into `folder`; with `head_labels`, an *ForImageClassification model
    whose id2label names them."""
    import torch
    import transformers
    from transformers import AutoModel, AutoModelForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    class_name, kwargs, size = TINY_IMAGE_CONFIGS[family]
    torch.manual_seed(0)
    if head_labels:
        kwargs = dict(kwargs, id2label=dict(enumerate(head_labels)), label2id={x: i for i, x in enumerate(head_labels)})
    config = getattr(transformers, class_name)(**kwargs)
    (AutoModelForImageClassification if head_labels else AutoModel).from_config(config).save_pretrained(folder)
    if family == "clip":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        processor = CLIPImageProcessorPil(size=size, crop_size={"height": 32, "width": 32})
    else:
        processor = ConvNextImageProcessorPil(size=size) if "shortest_edge" in size else ViTImageProcessorPil(size=size)
    processor.save_pretrained(folder)
    if family in ("clip", "siglip"):
        from transformers import AutoTokenizer

        from finetune_advisor.core import resolve_model_source

        AutoTokenizer.from_pretrained(resolve_model_source("demo:minilm")).save_pretrained(folder)
    return folder


SHAPES = ("circle", "square", "stripes")


def write_shape_images(root: Path, per_class: int = 20, size: int = 20, *, mode: str = "RGB") -> Path:
    """An image folder root/<shape>/<i>.png of three separable classes drawn on noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for name in SHAPES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            if name == "circle":
                a[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] = 220
            elif name == "square":
                a[size // 4:3 * size // 4, size // 4:3 * size // 4] = 220
            else:
                a[::3] = 220
            Image.fromarray(a).convert(mode).save(root / name / f"{i}.png")
    return root
