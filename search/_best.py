"""RUN/best_model: the best model so far, swapped in whole under a file lock, with its trial.json."""

from __future__ import annotations

from filelock import FileLock

from ..core import BEST_MODEL_DIR, BEST_TRIAL_FILE, InputError, RunDir, TrialRecord, atomic_folder


def keep_if_best(run_dir: RunDir, study: str, number: int, value: float, params: dict, model) -> bool:
    """Save `model` as RUN/best_model when `value` beats the one saved there (for this study).

    The folder is written beside and swapped in by rename, under a file lock, so workers in
    several processes never leave a mixed or half-written best_model."""
    run_dir.path.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir.file(".best_model.lock")):
        current = _best_saved(run_dir, study)
        if current is not None and value <= current.value:
            return False
        with atomic_folder(run_dir.file(BEST_MODEL_DIR), marker=BEST_TRIAL_FILE, flag="best model") as folder:
            model.save(folder)
            TrialRecord(study=study, number=number, value=value, params=params).write(folder / BEST_TRIAL_FILE)
    return True


def _best_saved(run_dir: RunDir, study: str) -> TrialRecord | None:
    """The best model saved for `study` (best_model/trial.json), or None."""
    file = run_dir.file(BEST_MODEL_DIR) / BEST_TRIAL_FILE
    if not file.exists():
        return None
    try:
        saved = TrialRecord.read(file)
    except InputError:  # unreadable: treated as no model saved, so the next best replaces it
        return None
    return saved if saved.study == study else None
