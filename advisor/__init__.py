"""advisor: is fine-tuning this model on this data worth its cost, and how much of it to tune?

`advise(backbone, task, config)` measures zero-shot accuracy, frozen-feature probes,
transferability (LogME, H-score), domain shift (unknown-token rate, fertility, MMD², proxy
A-distance, effective rank), a pilot fine-tuning and the cost per epoch, then decides
zero-shot / head-only / fine-tune / change-model with reasons (rule: advisor/_decide.py).
"""

from ._advise import advise
from ._config import AdvisorConfig
from ._decide import Signals, decide, standard_error, thresholds
from ._inputs import read_inputs
from ._scores import effective_rank, h_score, logme, mmd2, proxy_a_distance, tokenizer_coverage

__all__ = ["AdvisorConfig", "advise", "read_inputs", "Signals", "decide", "standard_error", "thresholds", "logme", "h_score", "mmd2",
           "proxy_a_distance", "effective_rank", "tokenizer_coverage"]
