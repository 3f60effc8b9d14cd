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

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core import DEFAULT_TRIALS, AdviceRecord, InputError, Split, TaskData, default_cache_dir, stratified_indices

from . import _scores, _signals
from ._decide import Signals, decide, thresholds

REFERENCE_FILE = Path(__file__).with_name("reference.txt")
_SHIFT_ROWS = 300  # rows per side for MMD and the proxy A-distance


@dataclass(frozen=True)
class AdvisorConfig:
    """What the advisor measures and how it decides.

    Attributes:
        min_gain: smallest accuracy gain (absolute, 0..1) that makes training or fine-tuning worth it.
        target_accuracy: stop at the cheapest option that reaches this validation accuracy (None = off).
        budget_seconds: the most the search may cost; above it the advice is head-only (None = no limit).
        gpu_hourly_cost: price of one hour of the device, to turn the cost into money (None = not shown).
        max_unk_rate: unknown-token rate above which the model cannot read the data (change-model).
        label_descriptions: JSON file {label: sentence} for zero-shot (default "This text is about {label}.",
            for an image-text model "a photo of a {label}.").
        reference: text file, one example a line, of the model's world (default: the bundled general English).
        unlabeled: text file, one example a line, of production data, compared with the training data.
        max_length: truncation length in tokens.
        sample_rows: training rows used for the probes (stratified sample).
        valid_rows: validation rows used for every accuracy.
        pilot_rows: training rows of the pilot fine-tuning.
        pilot_epochs: epochs of each pilot run.
        search_trials: trials of the search whose cost is estimated.
        search_epochs: epochs per trial of that search.
        batch_size: training batch size, for the pilot and the cost.
        device: "auto", "cpu", "cuda" or "mps".
        seed: seed of the samples and the pilot.
        cache_dir: folder of the feature cache the search reads (default $FINETUNE_ADVISOR_CACHE or
            ~/.cache/finetune-advisor): the pooled features of the sample are kept there, so a
            head fitted afterwards embeds only the other rows; "" keeps nothing.
    """

    min_gain: float = 0.01
    target_accuracy: float | None = None
    budget_seconds: float | None = None
    gpu_hourly_cost: float | None = None
    max_unk_rate: float = 0.05
    label_descriptions: str | None = None
    reference: str | None = None
    unlabeled: str | None = None
    max_length: int = 128
    sample_rows: int = 500
    valid_rows: int = 300
    pilot_rows: int = 200
    pilot_epochs: int = 3
    search_trials: int = DEFAULT_TRIALS
    search_epochs: int = 3
    batch_size: int = 16
    device: str = "auto"
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self):
        checks = [
            (0 <= self.min_gain < 1, f"--min-gain {self.min_gain} must be in [0, 1) (absolute accuracy, e.g. 0.01)."),
            (self.target_accuracy is None or 0 < self.target_accuracy <= 1,
             f"--target-accuracy {self.target_accuracy} must be in (0, 1]."),
            (self.budget_seconds is None or self.budget_seconds > 0, f"--budget-seconds {self.budget_seconds} must be > 0."),
            (self.gpu_hourly_cost is None or self.gpu_hourly_cost >= 0,
             f"--gpu-hourly-cost {self.gpu_hourly_cost} must be >= 0."),
            (self.sample_rows >= 10, f"sample_rows {self.sample_rows} must be >= 10."),
            (self.valid_rows >= 10, f"valid_rows {self.valid_rows} must be >= 10."),
            (self.pilot_rows >= 10, f"pilot_rows {self.pilot_rows} must be >= 10."),
            (self.pilot_epochs >= 1, f"pilot_epochs {self.pilot_epochs} must be >= 1."),
            (self.max_length >= 8, f"--max-length {self.max_length} must be >= 8."),
        ]
        InputError.check(checks)


