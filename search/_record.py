"""search.json from the study (`search_record`), and the progress bar over it."""

from __future__ import annotations

import contextlib

from ..core import FAIL_REASON, RunDir, SearchRecord, mask_url, steps_per_epoch
from ._best import _best_saved
from ._config import INTERRUPTED, PRUNED_REASON, RETRY_OF, SearchConfig
from ._latency import LATENCY_ATTR, front, latency_row
from ._space import SearchSpace
from ._study import DIRECTION, METRIC, finished


def search_record(study, space: SearchSpace, config: SearchConfig, url: str, run_dir: RunDir,
                  seconds: float) -> SearchRecord:
    """The search.json record: the study's counts, best trial and every trial, the space, the pruner and
    sampler, and the best model saved (best_model/trial.json)."""
    from optuna.trial import TrialState

    from ..export._latency import machine

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    fixed = {p.name: p.fixed for p in space.params if p.fixed is not None}
    record = SearchRecord.from_json({
        "study_name": config.study, "storage": mask_url(url), "direction": DIRECTION, "metric": METRIC,
        "n_trials": {"complete": counts["complete"], "pruned": counts["pruned"], "fail": counts["fail"],
                     "running": counts["running"], "waiting": counts["waiting"]},
        "best": None if best is None else {"number": best.number, "value": best.value,
                                           "params": {**fixed, **best.params}},
        "trials": [_trial_row(t, fixed, steps_per_epoch(study)) for t in trials],
        "finished": len(finished(trials)), "target_trials": config.trials, "space": space.to_dict(),
        "pruner": config.pruner, "first_rung": config.first_rung, "head_start": config.head_start,
        "sampler": f"TPE(seed={config.seed}, reseeded per trial number)", "workers": config.workers,
        "seconds": seconds, "latency_budget_ms": config.latency_budget_ms,
        "latency_batch": config.latency_batch if config.latency else None,
        "latency_machine": machine() if config.latency else None,
        "front": front([latency_row(t, {**fixed, **t.params}) for t in complete], config.latency_batch)})
    record.best_model = _best_saved(run_dir, config.study)
    return record


def epoch_text(epoch: float) -> str:
    """"epoch 2", or "0.33 of epoch 1" for a first rung's report."""
    return f"epoch {epoch:g}" if epoch == int(epoch) else f"{epoch:.2g} of epoch 1"


def _trial_row(t, fixed: dict, steps_per_epoch: int) -> dict:
    """One trial; its params include the space's fixed values, so each row is a whole configuration;
    its reports to the pruner keyed by epoch (0.3333 = a third of the first epoch)."""
    row = {"number": t.number, "state": t.state.name, "value": t.value, "params": {**fixed, **t.params},
           "seconds": t.user_attrs.get("seconds"),
           "intermediate": {f"{k / steps_per_epoch:.4g}": v for k, v in sorted(t.intermediate_values.items())}}
    if FAIL_REASON in t.user_attrs:
        row["fail_reason"] = t.user_attrs[FAIL_REASON]
    if "failed_trial" in t.system_attrs:
        row["retry_of"] = t.system_attrs["failed_trial"]
    elif RETRY_OF in t.user_attrs:
        row["retry_of"] = t.user_attrs[RETRY_OF]
    if t.user_attrs.get(INTERRUPTED):
        row["interrupted"] = True
    for key in (LATENCY_ATTR, PRUNED_REASON):
        if key in t.user_attrs:
            row[key] = t.user_attrs[key]
    return row


class _Bar:
    """A progress bar over the study: finished trials, best so far, pruned and failed counts."""

    def __init__(self, study, config: SearchConfig, done: int, enabled: bool):
        from tqdm.auto import tqdm

        self.study, self.config, self.seen = study, config, done
        self.bar = tqdm(total=config.trials, initial=done, desc="search", unit="trial", disable=not enabled,
                        dynamic_ncols=True)
        self.reported: set[int] = set()

    def update_from(self, study, trial=None) -> None:
        self.study = study
        self.poll()

    def poll(self) -> None:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        done = finished(trials)
        for t in done:
            if t.state == TrialState.FAIL and t.number not in self.reported:
                self.bar.write(f"trial {t.number} failed: {t.user_attrs[FAIL_REASON]}")
            self.reported.add(t.number)
        values = [t.value for t in trials if t.state == TrialState.COMPLETE]
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in done)
        self.bar.set_postfix(best=f"{max(values):.4f}" if values else "-", pruned=pruned, failed=failed,
                             refresh=False)
        self.bar.update(max(0, min(len(done), self.config.trials) - self.seen))
        self.seen = max(self.seen, min(len(done), self.config.trials))

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _progress_bar(study, config: SearchConfig, done: int, enabled: bool):
    bar = _Bar(study, config, done, enabled)
    try:
        yield bar
    finally:
        bar.close()
