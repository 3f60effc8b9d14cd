"""Cached frozen-layer features: the output of the frozen part of a backbone, computed once.

A key is (model fingerprint, split fingerprint, start block, max length, pooling); the model
fingerprint covers the weight and tokenizer files themselves (size, modification time and a hash
of their first and last MiB), so features of changed weights are never served. Features live in
memory and, with a directory, on disk (one file per key, written atomically, so several worker
processes can share the folder and a resumed search skips the work). Pooled features (what a head
reads) are kept on disk per row instead, keyed by the row's inputs: the advisor stores those of
its sample (`store_pooled`), and the search's closed-form head then embeds only the rows the
advisor did not. The disk cache is bounded
(least recently used files removed first); a file that cannot be read, or holds features of
another shape, is reported, dropped and computed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import torch

from ._backbone import Backbone, Encoded, pool_output
from ._errors import first_line
from ._files import default_cache_dir  # noqa: F401  (re-exported)

DISK_GB = 10.0  # default bound of the disk cache, in GiB


class FeatureCache:
    """Features of the frozen part of a backbone, per split and start block.

    Args:
        directory: folder for the disk cache; None keeps features in memory only.
        pooled_dir: folder where pooled features are kept per row (default: `directory`), so that
            different samples of one data set share them; None with no directory: memory only.
        max_bytes: the most feature bytes held in memory; beyond it the least recently used
            entries are dropped (read again from disk, or computed again, when next asked for).
            The entry just added is always kept. None = no limit.
        disk_max_bytes: the most bytes of feature files kept in `directory`; beyond it the least
            recently used files are removed (the one just written is kept). None = no limit.
        log: where notes on dropped cache files go (default: standard error).
    """

    def __init__(self, directory: str | Path | None = None, *, pooled_dir: str | Path | None = None,
                 max_bytes: int | None = None, disk_max_bytes: int | None = int(DISK_GB * 2**30), log=None):
        self.directory = Path(directory).expanduser() if directory else None
        self.pooled_dir = Path(pooled_dir).expanduser() if pooled_dir else self.directory
        self.max_bytes = max_bytes
        self.disk_max_bytes = disk_max_bytes
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self._memory: dict[str, object] = {}
        self._sizes: dict[str, int] = {}  # feature entries, least recently used first
        self.hits = 0
        self.misses = 0
        self.rows_reused = 0  # pooled rows read from files of pooled rows
        self.rows_computed = 0  # pooled rows computed because no file held them

    @property
    def bytes_held(self) -> int:
        """Bytes of features held in memory now."""
        return sum(self._sizes.values())

    def clear(self) -> None:
        """Forget what is held in memory (the disk cache stays)."""
        self._memory.clear()
        self._sizes.clear()

    def encoded(self, backbone: Backbone, split, max_length: int) -> Encoded:
        """The split tokenized (or its images resized) for this backbone (kept, since every run needs it)."""
        key = f"enc-{backbone.fingerprint}-{split.fingerprint}-{max_length}"
        if key not in self._memory:
            self._memory[key] = backbone.tokenize(split.texts, split.pairs, max_length=max_length)
        return self._memory[key]

    def features(self, backbone: Backbone, split, *, start: int, max_length: int, progress: bool = True):
        """What enters block `start`: a list of [tokens, hidden] (or, in a CNN, [channels, h, w])
        float32 tensors, one per example; for start = number of blocks, the pooled output as one
        [n, hidden] tensor."""
        key = f"{backbone.fingerprint}-{split.fingerprint}-s{start}-t{max_length}-{backbone.pooling}"
        if key in self._memory:
            self.hits += 1
            self._sizes[key] = self._sizes.pop(key)  # most recently used
            return self._memory[key]
        encoded = self.encoded(backbone, split, max_length)
        if start == backbone.num_blocks and self.pooled_dir is not None:
            value = self._pooled_rows(backbone, split, encoded, max_length, progress)
        else:
            file = self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt" if self.directory else None
            value = self._read(file, encoded, backbone) if file is not None and file.exists() else None
            if value is not None:
                self.hits += 1
            else:
                self.misses += 1
                value = compute_features(backbone, encoded, start, progress=progress)
                if file is not None:
                    self._write(value, file)
        self._memory[key] = value
        self._sizes[key] = _nbytes(value)
        self._evict(keep=key)
        return value

    def store_pooled(self, backbone: Backbone, split, features, *, max_length: int) -> None:
        """Keep pooled features computed elsewhere (the advisor's embedding pass: [n, hidden], the
        backbone's pooling, rows in the split's order) for later `features(start=num_blocks)` calls."""
        if self.pooled_dir is None:
            return
        value = torch.as_tensor(features, dtype=torch.float32)
        if tuple(value.shape) != (len(split), backbone.hidden_size):  # never served: a later pass computes them
            self.log(f"warning: pooled features of shape {tuple(value.shape)} do not fit {len(split)} rows of width "
                     f"{backbone.hidden_size}; not cached")
            return
        self._write({"rows": split.row_keys(), "features": value.contiguous()},
                    self._pooled_file(backbone, split, max_length, split.fingerprint))

    def _pooled_file(self, backbone: Backbone, split, max_length: int, name: str) -> Path:
        """pooled-<model, length, pooling>-<data set>-<name>.pt: one file per embedding pass (an
        image model's inputs have no length)."""
        length = min(max_length, backbone.max_positions) if backbone.modality == "text" else "-"
        model = hashlib.sha256(f"{backbone.fingerprint}-t{length}-{backbone.pooling}".encode()).hexdigest()[:16]
        return self.pooled_dir / f"pooled-{model}-{split.origin or split.fingerprint}-{name}.pt"

    def _pooled_rows(self, backbone: Backbone, split, encoded, max_length: int, progress: bool):
        """The split's pooled features [n, hidden]: rows found in this data set's files of pooled
        rows, the others computed (and written as one more file)."""
        keys = split.row_keys()
        wanted = set(keys)
        found: dict[str, torch.Tensor] = {}
        pattern = self._pooled_file(backbone, split, max_length, "*")
        for file in sorted(pattern.parent.glob(pattern.name)):
            for key, row in self._read_rows(file, backbone.hidden_size):
                if key in wanted:
                    found[key] = row
        missing = [i for i, key in enumerate(keys) if key not in found]
        self.rows_reused += len(keys) - len(missing)
        self.rows_computed += len(missing)
        if missing:
            self.misses += 1
            computed = compute_features(backbone, encoded, backbone.num_blocks, progress=progress, rows=missing)
            found.update(zip((keys[i] for i in missing), computed))
            part = hashlib.sha256("".join(keys[i] for i in missing).encode()).hexdigest()[:16]
            self._write({"rows": [keys[i] for i in missing], "features": computed},
                        self._pooled_file(backbone, split, max_length, part))
        else:
            self.hits += 1
        return torch.stack([found[key] for key in keys])

    def _read_rows(self, file: Path, hidden: int) -> list:
        """(row key, features) pairs of a file of pooled rows; [] when it cannot be used (see _load)."""

        def problem(value) -> str:
            rows, feats = value.get("rows"), value.get("features")
            ok = (isinstance(rows, list) and all(isinstance(r, str) for r in rows) and isinstance(feats, torch.Tensor)
                  and tuple(feats.shape) == (len(rows), hidden) and feats.dtype == torch.float32)
            return "" if ok else f"expected row keys and a float32 [rows, {hidden}] tensor"

        value = self._load(file, problem)
        return [] if value is None else list(zip(value["rows"], value["features"]))

    def _read(self, file: Path, encoded: Encoded, backbone: Backbone):
        """Features entering a block from a cache file, or None when it cannot be used (see _load)."""
        lengths = encoded.lengths if backbone.modality == "text" else None
        return self._load(file, lambda value: _shape_problem(value, lengths, backbone.hidden_size, rows=len(encoded)))

    def _load(self, file: Path, problem_of):
        """The value in a cache file, or None (the file removed, with a note) when it cannot be read
        or `problem_of(value)` names what is wrong with it. Never raises: a bad file costs a
        recomputation; one removed by another process's disk bound since it was listed, too."""
        try:
            value = torch.load(file, weights_only=True)
            problem = problem_of(value)
        except FileNotFoundError:
            return None
        except Exception as e:
            problem = f"{type(e).__name__}: {first_line(e)}"
        if problem:
            self.log(f"warning: cached features '{file}' cannot be used ({problem[:200]}); "
                     "removed, computing them again")
            file.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(file)  # most recently used, for the disk bound
        return value

    def _write(self, value, file: Path) -> None:
        try:
            _save_atomic(value, file)
        except OSError as e:  # a full disk or a read-only folder: the features are still in memory
            self.log(f"warning: cannot write the feature cache '{file}' ({e.strerror or e}); going on without it")
            return
        self._trim_disk(file.parent, keep=file)

    def _trim_disk(self, folder: Path, keep: Path) -> None:
        """Remove the least recently used feature files until the folder is under disk_max_bytes."""
        if self.disk_max_bytes is None:
            return
        files = []
        for f in folder.glob("*.pt"):
            with contextlib.suppress(OSError):
                st = f.stat()
                files.append((st.st_mtime, st.st_size, f))
        total = sum(size for _, size, _ in files)
        for _, size, f in sorted(files):
            if total <= self.disk_max_bytes:
                break
            if f != keep:
                f.unlink(missing_ok=True)
                total -= size

    def _evict(self, keep: str) -> None:
        while self.max_bytes is not None and self.bytes_held > self.max_bytes and len(self._sizes) > 1:
            oldest = next(k for k in self._sizes if k != keep)
            del self._sizes[oldest], self._memory[oldest]


def _shape_problem(value, lengths, hidden: int, *, rows: int) -> str:
    """'' when `value` is what compute_features makes for `rows` rows entering a block, of these
    token lengths (None: images, whose rows all have one shape), else why not."""
    if not isinstance(value, list) or len(value) != rows:
        return f"expected a list of {rows} tensors"
    if lengths is None:
        shapes = {tuple(r.shape) if isinstance(r, torch.Tensor) else None for r in value}
        ok = len(shapes) == 1 and None not in shapes and all(r.dtype == torch.float32 for r in value)
        return "" if ok else "the rows are not float32 tensors of one shape"
    for row, n in zip(value, lengths):
        if not isinstance(row, torch.Tensor) or tuple(row.shape) != (int(n), hidden) or row.dtype != torch.float32:
            return f"a row is not a float32 [{int(n)}, {hidden}] tensor"
    return ""


def _nbytes(value) -> int:
    tensors = value if isinstance(value, list) else [value]
    return sum(t.numel() * t.element_size() for t in tensors)


class _Stop(Exception):
    """Raised inside the forward pass once the wanted hidden states are captured."""


def compute_features(backbone: Backbone, encoded: Encoded, start: int, *, progress: bool = True,
                     batch_size: int = 64, rows=None):
    """Run the frozen model over `encoded` (the indices `rows` of it, default all, in that order)
    and keep what enters block `start` (see FeatureCache)."""
    from tqdm.auto import tqdm

    blocks = backbone.arch.block_list(backbone.model)
    pooled = start == len(blocks)
    wanted = list(range(len(encoded))) if rows is None else [int(i) for i in rows]
    kept_rows: dict[int, torch.Tensor] = {}
    captured = {}

    def capture(module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop  # the blocks above are not needed

    handle = None if pooled else blocks[start].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():  # not inference_mode: these tensors feed autograd later
            for idx in tqdm(encoded.sorted_batches(batch_size, wanted), desc=f"caching inputs of block {start}",
                            unit="batch", disable=not progress, leave=False):
                batch = encoded.batch(idx, backbone.device)
                mask = batch.get("attention_mask")
                try:
                    out = backbone.model(**batch)
                    h = pool_output(out, mask, backbone.pooling)
                except _Stop:
                    h = captured.pop("h")
                lengths = mask.sum(1).tolist() if mask is not None else None
                for row, i in enumerate(idx):
                    kept = h[row] if pooled or lengths is None else h[row, :lengths[row]]
                    kept_rows[int(i)] = kept.float().cpu().clone()
    finally:
        if handle is not None:
            handle.remove()
    rows = [kept_rows[i] for i in wanted]
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
