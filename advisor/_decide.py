"""The decision: zero-shot, head-only, fine-tune or change-model, from measured signals.

The rule, in order (the first that applies wins):

1. change-model: the tokenizer cannot represent the data (unknown-token rate above
   `max_unk_rate`, default 5%); or every accuracy signal sits near chance: the best of
   zero-shot, probe and expected fine-tuned accuracy is less than 10% of the way from the
   majority-class rate to 1; or a model with no pretraining reads the data clearly better: the
   baseline (text: character n-grams + a linear SVM, advisor/_signals.py) beats the measured
   best (zero-shot, probe) by more than `min_gain`, beats the probe beyond noise on the same
   validation rows (one-sided exact McNemar test, p < `BASELINE_ALPHA`; advisor/_scores.py), and
   beats the top of the fine-tuned forecast's interval (expected + its uncertainty, at least
   `min_gain` above the expected): what fine-tuning would reach in its good case.
2. zero-shot: zero-shot accuracy reaches `target_accuracy`, or training buys less than
   `min_gain`: zero-shot >= max(probe, expected fine-tuned) - min_gain.
3. head-only: the probe reaches `target_accuracy`; or fine-tuning is expected to beat the probe
   by less than `min_gain` (default 0.01 absolute accuracy); or no fine-tuning estimate could be
   made (too little data for a pilot); or the search would cost more than `budget_seconds`.
4. fine-tune: otherwise; the top k blocks, k in the suggested range.

"The probe" is the probe on what a head-only model is trained on: the last layer, with the
model's pooling. When a probe on the average of all layers beats it by `min_gain` or more, a
reason says so (the task lives in lower layers, which fine-tuning the top blocks can reach);
it informs, it does not change the decision. Likewise when the expected gain is smaller than the
estimate's uncertainty: the advice stays fine-tune (the gain passed `min_gain`) and a reason says
the gain is not sure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core._data import MIN_VALID_ROWS

NEAR_CHANCE = 0.10
SMALL_VALID = MIN_VALID_ROWS  # validation rows under which one row moves accuracy by half a point or more
BASELINE_ALPHA = 0.05  # McNemar's level for "the model without pretraining beats the probe"


@dataclass(frozen=True)
class Signals:
    """The numbers the decision reads (accuracies are fractions of the validation rows)."""

    chance: float
    zero_shot: float | None
    probe: float
    expected_fine_tune: float | None
    unk_rate: float
    search_seconds: float | None = None
    suggested_layers: tuple[int, int] | None = None
    probe_layer_average: float | None = None
    fine_tune_uncertainty: float | None = None
    baseline: float | None = None
    valid_rows: int | None = None
    baseline_p_value: float | None = None
    baseline_method: str = "a model with no pretraining"
    scored_rows: int | None = None  # rows the accuracies were measured on (all sampled rows when cross-validated)
    cv_folds: int | None = None

    @classmethod
    def from_advice(cls, advice) -> "Signals":
        """The signals of an advice record (`core.AdviceRecord`: chance_accuracy, zero_shot, probe,
        expected, shift, cost)."""
        probe, expected = advice.probe, advice.expected
        layers = expected.suggested_unfrozen_layers
        return cls(advice.chance_accuracy, advice.zero_shot.accuracy, probe.accuracy, expected.fine_tune_accuracy,
                   advice.shift.unk_rate or 0.0, advice.cost.search_seconds, tuple(layers) if layers else None,
                   probe.accuracy_layer_average, expected.uncertainty, probe.baseline_accuracy, probe.valid_rows,
                   probe.baseline_p_value, probe.baseline_method or cls.baseline_method,
                   probe.scored_rows or probe.valid_rows, probe.cv_folds)


def thresholds(chance: float, *, min_gain: float = 0.01, target_accuracy: float | None = None,
               budget_seconds: float | None = None, max_unk_rate: float = 0.05) -> dict:
    """The numbers the rule compares against, for advice.json (so readers need not know the rule)."""
    return {"near_chance": NEAR_CHANCE, "near_chance_floor": chance + NEAR_CHANCE * (1 - chance),
            "max_unk_rate": max_unk_rate, "min_gain": min_gain, "target_accuracy": target_accuracy,
            "budget_seconds": budget_seconds}


Z95 = 1.96


def standard_error(accuracy: float | None, rows: int | None) -> float | None:
    """The binomial standard error of an accuracy p measured on n = `rows` independent rows, in
    Agresti and Coull's form ("Approximate is better than 'exact' for interval estimation of
    binomial proportions", The American Statistician 52(2), 1998): with z = 1.96,
    p~ = (p n + z^2 / 2) / (n + z^2) and se = sqrt(p~ (1 - p~) / (n + z^2)). It is the Wald
    sqrt(p (1 - p) / n) for many rows, but never 0: 40 of 40 right is not a certain 1.000 (se
    0.031). None when either is unknown."""
    if accuracy is None or not rows:
        return None
    n = rows + Z95 ** 2
    p = (accuracy * rows + Z95 ** 2 / 2) / n
    return (p * (1 - p) / n) ** 0.5


def decide(s: Signals, *, min_gain: float = 0.01, target_accuracy: float | None = None,
           budget_seconds: float | None = None, max_unk_rate: float = 0.05) -> tuple[str, list[str]]:
    """Apply the rule of this module's docstring; on a small validation sample (under SMALL_VALID
    rows) a last reason says how much of what was compared is noise.

    Returns:
        (decision, reasons): reasons are sentences, each carrying the number behind it.
    """
    decision, reasons = _rule(s, min_gain=min_gain, target_accuracy=target_accuracy, budget_seconds=budget_seconds,
                              max_unk_rate=max_unk_rate)
    if s.valid_rows and s.valid_rows < SMALL_VALID:
        rows = s.scored_rows or s.valid_rows
        se = standard_error(s.probe, rows)
        noise = 2 * (2 ** 0.5) * se  # two standard errors of a difference of two such accuracies
        where = (f"The validation sample has {s.valid_rows} rows, so the probes and the baseline were "
                 f"cross-validated ({s.cv_folds} folds) over all {rows} sampled rows" if s.cv_folds else
                 f"The validation sample has {s.valid_rows} rows")
        reasons.append(f"{where}: one row moves accuracy by "
                       f"{1 / rows:.3f}, the probe's {s.probe:.3f} has a standard error of {se:.3f}, and "
                       f"differences under about {noise:.3f} between two models are within the noise"
                       f"{' (the minimum gain ' + format(min_gain, '.3f') + ' is smaller)' if min_gain < noise else ''}. "
                       "More validation rows (--valid FILE) make the decision surer.")
    return decision, reasons


def _rule(s: Signals, *, min_gain: float, target_accuracy: float | None, budget_seconds: float | None,
          max_unk_rate: float) -> tuple[str, list[str]]:
    zs = s.zero_shot if s.zero_shot is not None else 0.0
    ft = s.expected_fine_tune
    best = max(zs, s.probe, ft if ft is not None else 0.0)
    floor = thresholds(s.chance)["near_chance_floor"]
    if s.unk_rate > max_unk_rate:
        return "change-model", [f"The tokenizer maps {s.unk_rate:.1%} of the data's tokens to the unknown token "
                                f"(limit {max_unk_rate:.0%}): this model cannot read the data. Pick a model whose "
                                "vocabulary covers its language and symbols."]
    if best < floor:
        return "change-model", [f"Every signal sits near chance: the best accuracy is {best:.3f} against "
                                f"{s.chance:.3f} for always answering the most common class (needed: {floor:.3f}). "
                                "This model's features do not carry the task; pick another model."]
    if s.baseline is not None and s.baseline_p_value is not None:
        measured = max(zs, s.probe)
        top = ft + max(s.fine_tune_uncertainty or 0.0, min_gain) if ft is not None else measured
        if s.baseline - measured > min_gain and s.baseline_p_value < BASELINE_ALPHA and s.baseline > top:
            tuned = (f" and the top of fine-tuning's forecast, {top:.3f}" if ft is not None else "")
            return "change-model", [f"A model with no pretraining ({s.baseline_method}) reaches "
                                    f"{s.baseline:.3f}, {s.baseline - measured:+.3f} over the best this model measured, "
                                    f"{measured:.3f} (McNemar p = {s.baseline_p_value:.3g} on the same rows){tuned}: "
                                    "this model loses what the task needs. Pick a model pretrained on data like this, "
                                    "or use the model without pretraining."]

    reasons = []
    if s.zero_shot is not None:
        if target_accuracy is not None and zs >= target_accuracy:
            return "zero-shot", [f"Zero-shot accuracy {zs:.3f} already reaches the target {target_accuracy:.3f}: "
                                 "no training needed."]
        trained = max(s.probe, ft if ft is not None else 0.0)
        if zs >= trained - min_gain:
            return "zero-shot", [f"Zero-shot accuracy {zs:.3f} is within {min_gain:.3f} of the best trained "
                                 f"estimate {trained:.3f}: training is not worth it."]
        reasons.append(f"Training pays: zero-shot accuracy is {zs:.3f}, a probe on frozen features reaches "
                       f"{s.probe:.3f}.")

    if target_accuracy is not None and s.probe >= target_accuracy:
        return "head-only", reasons + [f"A head on frozen features reaches {s.probe:.3f}, above the target "
                                       f"{target_accuracy:.3f}: fine-tuning the backbone is not needed."]
    if ft is None:
        return "head-only", reasons + ["No fine-tuning estimate could be made (too little data for a pilot), so "
                                       f"the advice is the measured probe, {s.probe:.3f}."]
    if s.probe_layer_average is not None and s.probe_layer_average - s.probe >= min_gain:
        reasons.append(f"A probe on the average of all layers reaches {s.probe_layer_average:.3f}, "
                       f"{s.probe_layer_average - s.probe:+.3f} over the last layer's {s.probe:.3f}: the task lives "
                       "partly in lower layers, which only fine-tuning brings up to the head.")
    gain = ft - s.probe
    if gain < min_gain:
        return "head-only", reasons + [f"Fine-tuning is expected to reach {ft:.3f}, {gain:+.3f} against the probe's "
                                       f"{s.probe:.3f}: less than the minimum gain {min_gain:.3f}."]
    if budget_seconds is not None and s.search_seconds is not None and s.search_seconds > budget_seconds:
        return "head-only", reasons + [f"Fine-tuning would gain {gain:+.3f}, but its search is estimated at "
                                       f"{s.search_seconds:.0f} s, over the budget of {budget_seconds:.0f} s."]
    layers = f" Unfreeze the top {s.suggested_layers[0]}-{s.suggested_layers[1]} blocks." if s.suggested_layers else ""
    cost = f" The search is estimated at {s.search_seconds:.0f} s." if s.search_seconds is not None else ""
    reasons.append(f"Fine-tuning is expected to reach {ft:.3f}, {gain:+.3f} over the probe's "
                   f"{s.probe:.3f} (minimum gain {min_gain:.3f}).{layers}{cost}")
    if s.fine_tune_uncertainty is not None and gain < s.fine_tune_uncertainty:
        reasons.append(f"The gain {gain:+.3f} is within the estimate's uncertainty (±{s.fine_tune_uncertainty:.3f}): "
                       "more validation rows would make it sure; the search's first trials will tell.")
    return "fine-tune", reasons