def read_inputs(task: TaskData, config: AdvisorConfig) -> dict:
    """Read the optional files, checking them all before any model work.

    Raises:
        InputError: a missing or empty file, bad JSON, or label descriptions that miss labels.
    """
    if task.modality == "image":
        return _read_image_inputs(task, config)
    problems, out = [], {"descriptions": None, "unlabeled": None}

    def lines(flag, path):
        p = Path(path)
        if not p.is_file():
            problems.append(f"{flag} file '{path}' does not exist.")
            return None
        rows = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if not rows:
            problems.append(f"{flag} file '{path}' is empty: give one text per line.")
        return rows

    out["reference"] = lines("--reference", config.reference or REFERENCE_FILE)
    if config.unlabeled:
        out["unlabeled"] = lines("--unlabeled", config.unlabeled)
    out["descriptions"] = _read_descriptions(config.label_descriptions, task, problems)
    if problems:
        raise InputError(problems)
    return out


def _read_descriptions(given: str | None, task: TaskData, problems: list[str]) -> dict | None:
    """--label-descriptions: a JSON object {label: sentence} naming every label (None when not given)."""
    if not given:
        return None
    path = Path(given)
    if not path.is_file():
        problems.append(f"--label-descriptions file '{path}' does not exist.")
        return None
    try:
        descriptions = {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError) as e:
        problems.append(f"--label-descriptions '{path}' is not a JSON object {{label: sentence}}: {e}.")
        return None
    missing = [label for label in task.labels if label not in descriptions]
    if missing:
        example = (_signals.IMAGE_TEXT_TEMPLATE if task.modality == "image" else _signals.EMBEDDING_TEMPLATE)
        problems.append(f"--label-descriptions '{path}' has no sentence for label(s) "
                        f"{', '.join(map(repr, missing))}. Add them, e.g. "
                        f"\"{missing[0]}\": \"{example.format(missing[0])}\"")
    return descriptions


