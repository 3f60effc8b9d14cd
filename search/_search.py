"""The search: Optuna (TPE, seeded) over the layers to unfreeze and the hyperparameters.

One trial = one `core.train` run. Trials in a process share the backbone (loaded once; each
trial trains a copy, so every trial starts from the pretrained weights) and the frozen-layer
feature cache (per k and max length), so after the first trial with a given k, its frozen part
costs nothing. Each epoch's validation accuracy is reported to the pruner (Hyperband by
default), and once before that, after the first third of the first epoch's steps (`first_rung`),
so a poor trial can stop after a third of the data. The pruner's steps are therefore thirds of an
epoch (search.json keys a trial's reports by epoch: 0.3333, 1, 2, ...). Only the best model so far
is kept on disk, in RUN/best_model.

`--trials N` is the total of finished trials in the study (complete, pruned, or failed by
themselves), so re-running the same command resumes. With several workers, trials already
running when the N-th finishes still complete, so the total may exceed N by up to workers - 1.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from core import (ADVICE_FILE, BEST_MODEL_DIR, BEST_TRIAL_FILE, DEFAULT_TRIALS, SEARCH_FILE, AdviceRecord, InputError,
                  RunDir, SearchRecord, STEPS_PER_EPOCH, atomic_folder, clean_stale_temp, mask_url, read_json, steps_per_epoch,
                  write_json_atomic)

from ._space import SearchSpace
from ._study import (DIRECTION, FAIL_REASON, METRIC, finished, make_pruner, open_storage, open_study,
                     storage_url)

PRUNERS = ("hyperband", "median", "none")
CACHES = ("auto", "memory", "disk", "off")
INTERRUPTED = "interrupted"  # user attribute of a trial stopped by Ctrl-C / SIGINT
RETRY_OF = "retry_of"  # user attribute of a trial queued again after an interrupt
HEAD_STARTS = ("probe", "random")
CLOSED_FORM = "closed-form logistic regression"  # the `method` of a head fitted without trials


@dataclass(frozen=True)
class SearchConfig:
    """A search.

    Attributes:
        trials: total finished trials wanted in the study (a re-run resumes up to it).
        timeout: stop starting trials after this many seconds (per worker); None = no limit.
        storage: an Optuna storage URL; None = sqlite:///RUN/study.db.
        study: the study's name in the storage.
        pruner: "hyperband", "median" or "none"; epochs are the resource.
        first_rung: the share of the first epoch's steps after which a trial first reports its
            validation accuracy to the pruner: successive halving on data size for the first rung
            (Li et al., "Hyperband", JMLR 2018, take training rows as the resource as well as
            iterations). 1/n for a whole n (the pruner's steps are 1/n epoch); 1 = epochs only.
        workers: worker processes on this machine (on several GPUs, one GPU each in turn).
        space: {parameter: "LO:HI" | "A,B" | "V"} on top of the defaults (see search._space).
        use_advice: narrow unfrozen_layers to RUN/advice.json's suggestion and try it first.
        seed: TPE's seed (worker i uses seed + i) and every trial's training seed.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        cache: frozen-feature cache: "auto" (the inputs of blocks in memory for one worker, on
            disk for several; pooled features on disk, where the advisor left those of its sample),
            "memory", "disk" or "off" (no cache, nothing shared).
        cache_dir: folder of the disk cache (default ~/.cache/finetune-advisor).
        cache_gb: the most GiB of frozen features a worker holds in memory; beyond it the least
            recently used k's features are dropped and read from disk or computed again when a
            later trial needs them, so memory stays flat however many k's the search visits.
        cache_disk_gb: the most GiB the disk cache folder may hold; least recently used files
            are removed beyond it.
        heartbeat: seconds between a running trial's heartbeats; a trial silent for 5 heartbeats
            is taken as killed and run again.
        patience: epochs without improvement before a trial stops early.
        head_search: when unfrozen_layers is fixed at 0 (a head-only advice, or the user's
            space), search the head's hyperparameters with trials; by default the head is
            fitted once, in closed form (logistic regression on all frozen features, C by
            cross-validation), which is what those trials approach.
        head_start: where every trial's head starts: "probe" (default) is the closed-form head on
            the frozen model's pooled features of all training rows (LP-FT: Kumar et al.,
            "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
            ICLR 2022), fitted once per max_length; "random" a freshly initialised head.
        start_with: configurations tried first, in order, before TPE's own (each a {parameter:
            value} dict, e.g. a known-good baseline); missing parameters take TrainConfig's
            defaults and values are moved inside the space. Queued only into a new study.
        group_by_length: each trial's training batches hold texts of similar length (padded
            less: 1.7x faster per epoch on short BBC sentences, accuracy within seed noise,
            benchmarks/results/train_buckets.json); False = random batches.
    """

    trials: int = DEFAULT_TRIALS
    timeout: float | None = None
    storage: str | None = None
    study: str = "search"
    pruner: str = "hyperband"
    first_rung: float = 1 / 3
    workers: int = 1
    space: dict = field(default_factory=dict)
    use_advice: bool = True
    seed: int = 0
    device: str = "auto"
    cache: str = "auto"
    cache_dir: str | None = None
    cache_gb: float = 2.0
    cache_disk_gb: float = 10.0
    heartbeat: int = 30
    patience: int = 2
    head_search: bool = False
    head_start: str = "probe"
    start_with: tuple = ()
    group_by_length: bool = True

    @property
    def steps_per_epoch(self) -> int:
        """The pruner's steps per epoch: 1 / first_rung."""
        return round(1 / self.first_rung)

    def __post_init__(self):
        InputError.check([
            (self.trials >= 1, f"--trials {self.trials} must be >= 1."),
            (self.timeout is None or self.timeout > 0, f"--timeout {self.timeout} must be > 0 seconds."),
            (self.pruner in PRUNERS, f"--pruner '{self.pruner}' must be one of {', '.join(PRUNERS)}."),
            (0 < self.first_rung <= 1 and abs(self.first_rung * round(1 / self.first_rung) - 1) < 1e-6,
             f"--first-rung {self.first_rung:g} must be 1/n for a whole n >= 1, e.g. 1/3 (or 1: epochs only)."),
            (self.workers >= 1, f"--workers {self.workers} must be >= 1."),
            (self.cache in CACHES, f"--cache '{self.cache}' must be one of {', '.join(CACHES)}."),
            (self.heartbeat >= 1, f"--heartbeat {self.heartbeat} must be >= 1 second."),
            (self.cache_gb > 0, f"--cache-gb {self.cache_gb} must be > 0."),
            (self.cache_disk_gb > 0, f"--cache-disk-gb {self.cache_disk_gb} must be > 0."),
            (bool(self.study.strip()), "--study must not be empty."),
            (self.head_start in HEAD_STARTS,
             f"--head-start '{self.head_start}' must be one of {', '.join(HEAD_STARTS)}."),
        ])
        if self.start_with:
            from core import TrainConfig  # torch: only when there is something to check

            known = {f.name for f in fields(TrainConfig)}
            unknown = sorted({k for params in self.start_with for k in params} - known)
            InputError.check([(not unknown, f"start_with names unknown parameters: {', '.join(unknown)} "
                                            f"(known: {', '.join(sorted(known))}).")])


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


