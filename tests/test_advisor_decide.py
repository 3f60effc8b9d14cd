"""The decision rule on hand-made signal values."""

from __future__ import annotations

import pytest

from finetune_advisor.advisor import Signals, decide

BASE = dict(chance=0.25, zero_shot=0.40, probe=0.80, expected_fine_tune=0.90, unk_rate=0.0, search_seconds=600,
            suggested_layers=(1, 3))

CASES = [
    # (name, signal changes, decide kwargs, decision, words in the reasons)
    ("fine-tune pays", {}, {}, "fine-tune", ["0.900", "+0.100", "top 1-3 blocks", "600 s"]),
    ("gain below min_gain", {"expected_fine_tune": 0.805}, {}, "head-only", ["+0.005", "minimum gain 0.010"]),
    ("gain below a larger min_gain", {}, {"min_gain": 0.2}, "head-only", ["minimum gain 0.200"]),
    ("over budget", {}, {"budget_seconds": 100}, "head-only", ["600 s", "budget of 100 s"]),
    ("probe reaches target", {}, {"target_accuracy": 0.75}, "head-only", ["0.800", "target 0.750"]),
    ("no pilot", {"expected_fine_tune": None}, {}, "head-only", ["No fine-tuning estimate", "0.800"]),
    ("zero-shot as good", {"zero_shot": 0.895}, {}, "zero-shot", ["0.895", "0.900"]),
    ("zero-shot reaches target", {"zero_shot": 0.7}, {"target_accuracy": 0.7}, "zero-shot", ["0.700", "target"]),
    ("unknown tokens", {"unk_rate": 0.2}, {}, "change-model", ["20.0%", "unknown token"]),
    ("near chance", {"zero_shot": 0.26, "probe": 0.28, "expected_fine_tune": 0.29}, {}, "change-model",
     ["0.290", "0.250", "near chance"]),
    ("no zero-shot", {"zero_shot": None}, {}, "fine-tune", ["0.900"]),
    ("lower layers know more", {"probe_layer_average": 0.86}, {}, "fine-tune", ["0.860", "+0.060", "lower layers"]),
    ("gain within the uncertainty", {"fine_tune_uncertainty": 0.15}, {}, "fine-tune",
     ["+0.100", "within the estimate's uncertainty (±0.150)"]),
    # the n-gram model beats the probe beyond noise and the top of the forecast (0.90 + 0.05)
    ("n-grams read it better", {"baseline": 0.98, "baseline_p_value": 0.001, "fine_tune_uncertainty": 0.05}, {},
     "change-model", ["0.980", "+0.180", "0.800", "McNemar p = 0.001", "0.950", "no pretraining"]),
    ("n-grams better within noise", {"baseline": 0.98, "baseline_p_value": 0.2}, {}, "fine-tune", ["0.900"]),
    # beyond noise against the probe, but inside what fine-tuning may reach
    ("n-grams inside the forecast", {"baseline": 0.94, "baseline_p_value": 0.001, "fine_tune_uncertainty": 0.05}, {},
     "fine-tune", ["0.900"]),
    ("n-grams better, no pilot", {"baseline": 0.95, "baseline_p_value": 0.001, "expected_fine_tune": None}, {},
     "change-model", ["0.950", "+0.150"]),
    ("n-grams no better", {"baseline": 0.805, "baseline_p_value": 0.4}, {}, "fine-tune", ["0.900"]),
]


def test_a_gain_clear_of_its_uncertainty_adds_no_caveat():
    _, reasons = decide(Signals(**{**BASE, "fine_tune_uncertainty": 0.05}))
    assert not any("uncertainty" in r for r in reasons)


def test_a_layer_average_no_better_than_the_last_layer_adds_no_reason():
    _, reasons = decide(Signals(**{**BASE, "probe_layer_average": 0.805}))
    assert not any("lower layers" in r for r in reasons)


@pytest.mark.parametrize("name,changes,kwargs,decision,words", CASES, ids=[c[0] for c in CASES])
def test_decision_table(name, changes, kwargs, decision, words):
    got, reasons = decide(Signals(**{**BASE, **changes}), **kwargs)
    assert got == decision
    text = " ".join(reasons)
    assert all(w in text for w in words), text


def test_a_small_validation_sample_says_how_much_is_noise():
    """40 rows: one row is 0.025; the probe's 0.800 has se 0.063 (Agresti-Coull: p~ = 33.92 / 43.84
    = 0.774, sqrt(p~ (1 - p~) / 43.84)); two models differ by noise up to 2 sqrt(2) 0.063 = 0.179,
    above the minimum gain."""
    decision, reasons = decide(Signals(**{**BASE, "valid_rows": 40}))
    assert decision == "fine-tune"
    assert reasons[-1].startswith("The validation sample has 40 rows: one row moves accuracy by 0.025, the probe's "
                                  "0.800 has a standard error of 0.063, and differences under about 0.179")
    assert "(the minimum gain 0.010 is smaller)" in reasons[-1]
    _, reasons = decide(Signals(**{**BASE, "valid_rows": 300}))
    assert not any("validation sample" in r for r in reasons)


@pytest.mark.parametrize("accuracy, rows, se", [(0.9, 100, 0.031282), (0.5, 25, 0.093102), (1.0, 40, 0.030911),
                                                 (0.9, 100_000, 0.000949), (None, 40, None), (0.8, 0, None)])
def test_the_standard_error_of_an_accuracy(accuracy, rows, se):
    from finetune_advisor.advisor import standard_error

    assert standard_error(accuracy, rows) == (None if se is None else pytest.approx(se, abs=1e-6))
