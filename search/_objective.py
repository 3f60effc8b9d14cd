"""One trial: train a configuration, report to the pruner, keep the model if it is the best.

Ctrl-C or SIGTERM stops a trial between two of its batches (core.check_stop); the trial is failed,
marked interrupted and queued again with the same parameters, so a resume runs it first."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace

from ..core import FAIL_REASON, InputError, RunDir, check_stop, epoch_scale
from ._best import keep_if_best
from ._config import INTERRUPTED, PRUNED_REASON, RETRY_OF, SearchConfig
from ._latency import LATENCY_ATTR, LENGTH_ATTR, LatencyTable
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


class _Objective:
    """Train one configuration; report each epoch to the pruner; keep the model if it is the best."""

    def __init__(self, backbone, task, space: SearchSpace, config: SearchConfig, cache, run_dir: RunDir,
                 device: str, worker: int, latency: LatencyTable | None = None):
        self.backbone, self.task, self.space, self.config = backbone, task, space, config
        self.cache, self.run_dir, self.device, self.worker = cache, run_dir, device, worker
        self.latency, self.budget = latency, config.budget
        self.heads = {}  # (kept_layers, max_length) -> the probe's head every trial starts from (head_start "probe")
        # small data: patience counts this many epochs as one
        self.scale = epoch_scale(len(task.train), min_examples=config.min_examples)
        self.shallow = {}  # kept_layers -> the backbone cut to it

    def backbone_at(self, depth: int):
        """The backbone cut to its first `depth` blocks (made once per depth; the weights are shared)."""
        if depth not in self.shallow:
            self.shallow[depth] = self.backbone.keep_first(depth)
        return self.shallow[depth]

    def head_init(self, depth: int, max_length: int):
        """The closed-form head on the frozen model's pooled features of the training rows at this
        depth and length (None for head_start "random"); fitted once per shape, shared by the trials."""
        from ..core import fit_head

        if self.config.head_start != "probe":
            return None
        if (depth, max_length) not in self.heads:
            backbone = self.backbone_at(depth)
            features = self.cache.features(backbone, self.task.train, start=backbone.num_blocks,
                                           max_length=max_length, progress=False).numpy()
            weight, bias, _ = fit_head(features, self.task.train.labels, self.task.num_labels, seed=self.config.seed)
            self.heads[depth, max_length] = (weight, bias)
        return self.heads[depth, max_length]

    def check_latency(self, trial, depth: int, max_length: int) -> None:
        """Measure (or look up) the trial's shape latency onto the trial; prune it before it trains
        when no variant fits the budget."""
        import optuna

        if self.latency is None:
            return
        latency = self.latency.of(depth, max_length)
        if latency is None:  # the model does not export: no latency, so no budget can be checked
            if self.budget.ms is not None:
                raise InputError(f"the latency budget cannot be checked: {self.latency.untimed}")
            return
        trial.set_user_attr(LATENCY_ATTR, latency)
        trial.set_user_attr(LENGTH_ATTR, self.latency.length(max_length))
        if not self.budget.fits(latency):
            name, ms = self.budget.fastest(latency)
            raise optuna.TrialPruned(f"over the latency budget before training: {name} takes {ms:.1f} ms at batch "
                                     f"{self.budget.batch}, the budget is {self.budget.ms:g} ms")

    def __call__(self, trial) -> float:
        import optuna

        from ..core import TrainConfig, train

        params = self.space.suggest(trial)
        for key, value in {"worker": self.worker, "pid": os.getpid(), "host": socket.gethostname()}.items():
            trial.set_user_attr(key, value)  # pid and host: a resume finds the trials of a process that died
        t0 = time.perf_counter()

        def on_epoch(epoch: float, accuracy: float) -> None:
            check_stop()
            trial.report(accuracy, round(epoch * self.config.steps_per_epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {epoch_text(epoch)} at validation accuracy {accuracy:.4f}")

        try:
            config = TrainConfig(**{**params, "patience": params.get("patience", self.config.patience) * self.scale},
                                 seed=self.config.seed, cache="memory", device=self.device,
                                 group_by_length=self.config.group_by_length)
            depth = config.kept_layers or self.backbone.num_blocks
            if config.unfrozen_layers > depth:  # a queued configuration (advice, start_with) deeper than its depth
                config = replace(config, unfrozen_layers=depth)
                params["unfrozen_layers"] = depth
            self.check_latency(trial, depth, config.max_length)
            check_stop()
            result = train(self.backbone_at(depth), self.task, config, cache=self.cache, on_epoch=on_epoch,
                           head_init=self.head_init(depth, config.max_length),
                           first_rung=self.config.first_rung, progress=False)
        except optuna.TrialPruned as e:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            if str(e).startswith("over the latency budget"):
                trial.set_user_attr(PRUNED_REASON, str(e))
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
