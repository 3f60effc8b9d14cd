"""The fine-tuned accuracy forecast (advisor/_forecast.py) on curves and tasks whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetune_advisor.advisor import _forecast


def test_the_error_exponent_of_a_power_law_curve_is_recovered():
    # err(n) = 2 n^-0.4 on 100, 200, 400 rows (fractions of 400)
    curve = {f"{f:.2f}": 1 - 2 * (f * 400) ** -0.4 for f in (0.25, 0.5, 1.0)}
    assert _forecast.error_exponent(curve, 400, 1000) == pytest.approx(0.4, abs=1e-9)


def test_a_flat_or_rising_error_gives_no_gain_from_more_rows():
    assert _forecast.error_exponent({"0.25": 0.8, "0.50": 0.8, "1.00": 0.8}, 400, 100) == pytest.approx(0.0, abs=1e-9)
    assert _forecast.error_exponent({"0.25": 0.9, "0.50": 0.8, "1.00": 0.7}, 400, 100) == 0.0
    # a perfect probe at every size: errors clipped to half a validation row, flat
    assert _forecast.error_exponent({"0.25": 1.0, "0.50": 1.0, "1.00": 1.0}, 400, 100) == pytest.approx(0.0, abs=1e-9)


def test_scaling_to_more_rows_follows_the_power_law():
    # error 0.2 on 100 rows, exponent 0.5: on 400 rows the error halves
    assert _forecast.scale_to_rows(0.8, 100, 400, 0.5) == pytest.approx(0.9)
    assert _forecast.scale_to_rows(0.8, 100, 100, 0.5) == pytest.approx(0.8)
    assert _forecast.scale_to_rows(0.8, 100, 400, 0.0) == pytest.approx(0.8)
    # carried at most tenfold: 100 -> 100,000 rows counts as 100 -> 1,000
    assert _forecast.scale_to_rows(0.8, 100, 100_000, 0.5) == pytest.approx(1 - 0.2 * 10 ** -0.5)


def test_carry_removes_the_pilots_share_of_the_probes_errors_at_the_tasks_rows():
    # the pilot halves the errors of the probe on its own rows (0.2 -> 0.1); the probe, error 0.3
    # on 100 rows with exponent 0.5, has error 0.15 on 400 rows: fine-tuned, half of that
    assert _forecast.carry(0.9, 0.8, 0.7, 100, 400, 0.5, 1000) == pytest.approx(1 - 0.5 * 0.15)
    # a pilot no better than its probe forecasts the carried probe; a worse one, below it
    assert _forecast.carry(0.8, 0.8, 0.7, 100, 400, 0.5, 1000) == pytest.approx(0.85)
    assert _forecast.carry(0.6, 0.8, 0.7, 100, 400, 0.5, 1000) < 0.85
    # a perfect pilot counts half a validation row of error, not none
    assert _forecast.carry(1.0, 0.8, 0.7, 100, 100, 0.0, 100) == pytest.approx(1 - 0.005 / 0.2 * 0.3)


def test_the_fit_recovers_a_known_scale_and_the_interval_covers_80_percent():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(400):
        probe, gain = rng.uniform(0.5, 0.8), rng.uniform(-0.05, 0.15)
        truth = probe + 1.5 * gain
        rows.append({"raw": probe + gain, "probe": probe, "valid_rows": 10**6,
                     "measured": truth + rng.normal(0, 0.03)})
    fitted = _forecast.fit(rows)
    assert fitted["scale"] == pytest.approx(1.5, abs=0.1)
    assert fitted["sd"] == pytest.approx(0.03, abs=0.005)
    forecasts = [_forecast.calibrate(r["raw"], r["probe"], r["valid_rows"], fitted) for r in rows]
    inside = [abs(p - r["measured"]) <= half for (p, half), r in zip(forecasts, rows)]
    assert np.mean(inside) == pytest.approx(0.8, abs=0.05)


def test_a_pilot_that_saw_no_gain_forecasts_none_whatever_the_suite():
    """The calibration scales the pilot's gain over the probe; it adds nothing of its own. On a
    suite where fine-tuning beat every pilot by 3 points, a new task whose pilot matched its probe
    is still forecast at the probe: 3 points of suite-wide bias must not push a task the pilot
    saw nothing on past the minimum gain."""
    rows = [{"raw": p + g, "probe": p, "valid_rows": 200, "measured": p + g + 0.03}
            for p, g in [(0.6, 0.05), (0.7, 0.1), (0.8, 0.02), (0.65, 0.08), (0.75, 0.0)]]
    fitted = _forecast.fit(rows)
    assert fitted["scale"] > 1
    assert _forecast.calibrate(0.72, 0.72, 200, fitted)[0] == pytest.approx(0.72)
    assert _forecast.calibrate(0.77, 0.72, 200, fitted)[0] > 0.77


@pytest.mark.parametrize("noise", ["student-t3", "uniform"])
def test_the_interval_of_an_11_task_suite_covers_80_percent_of_new_tasks(noise):
    """Averaged over many suites of 11 tasks (the benchmark's size), a new task lands inside the
    80% interval 80% of the time: not less (overconfident), and not much more (wider than it need
    be), whether the residuals are heavy-tailed or flat."""
    rng = np.random.default_rng(1)

    def tasks(n):
        probe, gain = rng.uniform(0.5, 0.8, n), rng.uniform(-0.05, 0.15, n)
        error = 0.02 * rng.standard_t(3, n) if noise == "student-t3" else rng.uniform(-0.05, 0.05, n)
        return [{"raw": p + g, "probe": p, "valid_rows": 120, "measured": float(np.clip(p + g + e, 0, 1))}
                for p, g, e in zip(probe, gain, error)]

    coverage = []
    for _ in range(100):
        fitted = _forecast.fit(tasks(11))
        assert fitted["interval_method"] == "conformal, leave one task out"
        forecasts = [(r["measured"], *_forecast.calibrate(r["raw"], r["probe"], 120, fitted)) for r in tasks(200)]
        coverage.append(np.mean([abs(m - p) <= half for m, p, half in forecasts]))
    assert 0.78 <= np.mean(coverage) <= 0.86


def test_under_four_tasks_the_interval_is_normal():
    rows = [{"raw": 0.7, "probe": 0.6, "measured": 0.75, "valid_rows": 100},
            {"raw": 0.85, "probe": 0.8, "measured": 0.9, "valid_rows": 100},
            {"raw": 0.6, "probe": 0.6, "measured": 0.58, "valid_rows": 100}]
    fitted = _forecast.fit(rows)
    assert fitted["half_width"] is None and fitted["interval_method"] == "normal"
    p, half = _forecast.calibrate(0.7, 0.6, 100, fitted)
    assert half == pytest.approx(1.2816 * np.sqrt(p * (1 - p) / 100 + fitted["sd"] ** 2))


def test_few_tasks_are_shrunk_towards_the_raw_forecast():
    # two tasks that alone would ask for a scale of 3 move it only part of the way
    rows = [{"raw": 0.7, "probe": 0.6, "measured": 0.9, "valid_rows": 100},
            {"raw": 0.85, "probe": 0.8, "measured": 0.95, "valid_rows": 100}]
    fitted = _forecast.fit(rows)
    assert 1.0 < fitted["scale"] < 3.0


def test_the_calibration_file_is_read_and_its_absence_is_the_identity(tmp_path):
    assert _forecast.load_calibration(tmp_path / "none.json")["scale"] == 1.0
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps({"scale": 1.2, "sd": 0.02, "tasks": 11}))
    calibration = _forecast.load_calibration(path)
    forecast, half = _forecast.calibrate(0.8, 0.7, 100, calibration)
    assert forecast == pytest.approx(0.7 + 1.2 * 0.1)
    assert half == pytest.approx(1.2816 * np.sqrt(forecast * (1 - forecast) / 100 + 0.02 ** 2))


def test_fewer_validation_rows_than_the_suite_had_widen_the_interval_by_their_noise():
    from finetune_advisor.advisor._forecast import Z80, calibrate

    calibration = {"scale": 1.0, "half_width": 0.03, "z": Z80, "valid_rows": 200}
    p, half = calibrate(0.8, 0.75, 40, calibration)  # 40 validation rows: one row is 2.5 points
    assert p == pytest.approx(0.8)
    assert half == pytest.approx((0.03 ** 2 + Z80 ** 2 * 0.8 * 0.2 * (1 / 40 - 1 / 200)) ** 0.5)
    assert calibrate(0.8, 0.75, 200, calibration)[1] == pytest.approx(0.03)  # as many rows as the suite: its quantile
    assert calibrate(0.8, 0.75, 5000, calibration)[1] == pytest.approx(0.03)  # more rows never narrow it
    assert _forecast.fit([{"raw": 0.7, "probe": 0.6, "measured": 0.7, "valid_rows": n} for n in (50, 100, 300)])[
        "valid_rows"] == 100