def _read_image_inputs(task: TaskData, config: AdvisorConfig) -> dict:
    """--reference and --unlabeled for an image task: a folder of images (searched recursively) or a
    file listing image paths, one a line (relative to the file's folder); the first
    `_SHIFT_ROWS` are used and must decode. --label-descriptions as for text (the prompts of an
    image-text model's zero-shot)."""
    from core._images import IMAGE_SUFFIXES, image_problems, unreadable_message

    problems, out = [], {"descriptions": None, "reference": None, "unlabeled": None}
    out["descriptions"] = _read_descriptions(config.label_descriptions, task, problems)
    for key, flag in (("reference", "--reference"), ("unlabeled", "--unlabeled")):
        given = getattr(config, key)
        if not given:
            continue
        path = Path(given)
        if path.is_dir():
            paths = sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths = [str((path.parent / line.strip()).resolve()) for line in
                     path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        else:
            problems.append(f"{flag} '{given}' does not exist: give a folder of images or a file of image paths.")
            continue
        paths = paths[:_SHIFT_ROWS]
        if not paths:
            problems.append(f"{flag} '{given}' holds no images ({', '.join(IMAGE_SUFFIXES)}).")
            continue
        found = image_problems(paths)
        if any(found):
            problems.append(f"{flag} '{given}': {unreadable_message(found)}.")
        out[key] = paths
    if problems:
        raise InputError(problems)
    return out


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
    from core import FeatureCache, resolve_device

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
    train_s = _sample(task.train, config.sample_rows, rng)
    valid_s = _sample(task.valid, config.valid_rows, rng)
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
    if task.modality == "text":  # a model that reads characters, for comparison (decide's change-model rule)
        texts = {name: [f"{t}\n{p}" for t, p in zip(s.texts, s.pairs)] if s.pairs else
                 _signals.visible_text(backbone.tokenizer, s.texts, config.max_length) for name, s in samples}
        ngram, probe["ngram_C"] = _signals.ngram_predictions(texts["train"], ty, texts["valid"], seed=config.seed)
        probe["ngram_accuracy"] = float(np.mean(ngram == vy))
        probe["ngram_p_value"] = _scores.mcnemar_p_value(ngram == vy, predicted["last"][0] == vy)
        probe["ngram_method"] = "character 2-5-gram TF-IDF + linear SVM (no pretraining)"
    else:
        skipped.append("n-gram model: the character n-gram model compared against is for text; images have none.")

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
    say("timing training steps")
    embed_row = steps["embedding"] / (len(train_s) + len(valid_s))
    cost = _cost(backbone, task, train_s, valid_s, config, expected.get("suggested_unfrozen_layers"), device, timings,
                 embed_row)
    lap("cost")

    # 8) decision
    chance = float(np.bincount(vy).max() / len(vy))
    signals = Signals.from_advice({"chance_accuracy": chance, "zero_shot": zero_shot, "probe": probe,
                                   "expected": expected, "shift": shift, "cost": cost})
    decision, reasons = decide(signals, min_gain=config.min_gain, target_accuracy=config.target_accuracy,
                               budget_seconds=config.budget_seconds, max_unk_rate=config.max_unk_rate)
    record = AdviceRecord(
        decision=decision, reasons=reasons, zero_shot=zero_shot, probe=probe, shift=shift, expected=expected,
        cost=cost, advisor_seconds=time.perf_counter() - t_start, chance_accuracy=chance,
        thresholds=thresholds(chance, min_gain=config.min_gain, target_accuracy=config.target_accuracy,
                              budget_seconds=config.budget_seconds, max_unk_rate=config.max_unk_rate),
        data_fingerprint=task.fingerprint, skipped=skipped,
        extra={"model": backbone.name, "num_blocks": backbone.num_blocks, "config": asdict(config),
               "step_seconds": steps})
    if run_dir is not None:
        record.write(run_dir)
    return record


def _sample(split: Split, n: int, rng) -> Split:
    """A stratified sample of about n rows (the split itself when it is smaller)."""
    return split if len(split) <= n else split.subset(_sample_indices(split, n, rng))


def _sample_indices(split: Split, n: int, rng) -> np.ndarray:
    """Row indices of a stratified sample of about n rows, at least 2 a class (all rows when fewer)."""
    if len(split) <= n:
        return np.arange(len(split))
    return stratified_indices(split.labels, n / len(split), rng, min_per_class=2)


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
    from core._images import image_stats

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
    from core import TrainConfig, train

    from . import _forecast

    if backbone.num_blocks < 1:
        skipped.append("pilot: the model has no blocks to fine-tune.")
        return {}, {}
    rows = _sample_indices(train_s, config.pilot_rows, np.random.default_rng(config.seed + 1))
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
    calibration = _forecast.load_calibration()
    expected, half = _forecast.calibrate(raw, probe["accuracy"], len(task.valid), calibration)
    k = int(best_k)
    return {"fine_tune_accuracy": expected, "uncertainty": half, "interval": "80%",
            "gain_over_probe": expected - probe["accuracy"], "raw_fine_tune_accuracy": raw,
            "pilot_accuracy": accuracies, "pilot_probe_accuracy": probe_pilot, "pilot_rows": len(pilot),
            "pilot_method": "LP-FT: fine-tuned from the probe's head", "error_exponent": exponent,
            "calibration": {key: calibration.get(key) for key in ("scale", "offset", "sd", "half_width", "tasks")},
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
    suggested k + one cache per k.
    """
    from core import TrainConfig, train

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
    search = (config.search_trials * config.search_epochs * float(np.mean([per_epoch[k] for k in chosen]))
              + sum(cache[k] for k in chosen))
    record = {"device": str(device), "per_epoch_seconds": per_epoch, "cache_seconds": cache,
              "search_seconds": search, "search": {"trials": config.search_trials, "epochs": config.search_epochs,
                                                   "unfrozen_layers": [lo, hi]}}
    if config.gpu_hourly_cost is not None:
        record["search_cost"] = search / 3600 * config.gpu_hourly_cost
    return record
