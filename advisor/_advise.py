"""`advise`: measure every signal on a sample of the data, estimate gain and cost, decide.

Steps: 1) read the optional files (label descriptions, reference, unlabeled), every problem at
once; 2) embed a stratified sample of the training and validation rows once (mean pooling, every
layer; the last layer's pooled features are kept in the feature cache, where the search's head
finds them); 3) probes, transferability, learning curve; 4) zero-shot; 5) domain shift; 6) a pilot
fine-tuning of the top 1-2 blocks on cached features (and of every block when deeper pays), and
the forecast of fine-tuned accuracy from it (advisor/_forecast.py); 7) timed steps per k for the
cost; 8) the decision (see advisor/_decide.py).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import asdict

import numpy as np

from ..core import AdviceRecord, InputError, TaskData, Thresholds, default_cache_dir, sample_split
from . import _scores, _signals
from ._config import AdvisorConfig
from ._decide import SMALL_VALID, Signals, decide, standard_error, thresholds
from ._inputs import _SHIFT_ROWS, read_inputs
from ._pilot import _cost, _pilot, next_pilot_depth  # noqa: F401 (next_pilot_depth: advisor's API)


def advise(backbone, task: TaskData, config: AdvisorConfig = AdvisorConfig(), *, inputs: dict | None = None,
           progress: bool = True, run_dir=None) -> AdviceRecord:
    """Measure, estimate and decide; returns the advice record (and writes RUN/advice.json).

    Args:
        backbone: the pretrained model (core.load_backbone).
        task: the validated task (core.load_task).
        config: thresholds, optional files and sample sizes.
        inputs: the optional files as `read_inputs` returned them (read here when None).
        progress: print each step and show progress bars (on stderr).
        run_dir: the run directory to write advice.json into (None: not written).

    Raises:
        InputError: bad optional files (see read_inputs).
    """
    from ..core import FeatureCache, resolve_device

    t_start = time.perf_counter()
    inputs = inputs if inputs is not None else read_inputs(task, config)
    if task.modality == "image" and inputs["descriptions"] and not backbone.image_text:
        raise InputError(f"--label-descriptions: the model '{backbone.name}' has no text tower, so its zero-shot "
                         "reads its own head's labels. Leave the option out, or give an image-text model "
                         "(CLIP, SigLIP).")
    device = resolve_device(config.device)
    say = (lambda msg: print(f"advise: {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    rng = np.random.default_rng(config.seed)
    skipped = []
    steps, mark = {}, [t_start]  # seconds each step took, for advice.json

    def lap(step: str) -> None:
        now = time.perf_counter()
        steps[step], mark[0] = now - mark[0], now

    # 2) one embedding pass over a sample of the data
    train_s = sample_split(task.train, config.sample_rows, rng)
    valid_s = sample_split(task.valid, config.valid_rows, rng)
    say(f"embedding {len(train_s)} training and {len(valid_s)} validation rows")
    backbone.model.to(device)
    samples = (("train", train_s), ("valid", valid_s))
    if backbone.uniform_layers:
        layers = {name: backbone.embed(s.texts, s.pairs, max_length=config.max_length, all_layers=True,
                                       pooling="mean", progress=progress) for name, s in samples}
        feats = {"last": {k: v[:, -1] for k, v in layers.items()}, "average": {k: v.mean(1) for k, v in layers.items()}}
        mean_last = {k: v[:, -1] for k, v in layers.items()}  # mean pooling: zero-shot and shift read it
        if backbone.pooling != "mean":  # the head reads the backbone's own pooling
            feats["last"] = {name: backbone.embed(s.texts, s.pairs, max_length=config.max_length, progress=False)
                             for name, s in samples}
    else:  # a CNN's stages differ in width: no layer average
        feats = {"last": {name: backbone.embed(s.texts, max_length=config.max_length, progress=progress)
                          for name, s in samples}}
        mean_last = feats["last"]
        skipped.append("layer-average probe: this model's blocks differ in width (a CNN's stages), so their "
                       "features cannot be averaged.")
    ty, vy = train_s.labels, valid_s.labels
    if config.cache_dir != "":
        store = FeatureCache(pooled_dir=config.cache_dir or default_cache_dir())
        for name, s in samples:
            store.store_pooled(backbone, s, feats["last"][name], max_length=config.max_length)
    lap("embedding")

    # 3) probes and transferability; the decision reads the probe on what a head-only model sees
    say("probing frozen features")
    if np.bincount(ty, minlength=task.num_labels).min() < 2:
        skipped.append("probe: a class has fewer than 2 training rows, so C could not be cross-validated; "
                       "the probe used C = 1.")
    predicted = {name: _signals.probe_predictions(f["train"], ty, f["valid"], seed=config.seed)
                 for name, f in feats.items()}
    probes = {name: (float(np.mean(p == vy)), c) for name, (p, c) in predicted.items()}
    probes.setdefault("average", (None, None))
    bx = feats["last"]
    probe_acc, c = probes["last"]
    probe = {"accuracy": probe_acc, "features": f"last layer, {backbone.pooling} pooling", "C": c,
             "accuracy_last_layer": probes["last"][0], "accuracy_layer_average": probes["average"][0],
             "knn_accuracy": _signals.knn_accuracy(bx["train"], ty, bx["valid"], vy),
             "logme": _scores.logme(bx["train"], ty), "h_score": _scores.h_score(bx["train"], ty),
             "learning_curve": _signals.learning_curve(bx["train"], ty, bx["valid"], vy, c, seed=config.seed),
             "train_rows": len(train_s), "valid_rows": len(valid_s)}
    # a model without pretraining, for comparison (decide's change-model rule)
    if task.modality == "text":  # one that reads characters
        texts = {name: [f"{t}\n{p}" for t, p in zip(s.texts, s.pairs)] if s.pairs else
                 _signals.visible_text(backbone.tokenizer, s.texts, config.max_length) for name, s in samples}
        ngram, probe["baseline_C"] = _signals.ngram_predictions(texts["train"], ty, texts["valid"], seed=config.seed)
        probe["baseline_accuracy"] = float(np.mean(ngram == vy))
        probe["baseline_p_value"] = _scores.mcnemar_p_value(ngram == vy, predicted["last"][0] == vy)
        probe["baseline_method"] = "character 2-5-gram TF-IDF + linear SVM"
    else:  # an image task: an RBF SVM on the raw pixels
        pixels, probe["baseline_C"], probe["baseline_method"] = _signals.pixel_predictions(
            train_s.texts, ty, valid_s.texts, seed=config.seed)
        probe["baseline_accuracy"] = float(np.mean(pixels == vy))
        probe["baseline_p_value"] = _scores.mcnemar_p_value(pixels == vy, predicted["last"][0] == vy)

    probe["scored_rows"] = len(valid_s)
    lap("probes")

    # 4) zero-shot
    zero_shot = _zero_shot(backbone, task, valid_s, mean_last["valid"], inputs["descriptions"], config,
                           device, skipped, say)

    lap("zero_shot")

    # 5) domain shift
    say("measuring domain shift")
    if task.modality == "image":
        shift = _image_shift(backbone, train_s, feats["last"]["train"], inputs, config, rng, skipped)
    else:
        shift = _shift(backbone, train_s, mean_last["train"], inputs, config, rng)
    lap("shift")

    # 6) pilot fine-tuning, 7) cost
    expected, timings = _pilot(backbone, task, train_s, valid_s, feats["last"], c, probe, config, skipped, say)
    lap("pilot")
    if len(valid_s) < SMALL_VALID:  # after the pilot: its forecast is anchored on the rows it is judged on
        _cross_validate(probe, feats, samples, texts if task.modality == "text" else None, config.seed, skipped)
        if expected.get("fine_tune_accuracy") is not None:
            expected["gain_over_probe"] = expected["fine_tune_accuracy"] - probe["accuracy"]
        lap("cross_validation")
    say("timing training steps")
    embed_row = steps["embedding"] / (len(train_s) + len(valid_s))
    cost = _cost(backbone, task, train_s, valid_s, config, expected.get("suggested_unfrozen_layers"), device, timings,
                 embed_row)
    lap("cost")

    # 8) decision
    chance = float(np.bincount(vy).max() / len(vy))
    for part, key in ((probe, "accuracy"), (probe, "knn_accuracy"), (probe, "baseline_accuracy"), (zero_shot, "accuracy")):
        rows = probe["scored_rows"] if part is probe else len(valid_s)  # the probe's may be cross-validated
        part[f"{key}_se"] = standard_error(part.get(key), rows)
    parts = {"zero_shot": zero_shot, "probe": probe, "shift": shift, "expected": expected, "cost": cost}
    provisional = AdviceRecord.from_json({"decision": "head-only", "reasons": [], "advisor_seconds": 0.0,
                                          "chance_accuracy": chance, **parts})
    decision, reasons = decide(Signals.from_advice(provisional), min_gain=config.min_gain,
                               target_accuracy=config.target_accuracy, budget_seconds=config.budget_seconds,
                               max_unk_rate=config.max_unk_rate)
    record = dataclasses.replace(
        provisional, decision=decision, reasons=reasons, advisor_seconds=time.perf_counter() - t_start,
        thresholds=Thresholds.from_json(thresholds(chance, min_gain=config.min_gain,
                                                   target_accuracy=config.target_accuracy,
                                                   budget_seconds=config.budget_seconds,
                                                   max_unk_rate=config.max_unk_rate)),
        data_fingerprint=task.fingerprint, skipped=skipped, model=backbone.name, num_blocks=backbone.num_blocks,
        config=asdict(config), step_seconds=steps)
    if run_dir is not None:
        record.write(run_dir)
    return record


def _cross_validate(probe: dict, feats: dict, samples, texts: dict | None, seed: int, skipped: list) -> None:
    """On a small validation sample, the probes' and the baseline's accuracies cross-validated over
    every labelled row of the sample (training and validation rows together: `_signals.out_of_fold`),
    so one row moves them less; `scored_rows` and `cv_folds` say so. Zero-shot stays on the
    validation rows (it fits nothing, but it runs the model again on each row), and so does the
    pilot's forecast, anchored on the probe of the rows a fine-tuned model is judged on (anchored on
    the cross-validated probe, the text suite's interval coverage fell from 0.83 to 0.75)."""
    (_, train_s), (_, valid_s) = samples
    y = np.concatenate([train_s.labels, valid_s.labels])
    folds = _signals.cv_folds(y, seed=seed)
    if not folds:
        skipped.append("cross-validation on the small validation sample: a class has fewer than 2 rows.")
        return
    x = {name: np.concatenate([f["train"], f["valid"]]) for name, f in feats.items()}

    def accuracy(predict) -> tuple[float, np.ndarray]:
        correct = _signals.out_of_fold(predict, y, folds) == y
        return float(correct.mean()), correct

    probes = {name: accuracy(lambda tr, te, v=v: _signals.probe_predictions(v[tr], y[tr], v[te], seed=seed)[0])
              for name, v in x.items()}
    probe["accuracy"], probe_correct = probes["last"]
    probe["accuracy_last_layer"] = probe["accuracy"]
    if "average" in probes:
        probe["accuracy_layer_average"] = probes["average"][0]
    probe["knn_accuracy"] = accuracy(lambda tr, te: _signals.knn_predictions(x["last"][tr], y[tr], x["last"][te]))[0]
    if texts is not None:
        rows = texts["train"] + texts["valid"]
        fit = lambda tr, te: _signals.ngram_predictions([rows[i] for i in tr], y[tr], [rows[i] for i in te],  # noqa: E731
                                                        seed=seed)[0]
    else:
        paths = list(train_s.texts) + list(valid_s.texts)
        fit = lambda tr, te: _signals.pixel_predictions([paths[i] for i in tr], y[tr], [paths[i] for i in te],  # noqa: E731
                                                        seed=seed)[0]
    probe["baseline_accuracy"], baseline_correct = accuracy(fit)
    probe["baseline_p_value"] = _scores.mcnemar_p_value(baseline_correct, probe_correct)
    probe["scored_rows"], probe["cv_folds"] = len(y), len(folds)


