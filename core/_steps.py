"""How long a run trains on small data: enough optimizer steps, and patience counted in passes
that hold enough examples. Plain arithmetic, shared by the trainer, the search's space and pruner,
and the advisor's cost (torch-free)."""

from __future__ import annotations

import math

MIN_EXAMPLES = 3_200  # `epochs_for`: a run sees at least this many training examples (100 steps of 32)


def epochs_for(epochs: int, train_rows: int, *, min_examples: int = MIN_EXAMPLES) -> int:
    """`epochs`, raised so that `train_rows` rows are seen at least `min_examples` times in all.

    >>> epochs_for(3, 280), epochs_for(3, 5000)
    (12, 3)
    """
    return max(int(epochs), math.ceil(min_examples / max(int(train_rows), 1)))


def epoch_scale(train_rows: int, *, min_examples: int = MIN_EXAMPLES) -> int:
    """Epochs that hold at least min_examples / 4 training examples: the unit in which early stopping
    and pruning wait on small data. Fine-tuning from a probe's head dips before it climbs (the
    features move under a head fitted to them), and on 260 rows an epoch is 9 steps: patience and
    pruning rungs counted in such epochs stop a run inside its dip.

    >>> epoch_scale(260), epoch_scale(5000)
    (4, 1)
    """
    return epochs_for(1, train_rows, min_examples=min_examples // 4)
