"""The pilot fine-tuning behind the forecast of fine-tuned accuracy, and the timed steps behind
the cost estimate."""

from __future__ import annotations

import math

import numpy as np

from ..core import TaskData, sample_indices
from . import _signals


def _pilot(backbone, task, train_s, valid_s, last, c, probe, config, skipped, say) -> tuple[dict, dict]:
    """Expected fine-tuned accuracy from a short pilot (the forecast: advisor/_forecast.py).

    LP-FT (Kumar et al., ICLR 2022): a linear probe is fitted on the pilot rows' pooled
    last-layer features (`_signals.probe_head`, the cross-validated C), and the top k blocks are
    fine-tuned from that head on `pilot_rows` rows (cached frozen layers, a few epochs), at the
    depths `next_pilot_depth` picks (k = 1, then 2 or every block). The share of the probe's
    errors the best pilot removes on the pilot's rows is removed from the probe carried to the
    task's training rows along its power-law learning curve, then calibrated across tasks, with
    an 80% interval (`_forecast`).
    """
    from ..core import TrainConfig, train
    from . import _forecast

    if backbone.num_blocks < 1:
        skipped.append("pilot: the model has no blocks to fine-tune.")
        return {}, {}
    rows = sample_indices(train_s, config.pilot_rows, np.random.default_rng(config.seed + 1))
    pilot = train_s.subset(rows)
    if np.bincount(pilot.labels, minlength=task.num_labels).min() < 2:
        skipped.append(f"pilot: fewer than 2 training rows for some class in a sample of {len(pilot)}; "
                       "no fine-tuning estimate.")
        return {}, {}
    weight, bias = _signals.probe_head(last["train"][rows], pilot.labels, task.num_labels, c)
    probe_pilot = float(np.mean((last["valid"] @ weight.T + bias).argmax(1) == valid_s.labels))
    pilot_task = TaskData(task.source, task.labels, pilot, valid_s, None, task.text_column, task.label_column,
                          task.text_pair_column)
    layer_average = probe["accuracy_layer_average"]
    lower_layers = layer_average is not None and layer_average - probe["accuracy"] >= config.min_gain
    accuracies, timings = {}, {}
    while (k := next_pilot_depth(accuracies, backbone.num_blocks, lower_layers, config.min_gain)) is not None:
        say(f"pilot: fine-tuning the top {k} block(s) on {len(pilot)} rows, from the probe's head")
        result = train(backbone, pilot_task,
                       TrainConfig(unfrozen_layers=k, epochs=config.pilot_epochs, patience=0,
                                   learning_rate=1e-4 if k > 2 else 3e-4,  # many blocks move: a smaller step
                                   head_lr_multiplier=1.0, batch_size=config.batch_size,
                                   max_length=config.max_length, device=config.device, seed=config.seed),
                       head_init=(weight, bias), progress=False)
        accuracies[k] = result.best_valid_accuracy
        timings[k] = _timing(result, len(pilot), len(valid_s), config.batch_size)
    accuracies = {str(k): v for k, v in sorted(accuracies.items())}
    best_k = max(accuracies, key=lambda k: (accuracies[k], -int(k)))
    exponent = _forecast.error_exponent(probe["learning_curve"], len(train_s), len(valid_s))
    raw = _forecast.carry(accuracies[best_k], probe_pilot, probe["accuracy"], len(train_s), len(task.train), exponent,
                          len(valid_s))
    calibration = _forecast.load_calibration(_forecast.calibration_file(backbone.modality))
    expected, half = _forecast.calibrate(raw, probe["accuracy"], len(task.valid), calibration)
    k = int(best_k)
    return {"fine_tune_accuracy": expected, "uncertainty": half, "interval": "80%",
            "gain_over_probe": expected - probe["accuracy"], "raw_fine_tune_accuracy": raw,
            "pilot_accuracy": accuracies, "pilot_probe_accuracy": probe_pilot, "pilot_rows": len(pilot),
            "pilot_method": "LP-FT: fine-tuned from the probe's head", "error_exponent": exponent,
            "calibration": {key: calibration.get(key) for key in ("scale", "sd", "half_width", "tasks")},
            "suggested_unfrozen_layers": [max(1, k - 1), min(backbone.num_blocks, k + 2)]}, timings