def _zero_shot(backbone, task, valid_s, valid_x, descriptions, config, device, skipped, say) -> dict:
    if task.modality == "image":
        method = _signals.zero_shot_method(backbone.model.config, task.labels, modality="image",
                                           image_text=backbone.image_text)
        if method is None:
            skipped.append("zero-shot: the model has no image-classification head whose labels name the task's "
                           f"({', '.join(task.labels[:5])}{', …' if len(task.labels) > 5 else ''}) "
                           "and no text tower (CLIP, SigLIP).")
            return {"method": None, "accuracy": None, "descriptions": None}
        if method == "image-text":
            say("zero-shot (image-text similarity)")
            accuracy = _signals.image_text_zero_shot(backbone.source, backbone.image_spec, valid_s.texts,
                                                     valid_s.labels, task.labels, descriptions, device=device)
            return {"method": method, "accuracy": accuracy, "descriptions": "file" if descriptions else "template"}
        say("zero-shot (the model's own head)")
        accuracy = _signals.image_head_zero_shot(backbone.source, backbone.image_spec, valid_s.texts, valid_s.labels,
                                                 task.labels, device=device)
        return {"method": method, "accuracy": accuracy, "descriptions": None}
    method = _signals.zero_shot_method(backbone.model.config, task.labels)
    say(f"zero-shot ({method})")
    if method == "label-embedding":
        if task.text_pair_column:
            skipped.append("zero-shot: label-embedding similarity does not apply to sentence-pair tasks.")
            return {"method": method, "accuracy": None}
        accuracy = _signals.label_embedding_zero_shot(backbone, valid_x, valid_s.labels, task.labels, descriptions,
                                                      max_length=config.max_length)
    else:
        accuracy = _signals.head_or_nli_zero_shot(backbone.source, method, valid_s.texts, valid_s.labels,
                                                  task.labels, device=device, max_length=config.max_length)
    return {"method": method, "accuracy": accuracy,
            "descriptions": "file" if descriptions else ("template" if method != "head" else None)}


