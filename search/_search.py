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
themselves), so re-running the same command resumes; over every worker and process on the study:
none starts a trial once the finished ones and those running elsewhere make N.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from ..core import (BEST_MODEL_DIR, SEARCH_FILE, STEPS_PER_EPOCH, AdviceRecord, InputError, RunDir, SearchRecord,
                     Stopped, clean_stale_temp, epoch_scale)
from ._advice import _advice, _clip
from ._best import keep_if_best
from ._config import CLOSED_FORM, SearchConfig
from ._latency import LATENCY_ATTR, LENGTH_ATTR
from ._objective import _feature_cache
from ._record import _progress_bar, search_record
from ._space import SearchSpace, check_augment, check_kept
from ._study import METRIC, finished, open_storage, open_study, requeue_dead_trials, storage_url
from ._workers import _Job, _run_workers, _work


def search(backbone, task, run_dir, config: SearchConfig = SearchConfig(), *, advice: AdviceRecord | None = None,
           model_ref: str | None = None, data_ref: str | None = None, data_config=None, progress: bool = True,
           log=print) -> SearchRecord:
    """Search the study to `config.trials` finished trials; write RUN/search.json, RUN/best_model.

    Args:
        backbone, task: the loaded model and data (the first worker uses them as they are).
        run_dir: the run directory (study.db, search.json and best_model go there).
        config: the search settings.
        advice: the advisor's record (`advise`'s return); None reads RUN/advice.json when there is one.
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
    overrides, first_params, notes = _advice(run_dir, task, backbone, config, advice)
    for note in notes:
        log(note)
    if backbone.modality == "image":  # no tokens: max_length bounds to one value, so it never splits the cache
        lengths = [1]
    else:
        lengths = backbone.tokenize(task.train.texts[:500], task.train.pairs[:500] if task.train.pairs else None,
                                    max_length=backbone.max_positions).lengths
    shallower = config.latency_budget_ms is not None and backbone.arch.shallower is not None
    space = SearchSpace.build(overrides, num_blocks=backbone.num_blocks, max_positions=backbone.max_positions,
                              text_lengths=lengths, shallower=shallower, train_rows=len(task.train),
                              min_examples=config.min_examples, batchnorm=backbone.has_batchnorm)
    check_augment(space.get("augment"), backbone.modality, backbone.name)
    scale = epoch_scale(len(task.train), min_examples=config.min_examples)
    if scale > 1:
        log(f"small data ({len(task.train)} training rows): trials train for epochs={space['epochs'].text()}, and early "
            f"stopping and pruning wait {scale} epochs where they would wait one")
    check_kept(space, backbone)
    url = storage_url(config.storage, run_dir.path)
    storage = open_storage(url, heartbeat=config.heartbeat)
    identity = {"metric": METRIC, "space": space.to_dict(), "model": model_identity(backbone),
                "data_fingerprint": task.fingerprint, STEPS_PER_EPOCH: config.steps_per_epoch}
    study = open_study(storage, config.study, identity=identity)
    if not study.get_trials(deepcopy=False):
        for params in ([first_params] if first_params else []) + list(config.start_with):
            study.enqueue_trial(_clip(params, space), skip_if_exists=True)
    for note in requeue_dead_trials(study):
        log(note)
    done = len(finished(study.get_trials(deepcopy=False)))
    if done:
        log(f"resuming study '{config.study}': {done} of {config.trials} trials already finished")

    t0 = time.perf_counter()
    kept = space.get("kept_layers")
    if space["unfrozen_layers"].fixed == 0 and not config.head_search and (kept is None or kept.fixed is not None):
        if not any(t.user_attrs.get("method") == CLOSED_FORM for t in study.get_trials(deepcopy=False)
                   if t.state.name == "COMPLETE"):
            _closed_form_head(backbone, task, study, space, config, run_dir, log, progress)
        record = search_record(study, space, config, url, run_dir, time.perf_counter() - t0)
        record.write(run_dir.path)
        return record

    job = _Job(model_ref or backbone.source, data_ref or task.source, data_config, task.fingerprint, url,
               space.to_dict(), config, str(run_dir.path), device=config.device)
    stopped = None
    try:
        if done < config.trials:
            with _progress_bar(study, config, done, progress) as bar:
                if config.workers == 1:
                    _work(job, backbone, task, on_trial=bar.update_from)
                else:
                    _run_workers(job, bar)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what finished is recorded all the same
        stopped = e if isinstance(e, Stopped) else Stopped()
    record = search_record(study, space, config, url, run_dir, time.perf_counter() - t0)
    record.write(run_dir.path)
    if stopped is not None:
        stopped.note = (f"{record.finished} of {config.trials} trials finished, written to "
                        f"{run_dir.file(SEARCH_FILE)}. Run the same command again to resume (a stopped trial "
                        "runs again first).")
        raise stopped
    return record


def _closed_form_head(backbone, task, study, space: SearchSpace, config: SearchConfig, run_dir: RunDir, log,
                      progress: bool) -> None:
    """Head-only in closed form: the frozen model's pooled features of every training row, a
    logistic-regression head with C by cross-validation (core.fit_head) folded into the linear
    head, RUN/best_model written from it, and one trial in the study with its validation accuracy.

    The length is the space's (its choice nearest the default 128 tokens when several)."""
    import numpy as np
    import optuna

    from ..core import Classifier, TrainConfig, fit_head, set_head

    t0 = time.perf_counter()
    length = _clip({}, space).get("max_length", space["max_length"].fixed)
    kept = space.get("kept_layers")
    depth = kept.fixed if kept is not None else backbone.num_blocks  # the closed form runs only at one depth
    user_attrs = {}
    if config.latency:
        from ._workers import latency_table

        table = latency_table(backbone, task, config)
        try:
            latency = table.of(depth, length)
            user_attrs = {LATENCY_ATTR: latency, LENGTH_ATTR: table.length(length)} if latency else {}
        finally:
            table.close()
    backbone = backbone.keep_first(depth)
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
        user_attrs={"method": CLOSED_FORM, "C": c, "seconds": seconds, "worker": 0, **user_attrs}))
    number = max(t.number for t in study.get_trials(deepcopy=False))
    model = Classifier(backbone, task.num_labels, dropout=0.0)
    set_head(model.head, weight, bias)
    model.labels, model.max_length = list(task.labels), min(length, backbone.max_positions)
    keep_if_best(run_dir, config.study, number, accuracy,
                 {**asdict(TrainConfig(unfrozen_layers=0, max_length=length, kept_layers=kept and depth)), "method": CLOSED_FORM,
                  "C": c}, model)
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