# --------------------------------------------------------------------------- the search


def search(backbone, task, run_dir, config: SearchConfig = SearchConfig(), *, model_ref: str | None = None,
           data_ref: str | None = None, data_config=None, progress: bool = True, log=print) -> SearchRecord:
    """Search the study to `config.trials` finished trials; write RUN/search.json, RUN/best_model.

    Args:
        backbone, task: the loaded model and data (the first worker uses them as they are).
        run_dir: the run directory (study.db, search.json and best_model go there).
        config: the search settings.
        model_ref, data_ref, data_config: how worker processes load the same model and data
            (needed only when config.workers > 1).
        progress: show a progress bar (trial, best so far, elapsed, ETA).
        log: where notes go (one line each).

    Returns:
        The search.json record (also written to RUN/search.json).

    Raises:
        InputError: bad space, storage or study; workers > 1 without model_ref/data_ref.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    run_dir = RunDir(run_dir)
    if config.workers > 1 and (model_ref is None or data_ref is None):
        raise InputError("workers > 1 needs model_ref and data_ref, so each worker process can load them.")
    clean_stale_temp(run_dir.file(BEST_MODEL_DIR))  # left by a process killed while saving
    overrides, first_params, notes = _advice(run_dir, task, backbone, config)
    for note in notes:
        log(note)
    if backbone.modality == "image":  # no tokens: max_length bounds to one value, so it never splits the cache
        lengths = [1]
    else:
        lengths = backbone.tokenize(task.train.texts[:500], task.train.pairs[:500] if task.train.pairs else None,
                                    max_length=backbone.max_positions).lengths
    space = SearchSpace.build(overrides, num_blocks=backbone.num_blocks, max_positions=backbone.max_positions,
                              text_lengths=lengths)
    augment = next((p for p in space.params if p.name == "augment"), None)
    if augment is not None and True in augment.values and backbone.modality != "image":
        raise InputError(f"space 'augment={augment.text()}': flips and crops are for images, and "
                         f"{backbone.name} is a text model. Drop --space augment.")
    url = storage_url(config.storage, run_dir.path)
    storage = open_storage(url, heartbeat=config.heartbeat)
    identity = {"metric": METRIC, "space": space.to_dict(), "model": model_identity(backbone),
                "data_fingerprint": task.fingerprint, STEPS_PER_EPOCH: config.steps_per_epoch}
    study = open_study(storage, config.study, identity=identity)
    if not study.get_trials(deepcopy=False):
        for params in ([first_params] if first_params else []) + list(config.start_with):
            study.enqueue_trial(_clip(params, space), skip_if_exists=True)
    done = len(finished(study.get_trials(deepcopy=False)))
    if done:
        log(f"resuming study '{config.study}': {done} of {config.trials} trials already finished")

    t0 = time.perf_counter()
    if space["unfrozen_layers"].fixed == 0 and not config.head_search:
        if not any(t.user_attrs.get("method") == CLOSED_FORM for t in study.get_trials(deepcopy=False)
                   if t.state.name == "COMPLETE"):
            _closed_form_head(backbone, task, study, space, config, run_dir, log, progress)
        record = search_record(study, space, config, url, run_dir, time.perf_counter() - t0)
        record.write(run_dir.path)
        return record

    job = _Job(model_ref or backbone.source, data_ref or task.source, data_config, task.fingerprint, url,
               space.to_dict(), config, str(run_dir.path), device=config.device)
    interrupted = False
    try:
        if done < config.trials:
            with _progress_bar(study, config, done, progress) as bar:
                if config.workers == 1:
                    _work(job, backbone, task, on_trial=bar.update_from)
                else:
                    _run_workers(job, bar)
    except KeyboardInterrupt:  # what finished is recorded all the same, then the interrupt goes on
        interrupted = True
    record = search_record(study, space, config, url, run_dir, time.perf_counter() - t0)
    record.write(run_dir.path)
    if interrupted:
        log(f"interrupted: {record.finished} of {config.trials} trials finished, written to "
            f"{run_dir.file(SEARCH_FILE)}. Run the same command again to resume (an interrupted trial "
            "runs again first).")
        raise KeyboardInterrupt
    return record


def _feature_cache(config: SearchConfig):
    """The worker's feature cache, as config.cache says (see SearchConfig)."""
    from core import FeatureCache, default_cache_dir

    folder = config.cache_dir or default_cache_dir()
    blocks_on_disk = config.cache == "disk" or (config.cache == "auto" and config.workers > 1)
    return FeatureCache(folder if blocks_on_disk else None,
                        pooled_dir=folder if config.cache in ("auto", "disk") else None,
                        max_bytes=int(config.cache_gb * 2**30), disk_max_bytes=int(config.cache_disk_gb * 2**30))


