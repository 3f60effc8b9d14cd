"""The forecast of fine-tuned accuracy, with its interval, from the pilot. numpy only.

1. Pilot (advisor/_advise.py `_pilot`): LP-FT runs at a few k on `n_pilot` rows; its best
   accuracy `a_pilot`, beside `a_pilot_probe`, the probe fitted on the same rows (the head the
   pilot starts from), both scored on the same validation rows.
2. Rows: fine-tuning is taken to remove the same share of the probe's errors at every training
   size, r = err_pilot / err_pilot_probe (measured where both saw the same rows; an error of 0
   counts as half a validation row). The probe itself, fitted on `n_probe` rows, is carried to
   the task's `n_train` rows along its learning curve, a power law err(n) = b n^-c (Hestness et
   al., "Deep Learning Scaling is Predictable, Empirically", arXiv:1712.00409, 2017; Figueroa et
   al., "Predicting sample size required for classification performance", BMC Med. Inform.
   Decis. Mak. 12:8, 2012), c fitted on the probe's 25/50/100% curve (free: its features are
   cached):

       raw = 1 - r (1 - a_probe) min(n_train / n_probe, 10)^-c          (`carry`, `scale_to_rows`)

   A curve measured over a fourfold range of rows is carried at most tenfold: past that, the
   error's floor (label noise, ambiguity), which a pure power law lacks, would dominate. On the
   suite's pilots this ratio form beat carrying the pilot's own accuracy along the probe's
   exponent (leave-one-task-out mean absolute error 0.028 against 0.032, interval half-width
   0.044 against 0.068): the pilot's 200 rows and the probe's 500 are no longer compared as if
   they were the same size.

3. Calibration across tasks: the pilot's few rows and epochs bias the raw gain over the probe;
   its scale is fitted on the advisor suite's measured fine-tuned accuracies, per modality
   (benchmarks/advisor_suite.py into forecast.json, benchmarks/advisor_suite_images.py into
   forecast_image.json; validated leave-one-task-out):

       forecast = clip(probe + scale (raw - probe), 0, 1)               (`calibrate`)

   A line through the origin: a pilot that saw no gain forecasts none. An added offset (fitted on
   the suites at -0.004 for text, +0.009 for images) moved every forecast by the same amount, so
   a pilot gain of 0 crossed the minimum gain 0.01 on an offset alone; leave one task out, the
   offset-free line decided 9/10 image tasks against 8/10 and erred less on both suites (median
   0.013 against 0.015 on text, 0.011 against 0.012 on images).
   The fitted scale ships only where, leave one task out, it erred less and decided no worse
   than the raw forecast (scale 1, its interval still fitted; benchmarks/advisor_suite.py
   `calibrate_suite`): on images it did (median error 0.011 against 0.016), on text the raw
   forecast won (0.010 against 0.013), so text ships scale 1.

4. Interval: forecast ± q, q the conformal quantile of the suite's leave-one-task-out absolute
   errors, the ceil(0.8 (n + 1))-th smallest of the n (the jackknife interval: Barber, Candes,
   Ramdas & Tibshirani, "Predictive inference with the jackknife+", Ann. Statist. 49(1), 2021;
   Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World", 2005): a new task
   exchangeable with the suite's lands inside with probability about 80%, whatever the errors'
   distribution. The errors are not scaled by the binomial noise of the validation rows: the
   pilot and the search are scored on the same rows, so that noise is shared, not added (on the
   suite, the residuals' spread beyond binomial noise came out at zero while the largest errors
   sat on the task with the most validation rows). A task judged on fewer validation rows than
   the suite's median m carries more of that noise than the suite's errors held, so its interval
   widens by it: ± sqrt(q^2 + 1.2816^2 p (1 - p) (1 / n_valid - 1 / m)) for n_valid < m (on 40
   rows one row is 2.5 points). Under 4 tasks no such quantile exists and the interval is normal:
   ± 1.2816 sqrt(p (1 - p) / n_valid + sd^2), sd the residuals' spread beyond binomial noise (`fit`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CALIBRATION_FILE = Path(__file__).with_name("forecast.json")  # text: benchmarks/advisor_suite.py
IMAGE_CALIBRATION_FILE = Path(__file__).with_name("forecast_image.json")  # benchmarks/advisor_suite_images.py
MAX_EXTRAPOLATION = 10.0  # the most the rows are multiplied along the power law
Z80 = 1.2816  # two-sided 80% of a normal
# Before any suite is fitted: the raw forecast as it is, and a residual spread of 5 points.
IDENTITY = {"scale": 1.0, "sd": 0.05, "z": Z80, "half_width": None, "tasks": 0}


def error_exponent(curve: dict[str, float], n_rows: int, n_valid: int) -> float:
    """c of err(n) = b n^-c, least squares on log err against log n over the probe's learning curve
    ({fraction of n_rows: accuracy}); an error of 0 counts as half a validation row. Clipped to
    [0, 1]: more rows never hurt, and no curve falls faster than 1/n."""
    points = [(float(f) * n_rows, max(1.0 - a, 0.5 / n_valid)) for f, a in curve.items() if a is not None]
    if len(points) < 2:
        return 0.0
    n, err = np.log(np.array(points)).T
    if np.ptp(n) == 0:
        return 0.0
    slope = np.polyfit(n, err, 1)[0]
    return float(np.clip(-slope, 0.0, 1.0))


def scale_to_rows(accuracy: float, n_from: int, n_to: int, exponent: float) -> float:
    """The accuracy measured on n_from training rows, carried to n_to rows along err ~ n^-exponent
    (at most MAX_EXTRAPOLATION times the rows)."""
    ratio = min(max(n_to, 1) / max(n_from, 1), MAX_EXTRAPOLATION)
    return float(1.0 - (1.0 - accuracy) * ratio ** -exponent)


def carry(pilot: float, pilot_probe: float, probe: float, probe_rows: int, n_train: int, exponent: float,
          n_valid: int) -> float:
    """The raw forecast of the module docstring, 2: the probe carried to `n_train` rows, with the
    share r of its errors that the pilot removed on its own rows removed too."""
    floor = 0.5 / max(n_valid, 1)
    ratio = max(1.0 - pilot, floor) / max(1.0 - pilot_probe, floor)
    return float(np.clip(1.0 - ratio * (1.0 - scale_to_rows(probe, probe_rows, n_train, exponent)), 0.0, 1.0))


def calibration_file(modality: str) -> Path:
    """Each modality is calibrated on its own suite: a text suite's bias says nothing of a CNN's."""
    return IMAGE_CALIBRATION_FILE if modality == "image" else CALIBRATION_FILE


def load_calibration(path: Path = CALIBRATION_FILE) -> dict:
    """The calibration fitted on the suite (IDENTITY when the file is absent)."""
    return {**IDENTITY, **json.loads(path.read_text(encoding="utf-8"))} if path.is_file() else dict(IDENTITY)


def calibrate(raw: float, probe: float, n_valid: int, calibration: dict) -> tuple[float, float]:
    """(forecast, half-width of its 80% interval) for a raw pilot forecast; module docstring, 3-4."""
    p = float(np.clip(probe + calibration["scale"] * (raw - probe), 0.0, 1.0))
    if calibration.get("half_width") is not None:
        suite_rows = calibration.get("valid_rows") or n_valid
        extra = max(0.0, p * (1 - p) * (1 / max(n_valid, 1) - 1 / suite_rows))  # noise the suite's errors lacked
        return p, math.sqrt(float(calibration["half_width"]) ** 2 + calibration.get("z", Z80) ** 2 * extra)
    return p, calibration["z"] * math.sqrt(p * (1 - p) / max(n_valid, 1) + calibration["sd"] ** 2)


def fit(rows: list[dict], *, prior_tasks: float = 2.0, coverage: float = 0.8, scale: float | None = None) -> dict:
    """Fit the scale on tasks {"raw", "probe", "measured", "valid_rows"}: least squares of
    measured - probe on raw - probe through the origin, with a ridge prior worth `prior_tasks`
    tasks that pulls the scale towards 1 (penalty prior_tasks x mean squared raw gain), so a few
    tasks cannot swing it far; or keep `scale` as given (1.0: the raw forecast, only its interval
    fitted). sd = sqrt(max(0, mean squared residual - mean binomial variance)), at least 0.01.
    half_width: the conformal quantile of the leave-one-task-out absolute errors (module
    docstring, 4); None under 4 tasks."""
    fitted, sd = _fit_line(rows, prior_tasks, scale)
    half_width, method = None, "normal"
    if len(rows) >= 4:
        errors = []
        for i, row in enumerate(rows):
            s_i, _ = _fit_line(rows[:i] + rows[i + 1:], prior_tasks, scale)
            p, _ = calibrate(row["raw"], row["probe"], row["valid_rows"], {"scale": s_i, "half_width": 0})
            errors.append(abs(row["measured"] - p))
        rank = math.ceil(coverage * (len(rows) + 1))
        if rank <= len(rows):
            half_width, method = float(np.sort(errors)[rank - 1]), "conformal, leave one task out"
    return {"scale": fitted, "scale_fitted": scale is None, "sd": sd, "z": Z80, "half_width": half_width,
            "interval_method": method, "tasks": len(rows), "valid_rows": float(np.median([r["valid_rows"] for r in rows]))}


def _fit_line(rows: list[dict], prior_tasks: float, scale: float | None = None) -> tuple[float, float]:
    """(scale, sd) of `fit`, without the interval; `scale` given: only sd."""
    gain = np.array([r["raw"] - r["probe"] for r in rows])
    target = np.array([r["measured"] - r["probe"] for r in rows])
    if scale is None:  # minimise |target - gain s|^2 + lam (s - 1)^2
        lam = prior_tasks * max(float(np.mean(gain ** 2)), 1e-4)
        scale = float((gain @ target + lam) / (gain @ gain + lam))
    predicted = np.array([calibrate(r["raw"], r["probe"], r["valid_rows"], {**IDENTITY, "scale": scale})[0]
                          for r in rows])
    residual = np.array([r["measured"] for r in rows]) - predicted
    noise = np.mean([r["measured"] * (1 - r["measured"]) / r["valid_rows"] for r in rows])
    sd = max(math.sqrt(max(float(np.mean(residual ** 2)) - float(noise), 0.0)), 0.01)
    return scale, sd