def _shift(backbone, train_s, train_x, inputs, config, rng) -> dict:
    n = min(_SHIFT_ROWS, len(train_s))
    side = train_x[rng.choice(len(train_x), n, replace=False)]
    unk_rate, fertility = _scores.tokenizer_coverage(backbone.tokenizer, train_s.texts)
    ref_texts = inputs["reference"]
    ref_x = backbone.embed(ref_texts[:_SHIFT_ROWS], max_length=config.max_length, pooling="mean", progress=False)
    ref = _distance(side, ref_x, config.seed)
    shift = {"unk_rate": unk_rate, "fertility": fertility, "mmd2": ref["mmd2"], "mmd_p_value": ref["mmd_p_value"],
             "pad": ref["pad"], "effective_rank": _scores.effective_rank(train_x), "hidden_size": backbone.hidden_size,
             "reference": str(config.reference or "bundled general English (advisor/reference.txt)"),
             "reference_rows": ref["rows"]}
    if inputs["unlabeled"]:
        un_x = backbone.embed(inputs["unlabeled"][:_SHIFT_ROWS], max_length=config.max_length, pooling="mean",
                              progress=False)
        un_unk, un_fert = _scores.tokenizer_coverage(backbone.tokenizer, inputs["unlabeled"][:_SHIFT_ROWS])
        shift["unlabeled"] = {**_distance(side, un_x, config.seed), "unk_rate": un_unk, "fertility": un_fert}
    return shift