def _closed_form_head(backbone, task, study, space: SearchSpace, config: SearchConfig, run_dir: RunDir, log,
                      progress: bool) -> None:
    """Head-only in closed form: the frozen model's pooled features of every training row, a
    logistic-regression head with C by cross-validation (core.fit_head) folded into the linear
    head, RUN/best_model written from it, and one trial in the study with its validation accuracy.

    The length is the space's (its choice nearest the default 128 tokens when several)."""
    import numpy as np
    import optuna

    from core import Classifier, TrainConfig, fit_head, set_head

    t0 = time.perf_counter()
    length = _clip({}, space).get("max_length", space["max_length"].fixed)
    rows = f"{len(task.train)} training images" if backbone.modality == "image" else \
        f"{len(task.train)} training rows ({length} tokens)"
    log(f"head-only: fitting the head in closed form on the frozen features of {rows}; --head-search searches "
        "its hyperparameters with trials instead")
    cache = _feature_cache(config)
    features = {s: cache.features(backbone, getattr(task, s), start=backbone.num_blocks, max_length=length,
                                  progress=progress).numpy() for s in ("train", "valid")}
    if cache.rows_reused:
        log(f"head-only: the features of {cache.rows_reused} rows came from the cache (the advisor's sample, or an "
            f"earlier run), {cache.rows_computed} were computed")
    weight, bias, c = fit_head(features["train"], task.train.labels, task.num_labels, seed=config.seed)
    accuracy = float(np.mean((features["valid"] @ weight.T + bias).argmax(1) == task.valid.labels))
    searched = {p.name: p for p in space.params if p.fixed is None}
    params = {"max_length": length} if "max_length" in searched else {}
    distributions = {name: optuna.distributions.CategoricalDistribution(list(searched[name].choices))
                     for name in params}
    seconds = time.perf_counter() - t0
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions=distributions, value=accuracy,
        user_attrs={"method": CLOSED_FORM, "C": c, "seconds": seconds, "worker": 0}))
    number = max(t.number for t in study.get_trials(deepcopy=False))
    model = Classifier(backbone, task.num_labels, dropout=0.0)
    set_head(model.head, weight, bias)
    model.labels, model.max_length = list(task.labels), min(length, backbone.max_positions)
    keep_if_best(run_dir, config.study, number, accuracy,
                 {**asdict(TrainConfig(unfrozen_layers=0, max_length=length)), "method": CLOSED_FORM, "C": c}, model)
    log(f"head-only: validation accuracy {accuracy:.4f} (C = {c:g}) in {seconds:.0f} s")


