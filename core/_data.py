"""Labelled classification data, text or images: read, validate (every problem at once), split,
fingerprint.

A text dataset is a CSV, TSV, JSONL or Parquet file with a text column (optionally a second text
column for sentence pairs) and a label column, or `demo:bbc-news`. An image dataset is a folder
`DIR/<label>/<image>`, a table whose `--image-column` holds image paths (relative ones resolved
against the table's folder), or `demo:fashion-mnist`; every image is decoded once here, so a
missing, truncated or non-image file is reported before any model work. For image tasks a split's
`texts` are the images' absolute paths. Without `--valid`, the rows are split into train /
validation / test, stratified and seeded. Labels are kept as strings and numbered in sorted order
(numerically when every label is an integer).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._errors import InputError
from ._readers import _check_images, _is_image_data, _read_rows
from ._split import _allocate_groups, _duplicate_groups, stratified_indices

IMBALANCE_WARN_RATIO = 10.0
VALID_FRACTION = 0.1  # the usual share of each class split off for validation
MIN_VALID_ROWS = 200  # validation rows under which one row moves accuracy by half a point or more
MAX_VALID_FRACTION = 0.25  # the most of the data the split gives validation on its own


def valid_share(rows: int) -> float:
    """The share of each class the split gives validation when none is asked for: 10%, grown to
    MIN_VALID_ROWS rows where that takes at most 25% of the `rows` (else 25%). Two models'
    accuracies on n validation rows are told apart only when they differ by more than about
    `noise_floor(n)`, so a 10% split of 1,000 rows (100 rows, +-0.14) says less than 200 rows
    (+-0.10) at the cost of 10% of the training rows."""
    return min(MAX_VALID_FRACTION, max(VALID_FRACTION, MIN_VALID_ROWS / max(rows, 1)))


def noise_floor(rows: int, accuracy: float = 0.5) -> float:
    """The smallest difference between two models' accuracies on `rows` validation rows that is
    not noise: two standard errors of the difference of two independent binomial proportions,
    2 * sqrt(2 * p * (1 - p) / n) (the normal approximation; p = 0.5 is the widest case)."""
    return 2.0 * (2.0 * accuracy * (1.0 - accuracy) / max(rows, 1)) ** 0.5


@dataclass(frozen=True)
class DataConfig:
    """How to read and split a dataset.

    Attributes:
        text_column: column with the text; None = the first of TEXT_COLUMNS present.
        label_column: column with the label; None = the first of LABEL_COLUMNS present.
        text_pair_column: second text column for sentence-pair tasks; None = none, unless the
            file has a known pair such as sentence1/sentence2 and no text column.
        valid: a separate validation file; None = split it off the data.
        test: a separate test file; None = split it off the data when `valid` is None, else none.
        valid_fraction: share of each class that goes to validation when splitting, in (0, 0.5];
            None = `valid_share` (10%, grown to 200 rows where that takes at most 25% of the data).
        test_fraction: share of each class that goes to test when splitting, in [0, 0.5].
        max_rows: keep a stratified sample of about this many rows before splitting (None = all).
        seed: seed of the split and of the sample.
        image_column: column of a table that holds image paths (an image task); None = a text task,
            unless the data is an image folder or image demo.
        skip_bad_images: drop images that cannot be read (and say how many) instead of refusing the data.
    """

    text_column: str | None = None
    label_column: str | None = None
    text_pair_column: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float | None = None
    test_fraction: float = 0.1
    max_rows: int | None = None
    seed: int = 0
    image_column: str | None = None
    skip_bad_images: bool = False

    def __post_init__(self):
        InputError.check([
            (self.valid_fraction is None or 0 < self.valid_fraction <= 0.5,
             f"valid_fraction {self.valid_fraction} must be in (0, 0.5]; 0.1 is usual."),
            (0 <= self.test_fraction <= 0.5, f"test_fraction {self.test_fraction} must be in [0, 0.5]; 0.1 is usual."),
            (self.seed >= 0, f"--seed {self.seed} must be >= 0 (a whole number, e.g. 0)."),
            (self.max_rows is None or self.max_rows >= 4,
             f"--max-rows {self.max_rows} is too small: keep at least 4 rows, or leave it out."),
        ])


@dataclass(frozen=True)
class Split:
    """One split: texts (or, for an image task, image paths), optional paired texts, and label ids
    (indices into TaskData.labels)."""

    name: str
    texts: list[str]
    labels: np.ndarray
    pairs: list[str] | None = None
    modality: str = "text"
    origin: str | None = None  # fingerprint of the split this one was sampled from (None: itself)

    def __len__(self) -> int:
        return len(self.texts)

    def _row_bytes(self, i: int) -> bytes:
        """Row i's inputs as bytes: text (or image path with its file's size and modification time,
        so a replaced file differs) and paired text."""
        out = self.texts[i].encode()
        if self.modality == "image":
            st = Path(self.texts[i]).stat()
            out += f"\x1f{st.st_size}\x1f{st.st_mtime_ns}".encode()
        return out + b"\x1f" + (self.pairs[i].encode() if self.pairs else b"") + b"\x1e"

    @property
    def fingerprint(self) -> str:
        """sha256 of the inputs (not the labels): the key of cached features for this split."""
        h = hashlib.sha256()
        for i in range(len(self)):
            h.update(self._row_bytes(i))
        return h.hexdigest()[:16]

    def row_keys(self) -> list[str]:
        """One key per row, of its inputs alone (sha256): rows met again in another sample of the
        same data (the advisor's, then the search's) are known by it."""
        return [hashlib.sha256(self._row_bytes(i)).hexdigest()[:20] for i in range(len(self))]

    def subset(self, indices) -> Split:
        idx = [int(i) for i in indices]
        return Split(self.name, [self.texts[i] for i in idx], self.labels[idx],
                     [self.pairs[i] for i in idx] if self.pairs else None, self.modality,
                     self.origin or self.fingerprint)


@dataclass
class TaskData:
    """A validated, split classification task."""

    source: str
    labels: list[str]
    train: Split
    valid: Split
    test: Split | None
    text_column: str
    label_column: str
    text_pair_column: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def modality(self) -> str:
        """"text" or "image"."""
        return self.train.modality

    @property
    def fingerprint(self) -> str:
        """sha256 of every split's inputs and labels: two runs on the same data share it."""
        parts = [self.labels] + [[s.name, s.fingerprint, s.labels.tolist()] for s in self.splits()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.valid, self.test) if s is not None]

    def class_counts(self, split: Split) -> dict[str, int]:
        counts = np.bincount(split.labels, minlength=self.num_labels)
        return {label: int(n) for label, n in zip(self.labels, counts)}