def _distance(side, other, seed: int) -> dict:
    """MMD² with its permutation p-value, and the proxy A-distance, between two feature samples."""
    mmd, p_value = _scores.mmd2(side, other, seed=seed)
    return {"rows": len(other), "mmd2": mmd, "mmd_p_value": p_value,
            "pad": _scores.proxy_a_distance(side, other, seed=seed)}


def _image_shift(backbone, train_s, train_x, inputs, config, rng, skipped) -> dict:
    """What decides transfer for images: the data's image size against the model's input, colour
    against grayscale, pixel statistics against the model's normalisation (`_scores.image_input_shift`),
    the features' effective rank, and MMD / proxy A-distance against --reference or --unlabeled
    images when given."""
    from ..core._images import image_stats

    n = min(_SHIFT_ROWS, len(train_s))
    side = train_x[rng.choice(len(train_x), n, replace=False)]
    stats = image_stats(train_s.texts, limit=_SHIFT_ROWS)
    shift = {"unk_rate": None, "fertility": None, "mmd2": None, "mmd_p_value": None, "pad": None,
             "effective_rank": _scores.effective_rank(train_x), "hidden_size": backbone.hidden_size,
             "images": stats, **_scores.image_input_shift(stats, backbone.image_spec)}
    for key, paths in (("reference", inputs.get("reference")), ("unlabeled", inputs.get("unlabeled"))):
        if not paths:
            continue
        measured = _distance(side, backbone.embed(paths[:_SHIFT_ROWS], progress=False), config.seed)
        if key == "reference":
            shift.update(mmd2=measured["mmd2"], mmd_p_value=measured["mmd_p_value"], pad=measured["pad"],
                         reference=str(config.reference), reference_rows=measured["rows"])
        else:
            shift["unlabeled"] = measured
    if not inputs.get("reference"):
        skipped.append("shift: no reference images (--reference DIR) of the model's world, so no MMD or proxy "
                       "A-distance against it; the input statistics stand in.")
    return shift