def model_identity(backbone) -> str:
    """The model as a study knows it: a hash of its config without local paths, so the same model
    read from different folders (machines of a cluster) joins the same study."""
    import hashlib
    import json

    config = backbone.model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "name_or_path"):
        config.pop(key, None)
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
                              pruner=make_pruner(config.pruner, max_epochs * config.steps_per_epoch))
    cache = _feature_cache(config)
    objective = _Objective(backbone, task, space, config, cache, RunDir(job.run_dir), job.device, job.worker)

    def stop_at_total(study, trial):
        if on_trial is not None:
            on_trial(study, trial)
        _raise_pending_interrupt()
        if len(finished(study.get_trials(deepcopy=False))) >= config.trials:
            study.stop()

    if len(finished(study.get_trials(deepcopy=False))) >= config.trials:
        return
    with _sticky_interrupt():
        study.optimize(objective, timeout=config.timeout, callbacks=[stop_at_total], catch=(Exception,),
                       gc_after_trial=True)
        _raise_pending_interrupt()  # one that landed in the last trial's clean-up


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
    from core import load_backbone, load_task, set_threads

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
        while any(p.is_alive() for p in procs):
            bar.poll()
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
    from core import gpu_count

    n = gpu_count() if config.device == "auto" else 0
    if n > 1:
        return [f"cuda:{i % n}" for i in range(config.workers)]
    return [config.device] * config.workers


# --------------------------------------------------------------------------- one trial


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
        from core import fit_head

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

        from core import TrainConfig, train

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
    from core import TrainingError, is_out_of_memory

    if is_out_of_memory(error):
        return (f"out of memory at batch_size {params.get('batch_size')}, max_length {params.get('max_length')}, "
                f"unfrozen_layers {params.get('unfrozen_layers')}: lower batch_size or max_length in the space")
    if isinstance(error, TrainingError):
        return f"non-finite loss: {error}"
    return f"{type(error).__name__}: {error}"


def keep_if_best(run_dir: RunDir, study: str, number: int, value: float, params: dict, model) -> bool:
    """Save `model` as RUN/best_model when `value` beats the one saved there (for this study).

    The folder is written beside and swapped in by rename, under a file lock, so workers in
    several processes never leave a mixed or half-written best_model."""
    run_dir.path.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir.file(".best_model.lock")):
        current = _best_saved(run_dir, study)
        if current is not None and value <= current["value"]:
            return False
        with atomic_folder(run_dir.file(BEST_MODEL_DIR), marker=BEST_TRIAL_FILE, flag="best model") as folder:
            model.save(folder)
            write_json_atomic(folder / BEST_TRIAL_FILE, {"study": study, "number": number, "value": value,
                                                         "params": params})
    return True