def load_task(data: str, config: DataConfig = DataConfig()) -> TaskData:
    """Read, validate and split a labelled text dataset.

    Args:
        data: path of a CSV/TSV/JSONL/Parquet file, or "demo:bbc-news".
        config: columns, separate validation/test files, split fractions and seed.

    Returns:
        The task, with warnings (train/validation duplicates, heavy class imbalance) attached.

    Raises:
        InputError: listing every problem found in every file, at once.
    """
    problems: list[str] = []
    notes: list[str] = []
    main = _read_rows(data, config, problems, notes=notes)
    valid = _read_rows(config.valid, config, problems, role="--valid", notes=notes) if config.valid else None
    test = _read_rows(config.test, config, problems, role="--test", notes=notes) if config.test else None
    if problems or main is None:
        raise InputError(problems)
    rows, text_col, label_col, pair_col = main
    modality = "image" if _is_image_data(data, config) else "text"
    if modality == "image":
        rows = _check_images(rows, data, config, problems, notes)
        if valid is not None:
            valid = (_check_images(valid[0], config.valid, config, problems, notes), *valid[1:])
        if test is not None:
            test = (_check_images(test[0], config.test, config, problems, notes), *test[1:])
    if problems:
        raise InputError(problems)

    labels = _label_order([r[2] for r in rows])
    label2id = {label: i for i, label in enumerate(labels)}
    counts = Counter(r[2] for r in rows)
    if len(counts) < 2:
        problems.append(f"{data}: every row has the label '{next(iter(counts))}'. "
                        "A classifier needs at least 2 classes.")
    if valid is None:
        few = sorted(label for label, n in counts.items() if n < 2)
        if few:
            shown = ", ".join(repr(x) for x in few[:10]) + (f" and {len(few) - 10} more" if len(few) > 10 else "")
            problems.append(f"{data}: {len(few)} of {len(counts)} classes ({shown}) have fewer than 2 examples, "
                            "so they cannot be split into train and validation. Add examples, drop those "
                            "rows, or pass --valid FILE.")
    for name, extra in (("--valid", valid), ("--test", test)):
        if extra is not None:
            unseen = sorted({r[2] for r in extra[0]} - set(counts))
            if unseen:
                problems.append(f"{name} has label(s) never seen in training: {', '.join(map(repr, unseen))}. "
                                f"Training labels: {', '.join(labels)}.")
    if problems:
        raise InputError(problems)

    rng = np.random.default_rng(config.seed)
    y = np.array([label2id[r[2]] for r in rows])
    if config.max_rows is not None and config.max_rows < len(rows):
        # at least 3 rows a class, so that each still reaches train, validation and test
        keep = stratified_indices(y, config.max_rows / len(rows), rng, min_per_class=3)
        rows, y = [rows[i] for i in keep], y[keep]
        if len(rows) > config.max_rows * 1.05:
            notes.append(f"--max-rows {config.max_rows}: kept {len(rows)} rows, not {config.max_rows}, because each "
                         f"of the {len(counts)} classes keeps at least 3 (for train, validation and test). Drop "
                         "rare classes from the file to sample fewer.")

    def make(name, part_rows, ids):
        return Split(name, [r[0] for r in part_rows], np.asarray(ids, dtype=np.int64),
                     [r[1] for r in part_rows] if pair_col else None, modality)

    if valid is None:
        test_fraction = 0.0 if test is not None else config.test_fraction
        groups, group_notes = _duplicate_groups(rows, data)
        notes += group_notes
        share = config.valid_fraction if config.valid_fraction is not None else valid_share(len(rows))
        train_idx, valid_idx, test_idx = _allocate_groups(y, groups, [share, test_fraction], rng)
        train = make("train", [rows[i] for i in train_idx], y[train_idx])
        valid_split = make("valid", [rows[i] for i in valid_idx], y[valid_idx])
        if config.valid_fraction is None:
            notes += _valid_notes(len(valid_split), share)
        test_split = make("test", [rows[i] for i in test_idx], y[test_idx]) if len(test_idx) else None
    else:
        train = make("train", rows, y)
        valid_split = make("valid", valid[0], [label2id[r[2]] for r in valid[0]])
        test_split = None
    if test is not None:
        test_split = make("test", test[0], [label2id[r[2]] for r in test[0]])

    empty = [f"{split.name} ({what})" for split, what in ((train, "training"), (valid_split, "validation"))
             if len(split) == 0]
    if empty:
        raise InputError(f"{data}: the split leaves {' and '.join(empty)} with no rows ({len(rows)} rows, "
                         f"{len(counts)} classes, text column '{text_col}', label column '{label_col}'). Check "
                         "--text-column and --label-column, add rows, or pass --valid FILE.")
    task = TaskData(data, labels, train, valid_split, test_split, text_col, label_col, pair_col)
    task.warnings = notes + _warnings(task)
    return task


