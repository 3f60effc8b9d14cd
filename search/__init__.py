"""search: Optuna over how many blocks to unfreeze and the training hyperparameters.

`search(backbone, task, run_dir, config)` runs (or resumes) a study in RUN/study.db or any
Optuna storage URL, with TPE, epoch-level pruning (Hyperband by default), the frozen-layer
feature cache shared by all trials, one or more worker processes, and retry of killed trials;
it writes RUN/search.json and keeps the best model in RUN/best_model.
"""

from ._best import keep_if_best
from ._config import HEAD_STARTS, PRUNERS, SearchConfig
from ._record import search_record
from ._search import model_identity, search
from ._space import DEFAULTS, SEARCHABLE, Param, SearchSpace, check_augment, parse_param
from ._study import STORAGE_ENV, check_same_search, check_storage, finished, open_storage, open_study, storage_url

__all__ = ["SearchConfig", "search", "search_record", "keep_if_best", "PRUNERS", "HEAD_STARTS", "SearchSpace", "Param",
           "parse_param", "check_augment", "DEFAULTS", "SEARCHABLE", "open_storage", "open_study", "finished", "check_storage", "check_same_search", "model_identity",
           "storage_url", "STORAGE_ENV"]