def _best_saved(run_dir: RunDir, study: str) -> dict | None:
    file = run_dir.file(BEST_MODEL_DIR) / BEST_TRIAL_FILE
    if not file.exists():
        return None
    try:
        saved = read_json(file)
    except InputError:  # unreadable: treated as no model saved, so the next best replaces it
        return None
    return saved if saved.get("study") == study else None


@contextlib.contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: one process at a time is the user's to ensure
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- advice, record, progress


def _advice(run_dir: RunDir, task, backbone, config: SearchConfig):
    """Space overrides and a first trial from RUN/advice.json, with notes saying what was taken.

    This is the one reader of the advice: head-only fixes unfrozen_layers at 0 (and the layer
    decay, which then has nothing to act on); fine-tune narrows it to the suggested range and
    tries its middle first; zero-shot and change-model are searched only because the user asked.
    The user's own --space values always win.
    """
    overrides = dict(config.space)
    if not config.use_advice or not run_dir.exists(ADVICE_FILE):
        return overrides, None, []
    advice = AdviceRecord.read(run_dir.file(ADVICE_FILE))
    if advice.data_fingerprint not in (None, task.fingerprint):
        return overrides, None, ["advice.json was made on other data; not using it"]
    notes = []
    if advice.decision in ("zero-shot", "change-model"):
        notes.append(f"the advice was '{advice.decision}' ({advice.reasons[0] if advice.reasons else ''}); "
                     "searching anyway, as asked")
    if "unfrozen_layers" in overrides:
        return overrides, None, notes
    if advice.decision == "head-only":
        overrides["unfrozen_layers"] = "0"
        overrides.setdefault("layer_lr_decay", "1")
        notes.append("from advice.json (head-only): unfrozen_layers fixed at 0, a head on frozen features")
        return overrides, None, notes
    suggested = advice.suggested_layers
    if not suggested:
        return overrides, None, notes
    lo, hi = suggested[0], min(suggested[1], backbone.num_blocks)
    overrides["unfrozen_layers"] = f"{lo}:{hi}"
    first = {"unfrozen_layers": min(hi, lo + 1)}
    notes.append(f"from advice.json: unfrozen_layers narrowed to {lo}..{hi}; the first trial tries "
                 f"k={first['unfrozen_layers']} with the default hyperparameters")
    return overrides, first, notes


def _clip(first: dict, space: SearchSpace) -> dict:
    """The default TrainConfig values (with `first` on top) moved inside the space's searched ranges."""
    from core import TrainConfig

    defaults = {**asdict(TrainConfig()), **first}
    params = {}
    for p in space.params:
        if p.fixed is not None:
            continue
        value = defaults[p.name]
        if p.choices is not None:
            numeric = all(isinstance(c, (int, float)) for c in p.choices)
            params[p.name] = min(p.choices, key=lambda c: abs(c - value)) if numeric else p.choices[0]
        else:
            params[p.name] = min(max(value, p.low), p.high)
    return params


def search_record(study, space: SearchSpace, config: SearchConfig, url: str, run_dir: RunDir,
                  seconds: float) -> SearchRecord:
    """The search.json record (DESIGN.md contract, plus space, pruner, best_model and reasons)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    fixed = {p.name: p.fixed for p in space.params if p.fixed is not None}
    return SearchRecord(
        study_name=config.study, storage=mask_url(url), direction=DIRECTION, metric=METRIC,
        n_trials={"complete": counts["complete"], "pruned": counts["pruned"], "fail": counts["fail"],
                  "running": counts["running"], "waiting": counts["waiting"]},
        best=None if best is None else {"number": best.number, "value": best.value,
                                        "params": {**fixed, **best.params}},
        trials=[_trial_row(t, fixed, steps_per_epoch(study)) for t in trials],
        finished=len(finished(trials)), target_trials=config.trials, best_model=_best_saved(run_dir, config.study),
        space=space.to_dict(),
        extra={"pruner": config.pruner, "first_rung": config.first_rung, "head_start": config.head_start, "sampler": f"TPE(seed={config.seed}, reseeded per trial number)",
               "workers": config.workers, "seconds": seconds})


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
