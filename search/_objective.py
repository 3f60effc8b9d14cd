"""One trial: train a configuration, report to the pruner, keep the model if it is the best.

Ctrl-C during training stops the trial at once (it is queued again); elsewhere it waits for the
next trial boundary (`_sticky_interrupt`)."""

from __future__ import annotations

import contextlib
import threading
import time

from ..core import FAIL_REASON, RunDir
from ._best import keep_if_best
from ._config import INTERRUPTED, RETRY_OF, SearchConfig
from ._record import epoch_text
from ._space import SearchSpace


def _feature_cache(config: SearchConfig):
    """The worker's feature cache, as config.cache says (see SearchConfig)."""
    from ..core import FeatureCache, default_cache_dir

    folder = config.cache_dir or default_cache_dir()
    blocks_on_disk = config.cache == "disk" or (config.cache == "auto" and config.workers > 1)
    return FeatureCache(folder if blocks_on_disk else None,
                        pooled_dir=folder if config.cache in ("auto", "disk") else None,
                        max_bytes=int(config.cache_gb * 2**30), disk_max_bytes=int(config.cache_disk_gb * 2**30))


_PENDING_INTERRUPT = threading.Event()  # Ctrl-C was pressed; raised at the next safe point


_IN_TRAINING = threading.Event()  # a trial's training runs: Ctrl-C may stop it at once


@contextlib.contextmanager
def _sticky_interrupt():
    """Ctrl-C during a trial's training raises KeyboardInterrupt at once (the trial is failed and
    queued again); anywhere else it is remembered and raised at the next trial boundary. Raising
    it anywhere lost it or broke the study: one landing in a garbage-collection callback
    (sqlalchemy's, after each trial) is printed as "Exception ignored" and dropped, and one landing
    while optuna records a finished trial ends in its UnboundLocalError. A second Ctrl-C always
    raises at once."""
    import signal

    _PENDING_INTERRUPT.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        again = _PENDING_INTERRUPT.is_set()
        _PENDING_INTERRUPT.set()
        if again or _IN_TRAINING.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_pending_interrupt() -> None:
    if _PENDING_INTERRUPT.is_set():
        raise KeyboardInterrupt


class _Objective:
    """Train one configuration; report each epoch to the pruner; keep the model if it is the best."""

    def __init__(self, backbone, task, space: SearchSpace, config: SearchConfig, cache, run_dir: RunDir,
                 device: str, worker: int):
        self.backbone, self.task, self.space, self.config = backbone, task, space, config
        self.cache, self.run_dir, self.device, self.worker = cache, run_dir, device, worker
        self.heads = {}  # max_length -> the probe's head every trial starts from (head_start "probe")

    def head_init(self, max_length: int):
        """The closed-form head on the frozen model's pooled features of the training rows at this
        length (None for head_start "random"); fitted once per length, shared by the trials."""
        from ..core import fit_head

        if self.config.head_start != "probe":
            return None
        if max_length not in self.heads:
            features = self.cache.features(self.backbone, self.task.train, start=self.backbone.num_blocks,
                                           max_length=max_length, progress=False).numpy()
            weight, bias, _ = fit_head(features, self.task.train.labels, self.task.num_labels, seed=self.config.seed)
            self.heads[max_length] = (weight, bias)
        return self.heads[max_length]

    def __call__(self, trial) -> float:
        import optuna

        from ..core import TrainConfig, train

        params = self.space.suggest(trial)
        trial.set_user_attr("worker", self.worker)
        t0 = time.perf_counter()

        def on_epoch(epoch: float, accuracy: float) -> None:
            _raise_pending_interrupt()
            trial.report(accuracy, round(epoch * self.config.steps_per_epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {epoch_text(epoch)} at validation accuracy {accuracy:.4f}")

        try:
            config = TrainConfig(**{"patience": self.config.patience, **params}, seed=self.config.seed,
                                 cache="memory", device=self.device, group_by_length=self.config.group_by_length)
            _raise_pending_interrupt()
            _IN_TRAINING.set()
            try:
                result = train(self.backbone, self.task, config, cache=self.cache, on_epoch=on_epoch,
                               head_init=self.head_init(config.max_length), first_rung=self.config.first_rung,
                               progress=False)
            finally:
                _IN_TRAINING.clear()
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            raise
        except KeyboardInterrupt:  # failed by the interrupt, not by itself: queued again for the resume
            trial.set_user_attr(INTERRUPTED, True)
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            trial.study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
            raise
        except Exception as e:
            trial.set_user_attr(FAIL_REASON, _failure(e, params))
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            raise
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("cached", result.cached)
        trial.set_user_attr("device", result.device)
        keep_if_best(self.run_dir, self.config.study, trial.number, result.best_valid_accuracy, params,
                     result.model)
        return result.best_valid_accuracy


def _failure(error: Exception, params: dict) -> str:
    """One line on why a trial failed, with the fix where there is one."""
    from ..core import TrainingError, is_out_of_memory

    if is_out_of_memory(error):
        return (f"out of memory at batch_size {params.get('batch_size')}, max_length {params.get('max_length')}, "
                f"unfrozen_layers {params.get('unfrozen_layers')}: lower batch_size or max_length in the space")
    if isinstance(error, TrainingError):
        return f"non-finite loss: {error}"
    return f"{type(error).__name__}: {error}"
