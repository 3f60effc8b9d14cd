"""The backbone: loading, the architecture table on every family, pooling, embedding, freezing."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import TINY_CONFIGS
from finetune_advisor.core import ARCHITECTURES, InputError, freeze_top_k, load_backbone


def test_demo_minilm_is_a_mean_pooled_six_block_encoder(minilm):
    assert (minilm.pooling, minilm.num_blocks, minilm.hidden_size) == ("mean", 6, 384)
    assert minilm.arch.family == "BERT"


def test_embed_shape_determinism_and_independence_from_batching(minilm):
    texts = ["a short one", "a much longer sentence about the stock market and interest rates today", "tennis"]
    first = minilm.embed(texts, progress=False)
    assert first.shape == (3, 384) and first.dtype == np.float32
    np.testing.assert_array_equal(first, minilm.embed(texts, progress=False))
    # padding and length sorting must not change a row: embed each text alone
    alone = np.stack([minilm.embed([t], progress=False)[0] for t in texts])
    np.testing.assert_allclose(first, alone, atol=1e-5)


def test_embed_all_layers_ends_with_the_last_layer(minilm):
    texts = ["shares fell", "the striker scored"]
    layers = minilm.embed(texts, all_layers=True, progress=False)
    assert layers.shape == (2, 7, 384)
    np.testing.assert_allclose(layers[:, -1], minilm.embed(texts, progress=False), atol=1e-6)


def test_embedding_separates_topics(minilm):
    """Mean-pooled MiniLM features put same-topic sentences closer than different-topic ones."""
    from helpers import TOPICS

    texts = [s for sentences in TOPICS.values() for s in sentences]
    e = minilm.embed(texts, progress=False)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    topic = np.repeat(np.arange(len(TOPICS)), 6)
    same = sim[(topic[:, None] == topic[None]) & ~np.eye(len(texts), dtype=bool)].mean()
    assert same > sim[topic[:, None] != topic[None]].mean() + 0.1


@pytest.mark.parametrize("family", list(TINY_CONFIGS))
def test_layer_table_covers_every_family(tiny_model, family):
    backbone = load_backbone(str(tiny_model(family)))
    assert backbone.arch.model_types[0] == family or family in backbone.arch.model_types
    expected_blocks = 1 if family == "albert" else 3  # ALBERT freezes layer groups (1 here)
    assert backbone.num_blocks == expected_blocks and backbone.hidden_size == 32
    feats = backbone.embed(["hello there", "general kenobi"], all_layers=True, progress=False)
    assert feats.shape == (2, expected_blocks + 1, 32) and np.isfinite(feats).all()


def test_table_lists_the_required_families():
    names = {t for spec in ARCHITECTURES for t in spec.model_types}
    assert {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta-v2", "mpnet", "albert"} <= names


@pytest.mark.parametrize("k", [0, 1, 3])
def test_freeze_top_k_leaves_only_the_top_blocks_trainable(tiny_model, k):
    backbone = load_backbone(str(tiny_model("bert")))
    model = backbone.model
    frozen = freeze_top_k(model, backbone.arch, k)
    blocks = backbone.arch.block_list(model)
    for i, block in enumerate(blocks):
        assert all(p.requires_grad == (i >= 3 - k) for p in block.parameters())
    assert all(p.requires_grad == (k == 3) for p in model.embeddings.parameters())
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    model.requires_grad_(False)


def test_freeze_out_of_range(tiny_model):
    backbone = load_backbone(str(tiny_model("bert")))
    with pytest.raises(InputError, match=r"unfrozen_layers 4 is out of range: this model has 3 blocks, so use 0..3"):
        freeze_top_k(backbone.model, backbone.arch, 4)


def test_pooling_override(tiny_model):
    assert load_backbone(str(tiny_model("bert")), pooling="mean").pooling == "mean"
    with pytest.raises(InputError, match="pooling 'avg' is not one of mean, cls, max"):
        load_backbone(str(tiny_model("bert")), pooling="avg")


# ---------------------------------------------------------------- loading errors


def test_unknown_demo_model():
    with pytest.raises(InputError, match="'demo:bert' is not a bundled demo model. Demos: demo:minilm"):
        load_backbone("demo:bert")


def test_folder_without_config_or_tokenizer(tmp_path):
    with pytest.raises(InputError) as err:
        load_backbone(str(tmp_path))
    assert "has no config.json" in str(err.value) and "has no tokenizer files" in str(err.value)


def test_missing_local_folder():
    with pytest.raises(InputError, match="folder './no/such/model' does not exist"):
        load_backbone("./no/such/model")


def test_hub_id_that_cannot_be_fetched():
    with pytest.raises(InputError, match="'someone/no-such-model' could not be loaded.*local model folder"):
        load_backbone("someone/no-such-model")


def test_unknown_architecture_lists_the_known_ones(tmp_path, minilm_source):
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30522)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_source).save_pretrained(tmp_path)
    with pytest.raises(InputError, match=r"'gpt2' is not supported yet. Supported: BERT \(bert\), RoBERTa"):
        load_backbone(str(tmp_path))
