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
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).parent.parent)
