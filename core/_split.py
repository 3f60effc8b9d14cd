"""Stratified splits and samples: rows allocated to train / validation / test by class, duplicates kept together."""

from __future__ import annotations

import numpy as np


def stratified_indices(y: np.ndarray, fraction: float, rng, *, min_per_class: int = 3) -> np.ndarray:
    """Sorted indices of a stratified random sample: `fraction` of each class's rows, but at least
    `min_per_class` of them (all when the class is smaller)."""
    keep = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep.append(idx[: max(min_per_class, round(len(idx) * fraction))])
    return np.sort(np.concatenate(keep))


def _allocate(y: np.ndarray, fractions, rng) -> list[np.ndarray]:
    """Stratified split of indices: [rest, part_1, ...], part_j taking `fractions[j]` of each class.

    Written out rather than taken from sklearn's train_test_split so that every class with at
    least len(fractions)+1 rows lands in every part (sklearn's can leave a small class out of
    validation, and fails outright on classes of 2).
    """
    parts = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for j, fraction in enumerate(fractions, start=1):
            room = len(idx) - start - 1  # the rest (train) keeps at least one row
            take = max(0, min(room, max(1, round(len(idx) * fraction)))) if fraction > 0 else 0
            parts[j].append(idx[start:start + take])
            start += take
        parts[0].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.array([], dtype=np.int64) for p in parts]


def _duplicate_groups(rows, source) -> tuple[np.ndarray, list[str]]:
    """A group id per row, equal for rows with the same input (text and pair), and notes on them.

    Copies of one text must land in one split, or validation scores what training memorised.
    """
    ids: dict = {}
    groups = np.array([ids.setdefault((r[0], r[1]), len(ids)) for r in rows], dtype=np.int64)
    sizes = np.bincount(groups)
    notes = []
    repeated = int((sizes > 1).sum())
    if repeated:
        notes.append(f"{repeated} text(s) appear more than once ({int(sizes[sizes > 1].sum())} rows); the copies of "
                     "each are kept together in one split.")
        labels_of: dict[int, set] = {}
        for g, r in zip(groups, rows):
            if sizes[g] > 1:
                labels_of.setdefault(int(g), set()).add(r[2])
        conflicts = [g for g, ls in labels_of.items() if len(ls) > 1]
        if conflicts:
            text = next(r[0] for g, r in zip(groups, rows) if g == conflicts[0])
            shown = text if len(text) <= 60 else text[:57] + "…"
            notes.append(f"{len(conflicts)} text(s) in {source} carry two or more labels (e.g. '{shown}': "
                         f"{', '.join(sorted(labels_of[conflicts[0]]))}): no model can get both right. "
                         "Fix or drop them.")
    return groups, notes


def _allocate_groups(y: np.ndarray, groups: np.ndarray, fractions, rng) -> list[np.ndarray]:
    """`_allocate` over groups of identical rows: each group goes whole to one part, stratified by
    the label of its first row."""
    first = np.unique(groups, return_index=True)[1]  # first row of each group, by group id
    parts = _allocate(y[first], fractions, rng)
    return [np.sort(np.flatnonzero(np.isin(groups, part))) for part in parts]


def sample_indices(split, n: int, rng) -> np.ndarray:
    """Row indices of a stratified sample of about n rows of `split`, at least 2 a class (all rows
    when it has no more than n)."""
    if len(split) <= n:
        return np.arange(len(split))
    return stratified_indices(split.labels, n / len(split), rng, min_per_class=2)


def sample_split(split, n: int, rng):
    """A stratified sample of about n rows (the split itself when it is smaller)."""
    return split if len(split) <= n else split.subset(sample_indices(split, n, rng))
