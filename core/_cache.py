"""Cached frozen-layer features: the output of the frozen part of a backbone, computed once.

A key is (model fingerprint, split fingerprint, start block, max length, pooling). Features live
in memory and, with a directory, on disk (one file per key, written atomically, so several
worker processes can share the folder and a resumed search skips the work).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from ._backbone import Backbone, Encoded, pool


def default_cache_dir() -> Path:
    """$FINETUNE_ADVISOR_CACHE, else ~/.cache/finetune-advisor."""
    return Path(os.environ.get("FINETUNE_ADVISOR_CACHE", "~/.cache/finetune-advisor")).expanduser()


class FeatureCache:
    """Features of the frozen part of a backbone, per split and start block.

    Args:
        directory: folder for the disk cache; None keeps features in memory only.
        max_bytes: the most feature bytes held in memory; beyond it the least recently used
            entries are dropped (read again from disk, or computed again, when next asked for).
            The entry just added is always kept. None = no limit.
    """

    def __init__(self, directory: str | Path | None = None, *, max_bytes: int | None = None):
        self.directory = Path(directory).expanduser() if directory else None
        self.max_bytes = max_bytes
        self._memory: dict[str, object] = {}
        self._sizes: dict[str, int] = {}  # feature entries, least recently used first
        self.hits = 0
        self.misses = 0

    @property
    def bytes_held(self) -> int:
        """Bytes of features held in memory now."""
        return sum(self._sizes.values())

    def clear(self) -> None:
        """Forget what is held in memory (the disk cache stays)."""
        self._memory.clear()
        self._sizes.clear()

    def encoded(self, backbone: Backbone, split, max_length: int) -> Encoded:
        """The split tokenized for this backbone (kept, since every run needs it)."""
        key = f"enc-{backbone.fingerprint}-{split.fingerprint}-{max_length}"
        if key not in self._memory:
            self._memory[key] = backbone.tokenize(split.texts, split.pairs, max_length=max_length)
        return self._memory[key]

    def features(self, backbone: Backbone, split, *, start: int, max_length: int, progress: bool = True):
        """What enters block `start`: a list of [tokens, hidden] float32 tensors, one per example;
        for start = number of blocks, the pooled output as one [n, hidden] tensor."""
        key = f"{backbone.fingerprint}-{split.fingerprint}-s{start}-t{max_length}-{backbone.pooling}"
        if key in self._memory:
            self.hits += 1
            self._sizes[key] = self._sizes.pop(key)  # most recently used
            return self._memory[key]
        file = self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt" if self.directory else None
        if file is not None and file.exists():
            value = torch.load(file, weights_only=True)
            self.hits += 1
        else:
            self.misses += 1
            value = compute_features(backbone, self.encoded(backbone, split, max_length), start, progress=progress)
            if file is not None:
                _save_atomic(value, file)
        self._memory[key] = value
        self._sizes[key] = _nbytes(value)
        self._evict(keep=key)
        return value

    def _evict(self, keep: str) -> None:
        while self.max_bytes is not None and self.bytes_held > self.max_bytes and len(self._sizes) > 1:
            oldest = next(k for k in self._sizes if k != keep)
            del self._sizes[oldest], self._memory[oldest]


def _nbytes(value) -> int:
    tensors = value if isinstance(value, list) else [value]
    return sum(t.numel() * t.element_size() for t in tensors)


class _Stop(Exception):
    """Raised inside the forward pass once the wanted hidden states are captured."""


def compute_features(backbone: Backbone, encoded: Encoded, start: int, *, progress: bool = True,
                     batch_size: int = 64):
    """Run the frozen model over `encoded` and keep what enters block `start` (see FeatureCache)."""
    from tqdm.auto import tqdm

    blocks = backbone.arch.block_list(backbone.model)
    pooled = start == len(blocks)
    rows: list = [None] * len(encoded)
    captured = {}

    def capture(module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop  # the blocks above are not needed

    handle = None if pooled else blocks[start].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():  # not inference_mode: these tensors feed autograd later
            for idx in tqdm(encoded.sorted_batches(batch_size), desc=f"caching inputs of block {start}",
                            unit="batch", disable=not progress, leave=False):
                batch = encoded.batch(idx, backbone.device)
                try:
                    out = backbone.model(**batch)
                    h = pool(out.last_hidden_state, batch["attention_mask"], backbone.pooling)
                except _Stop:
                    h = captured.pop("h")
                lengths = batch["attention_mask"].sum(1).tolist()
                for row, i in enumerate(idx):
                    rows[i] = (h[row] if pooled else h[row, :lengths[row]]).float().cpu().clone()
    finally:
        if handle is not None:
            handle.remove()
    return torch.stack(rows) if pooled else rows


def _save_atomic(value, file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(value, tmp)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