def _valid_notes(n: int, share: float) -> list[str]:
    """What the split did for validation's sake, and what its size allows."""
    if n < MIN_VALID_ROWS:
        return [f"validation: only {n} rows ({share:.0%} of each class, the most the split gives it): accuracies "
                f"closer than about {noise_floor(n):.2f} are within the noise, so a smaller gain (--min-gain) cannot "
                "be told apart; the advisor cross-validates its own scores. Add labelled rows, or pass --valid FILE "
                f"with at least {MIN_VALID_ROWS}."]
    if share > VALID_FRACTION:
        return [f"validation: {n} rows ({share:.0%} of each class, not the usual {VALID_FRACTION:.0%}), so that "
                f"accuracies {noise_floor(n):.2f} apart are told apart (10% would give "
                f"{noise_floor(round(n * VALID_FRACTION / share)):.2f})."]
    return []


def _label_order(labels) -> list[str]:
    unique = set(labels)
    if all(u.lstrip("-").isdigit() for u in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _warnings(task: TaskData) -> list[str]:
    warnings = []
    train_texts = set(zip(task.train.texts, task.train.pairs or [None] * len(task.train)))
    dup = sum((t, p) in train_texts for t, p in zip(task.valid.texts, task.valid.pairs or [None] * len(task.valid)))
    if dup:
        warnings.append(f"{dup} validation row(s) also appear in training: validation accuracy will be optimistic.")
    if task.test is not None:
        dup = sum((t, p) in train_texts for t, p in zip(task.test.texts, task.test.pairs or [None] * len(task.test)))
        if dup:
            warnings.append(f"{dup} test row(s) also appear in training: test accuracy will be optimistic.")
    counts = task.class_counts(task.train)
    most, least = max(counts.values()), max(1, min(counts.values()))
    if most / least >= IMBALANCE_WARN_RATIO:
        rare = min(counts, key=counts.get)
        warnings.append(f"Heavy class imbalance: '{max(counts, key=counts.get)}' has {most} training rows, "
                        f"'{rare}' {counts[rare]} ({most / least:.0f}x). Accuracy can hide a rare class.")
    return warnings