def next_pilot_depth(done: dict[int, float], num_blocks: int, lower_layers: bool, min_gain: float) -> int | None:
    """The next number of top blocks the pilot fine-tunes, given the accuracies `done` maps k to,
    or None when the pilot is over.

    k = 1 first. When the layer probes already say the task lives in lower layers
    (`lower_layers`: the layer-average probe beats the last layer's by `min_gain`; Garbaciauskas
    et al., Findings ACL 2024, find layer-averaged transferability ranks fine-tuned models best),
    every block (k = L) next, and nothing between: k = 2 would only confirm what the probes said,
    at about a quarter of the pilot's cost. Otherwise k = 2, and k = L only when k = 2 beats k = 1 by
    `min_gain` (going deeper pays).
    """
    top = min(2, num_blocks)
    if 1 not in done:
        return 1
    if lower_layers and num_blocks > top:
        return None if num_blocks in done else num_blocks
    if top not in done:
        return top
    if num_blocks > top and num_blocks not in done and done[top] - done[1] >= min_gain:
        return num_blocks
    return None


def _timing(result, train_rows: int, valid_rows: int, batch_size: int) -> tuple[float, float]:
    """(seconds per training step, seconds of cache building per row) of a finished run."""
    steps = math.ceil(train_rows / batch_size)
    return (float(np.mean([h.seconds for h in result.history])) / steps,
            result.cache_seconds / (train_rows + valid_rows))


def _cost(backbone, task, train_s, valid_s, config, suggested, device, timings, embed_row: float) -> dict:
    """Seconds per epoch for each k, from timed training steps.

    Steps are timed for k = 1 and L (the pilot's runs, else 4 steps with cached frozen layers; an
    epoch's time includes its validation pass, so this errs high); k = 0 trains a head on cached
    pooled features (no forward pass: its step counts as 0) whose cache is the embedding pass
    (`embed_row` seconds a row); a step's cost grows linearly with k (every block costs the
    same), so other k are interpolated. Then per_epoch(k) = ceil(n_train / batch) * step(k),
    cache(k) = rows * cache-time per row, and search = trials * epochs * mean per_epoch over the
    suggested k + one cache per k, where epochs is `search_epochs` raised on small data as the
    search's default range is (core.epochs_for).
    """
    from ..core import TrainConfig, epochs_for, train

    n_blocks = backbone.num_blocks
    rows = min(len(train_s), 4 * config.batch_size)
    mini = TaskData(task.source, task.labels, train_s.subset(range(rows)), valid_s.subset(range(min(8, len(valid_s)))),
                    None, task.text_column, task.label_column, task.text_pair_column)
    measured = {0: (0.0, embed_row), **timings}
    for k in sorted({min(1, n_blocks), n_blocks} - set(measured)):
        result = train(backbone, mini, TrainConfig(unfrozen_layers=k, epochs=1, patience=0, batch_size=config.batch_size,
                                                   max_length=config.max_length, device=config.device), progress=False)
        measured[k] = _timing(result, rows, len(mini.valid), config.batch_size)
    ks = sorted(measured)
    step = {k: measured[k][0] for k in ks}
    cache_row = {k: measured[k][1] for k in ks}
    per_epoch, cache = {}, {}
    steps_per_epoch = math.ceil(len(task.train) / config.batch_size)
    all_rows = len(task.train) + len(task.valid)
    for k in range(n_blocks + 1):
        per_epoch[str(k)] = float(np.interp(k, ks, [step[j] for j in ks])) * steps_per_epoch
        cache[str(k)] = float(np.interp(k, ks, [cache_row[j] for j in ks])) * all_rows
    lo, hi = suggested or (1, min(2, n_blocks))
    chosen = [str(k) for k in range(lo, hi + 1)]
    epochs = epochs_for(config.search_epochs, len(task.train))  # small data: the search's trials train longer
    search = (config.search_trials * epochs * float(np.mean([per_epoch[k] for k in chosen]))
              + sum(cache[k] for k in chosen))
    record = {"device": str(device), "per_epoch_seconds": per_epoch, "cache_seconds": cache,
              "search_seconds": search, "search": {"trials": config.search_trials, "epochs": epochs,
                                                   "unfrozen_layers": [lo, hi]}}
    if config.gpu_hourly_cost is not None:
        record["search_cost"] = search / 3600 * config.gpu_hourly_cost
    return record
