"""Workers: one process (or several, one GPU each) running trials on one study until it has its total."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace

from ..core import InputError, RunDir, check_stop, epoch_scale, stop_on_signals
from ._config import SearchConfig
from ._latency import LatencyTable
from ._objective import _feature_cache, _Objective
from ._space import SearchSpace
from ._study import finished, make_pruner, open_storage


@dataclass(frozen=True)
class _Job:
    """What a worker needs; picklable, so a worker process can rebuild everything from it."""

    model: str
    data: str
    data_config: object
    fingerprint: str
    url: str
    space: dict
    config: SearchConfig
    run_dir: str
    worker: int = 0
    device: str = "auto"


def _work(job: _Job, backbone, task, on_trial=None) -> None:
    """One worker: run trials until the study has job.config.trials finished ones."""
    import optuna

    config = job.config
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(job.url, heartbeat=config.heartbeat)
    space = SearchSpace.build(job.space, num_blocks=backbone.num_blocks, max_positions=backbone.max_positions)
    n_startup = max(3, min(10, config.trials // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = trial_seeded_tpe(config.seed, n_startup_trials=n_startup)
    max_epochs = max(space["epochs"].values)
    study = optuna.load_study(study_name=config.study, storage=storage, sampler=sampler,
                              pruner=make_pruner(config.pruner, max_epochs * config.steps_per_epoch,
                                                 min_steps=_first_judged(config, len(task.train))))
    cache = _feature_cache(config)
    latency = latency_table(backbone, task, config) if config.latency else None
    objective = _Objective(backbone, task, space, config, cache, RunDir(job.run_dir), job.device, job.worker, latency)

    def stop_at_total(study, trial):
        if on_trial is not None:
            on_trial(study, trial)
        check_stop()  # Ctrl-C / SIGTERM between two trials
        if _enough(study, config.trials):
            study.stop()

    if _enough(study, config.trials):
        return
    try:
        with stop_on_signals():
            study.optimize(objective, timeout=config.timeout, callbacks=[stop_at_total], catch=(Exception,),
                           gc_after_trial=True)
            check_stop()  # a stop asked for during the last trial's clean-up
    finally:
        if latency is not None:
            latency.close()


def latency_table(backbone, task, config: SearchConfig) -> LatencyTable:
    """The shapes' latencies for this search (latency.json in the cache folder): texts are timed at
    their median token length (of up to 500 training rows) when max_length does not cut them shorter."""
    import numpy as np

    from ..core import default_cache_dir

    typical = None
    if backbone.modality == "text":
        train = task.train
        lengths = backbone.tokenize(train.texts[:500], train.pairs[:500] if train.pairs else None,
                                    max_length=backbone.max_positions).lengths
        typical = int(np.median(lengths))
    return LatencyTable(config.cache_dir or default_cache_dir(), backbone, task.num_labels, typical,
                        batches=(1, 32, config.latency_batch))


def _enough(study, total: int) -> bool:
    """Whether no further trial should start: the finished trials and those running elsewhere (in
    another worker or process on this study, which will finish too) make `total`, so that
    `--trials N` is the total over every process, not N per process."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return len(finished(trials)) + sum(t.state == TrialState.RUNNING for t in trials) >= total


def _first_judged(config: SearchConfig, train_rows: int) -> int:
    """The first pruner step at which a trial may be pruned: the first rung (step 1) on data large
    enough, else the end of `core.epoch_scale` epochs."""
    scale = epoch_scale(train_rows, min_examples=config.min_examples)
    return 1 if scale == 1 else scale * config.steps_per_epoch


def trial_seeded_tpe(seed: int, **kwargs):
    """A TPESampler whose random state is reset from (seed, trial number) before every trial.

    Trial numbers are unique within a study and handed out by the storage, so no two trials of
    a study ever draw from the same random stream: a resumed search, a second process on the
    same study, or another machine do not repeat the configurations already tried (with one seed
    per process they all would). A single fresh run is still reproducible: its trials are
    numbered 0, 1, 2, ... whatever the process.
    """
    import numpy as np
    import optuna

    class TrialSeededTPESampler(optuna.samplers.TPESampler):
        def before_trial(self, study, trial):
            state = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
            self._rng.rng.seed(state)  # optuna keeps both random states here (TPESampler.reseed_rng)
            self._random_sampler._rng.rng.seed(state)
            super().before_trial(study, trial)

    return TrialSeededTPESampler(seed=seed, **kwargs)


def _worker_main(job: _Job) -> None:
    """Entry point of a worker process: load model and data again, then work."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..core import load_backbone, load_task, set_threads

    set_threads((os.cpu_count() or 1) // job.config.workers)
    try:
        task = load_task(job.data, job.data_config)
        if task.fingerprint != job.fingerprint:
            raise InputError(f"worker {job.worker}: the data '{job.data}' changed while the search ran.")
        _work(job, load_backbone(job.model, device=job.device), task)
    except KeyboardInterrupt:  # the parent says what happened; no traceback per worker
        sys.exit(130)


def _run_workers(job: _Job, bar) -> None:
    import multiprocessing

    devices = _worker_devices(job.config)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(replace(job, worker=i, device=devices[i]),), daemon=False)
             for i in range(job.config.workers)]
    for p in procs:
        p.start()
    try:
        with stop_on_signals():
            while any(p.is_alive() for p in procs):
                bar.poll()
                check_stop()  # Ctrl-C or SIGTERM: the workers are told, below
                time.sleep(1.0)
    except BaseException:
        _stop_workers(procs)
        raise
    finally:
        for p in procs:
            p.join()
    bar.poll()
    bad = [f"worker {i} exited with status {p.exitcode}" for i, p in enumerate(procs) if p.exitcode]
    if bad:
        print("warning: " + "; ".join(bad) + " (its running trial is retried by the next search)", file=sys.stderr)


def _stop_workers(procs, grace: float = 30.0) -> None:
    """Interrupt the workers (each marks its running trial failed and queues it again), then end
    those that do not stop within `grace` seconds (their trials are retried by the heartbeat)."""
    import signal

    for p in procs:
        if p.is_alive():
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()


def _worker_devices(config: SearchConfig) -> list[str]:
    """One device per worker: with device auto and several GPUs, worker i takes GPU i mod n."""
    from ..core import gpu_count

    n = gpu_count() if config.device == "auto" else 0
    if n > 1:
        return [f"cuda:{i % n}" for i in range(config.workers)]
    return [config.device] * config.workers
