"""core: the fine-tuning problem every stage shares.

Task data (read, validate, split), the backbone (model + tokenizer, the architecture table,
pooling, embedding, freezing), the training loop with cached frozen layers, device choice, and
the run directory with its atomic JSON records.

Importing `core` is light: names that need torch load their module on first use, so that the
dashboard, which reads run directories, never imports torch.
"""

from importlib import import_module

from ._arch import ARCHITECTURES, ArchSpec, arch_for
from ._data import DataConfig, Split, TaskData, load_task
from ._errors import InputError, first_line
from ._files import (atomic_folder, check_replaceable, check_writable, clean_stale_temp, default_cache_dir,
                     library_versions, mask_secrets, mask_url, pid_alive, read_json, write_json_atomic)
from ._head import fit_head, fit_with_c, one_blas_thread
from ._records import (ADVICE_FILE, BEST_MODEL_DIR, BEST_TRIAL_FILE, DECISIONS, DEFAULT_TRIALS, EXPORT_DIR, EXPORT_FILE,
                       FAIL_REASON, RUN_FILE, SEARCH_FILE, STEPS_PER_EPOCH, STUDY_FILE, AdviceRecord, BestTrial, Cost,
                       Expected, FrontPoint, ImageStats, Probe, RunCommand, RunData, RunRecord, SearchCost,
                       SearchRecord, Shift, ShiftSample, Thresholds, TrialCounts, TrialRecord, TrialRow,
                       ZeroShot, epoch_reports, sqlite_url, steps_per_epoch)
from ._export_record import ExportRecord, Latency, LatencyBudget, Variant
from ._rundir import RunDir
from ._split import sample_indices, sample_split, stratified_indices
from ._steps import MIN_EXAMPLES, epoch_scale, epochs_for
from ._stop import Stopped, check_stop, raise_on_sigterm, stop_on_signals
from ._typed import Part

_LAZY = {
    "Backbone": "_backbone", "Encoded": "_backbone", "load_backbone": "_backbone", "pool": "_backbone",
    "freeze_top_k": "_backbone", "resolve_model_source": "_demos", "load_tokenizer": "_hub",
    "load_sequence_classifier": "_hub", "sequence_classifier_logits": "_zero_shot_models",
    "image_classifier_logits": "_zero_shot_models", "image_text_logits": "_zero_shot_models",
    "FeatureCache": "_cache",
    "Classifier": "_model", "load_classifier": "_model",
    "ExportSource": "_export_source", "load_export_source": "_export_source", "export_source_of": "_export_source",
    "TrainConfig": "_train", "TrainResult": "_train", "EpochRecord": "_train", "TrainingError": "_train",
    "train": "_train", "set_head": "_train",
    "resolve_device": "_device", "release_memory": "_device", "set_threads": "_device", "gpu_count": "_device",
    "is_out_of_memory": "_device",
}

__all__ = ["fit_head", "fit_with_c", "one_blas_thread", "AdviceRecord", "SearchRecord", "ExportRecord",
           "RunRecord", "TrialRecord", "Part", "ZeroShot", "Probe", "Shift", "ShiftSample", "ImageStats", "Expected", "Cost",
           "SearchCost", "Thresholds", "TrialCounts", "BestTrial", "TrialRow", "FrontPoint", "Latency", "LatencyBudget", "Variant", "RunCommand", "RunData", "epoch_reports", "sqlite_url", "steps_per_epoch", "ADVICE_FILE", "BEST_MODEL_DIR",
           "BEST_TRIAL_FILE", "DECISIONS", "DEFAULT_TRIALS", "EXPORT_DIR", "EXPORT_FILE", "FAIL_REASON", "RUN_FILE", "STEPS_PER_EPOCH",
           "SEARCH_FILE", "STUDY_FILE", "ARCHITECTURES", "ArchSpec", "arch_for", "DataConfig", "Split", "TaskData", "load_task",
           "stratified_indices", "sample_indices", "sample_split", "MIN_EXAMPLES", "epoch_scale", "epochs_for", "Stopped", "check_stop", "raise_on_sigterm",
           "stop_on_signals", "InputError", "first_line", "RunDir", "atomic_folder", "check_replaceable", "check_writable",
           "clean_stale_temp", "default_cache_dir", "library_versions", "pid_alive", "mask_secrets", "mask_url", "read_json", "write_json_atomic", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'core' has no attribute '{name}'")
