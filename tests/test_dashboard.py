"""dashboard/: every section renders from run directories made by the real stages; missing and
half-finished runs explain themselves; a live study refreshes; torch is never imported; and the
real command serves a page that a headless Chromium renders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_advisor.dashboard import APP, RUNS_ENV

ROOT = Path(__file__).parent.parent


def app_for(*runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(RUNS_ENV, os.pathsep.join(str(r) for r in runs))
    return AppTest.from_file(str(APP), default_timeout=120).run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_every_section_renders_the_key_numbers(full_run, monkeypatch):
    at = app_for(full_run, monkeypatch=monkeypatch)
    assert not at.exception
    advice = json.loads((full_run / "advice.json").read_text())
    search = json.loads((full_run / "search.json").read_text())
    export = json.loads((full_run / "export" / "export.json").read_text())
    headers = texts(at.header)
    assert f"Decision: {advice['decision'].upper()}" in headers
    assert f"Recommended: {export['recommended']}" in headers
    markdown = texts(at.markdown)
    assert advice["reasons"][0] in markdown
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["best accuracy"] == f"{search['best']['value']:.4f}"
    assert metrics["complete"] == str(search["n_trials"]["complete"])
    trial_table = next(df.value for df in at.dataframe if "trial" in df.value.columns)
    assert len(trial_table) == len(search["trials"])
    assert not at.warning  # nothing missing


def test_trying_the_exported_model_in_the_text_box(full_run, monkeypatch):
    at = app_for(full_run, monkeypatch=monkeypatch)
    at.text_area(key=f"try-{full_run}").input("the striker scored a late goal").run()
    assert not at.exception
    labels = json.loads((full_run / "export" / "labels.json").read_text())["labels"]
    (shown,) = at.success
    assert shown.value.split(" (")[0] in labels


def test_a_half_finished_run_says_what_is_missing_and_which_command_makes_it(full_run, tmp_path, monkeypatch):
    run = tmp_path / "half"
    run.mkdir()
    shutil.copy(full_run / "advice.json", run / "advice.json")
    at = app_for(run, monkeypatch=monkeypatch)
    assert not at.exception
    info = texts(at.info)
    assert "No search.json" in info and f"finetune-advisor search --model M --data D --out {run}" in info
    assert f"finetune-advisor export {run}" in info
    assert "Decision:" in texts(at.header)


def test_an_empty_or_broken_run_is_explained_not_a_traceback(tmp_path, monkeypatch):
    missing = tmp_path / "nothing-here"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "advice.json").write_text('{"decision": ')
    at = app_for(missing, monkeypatch=monkeypatch)
    assert not at.exception and "does not exist (yet)" in texts(at.warning)
    at = app_for(broken, monkeypatch=monkeypatch)
    assert not at.exception and "advice.json cannot be read" in texts(at.error)
    monkeypatch.delenv(RUNS_ENV)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception and "No run directory to show" in texts(at.info)


@pytest.mark.parametrize("damage,match", [
    (lambda run: (run / "advice.json").write_text("[1, 2, 3]"), "advice.json holds a JSON list"),
    (lambda run: (run / "advice.json").write_text(json.dumps(
        {k: v for k, v in json.loads((run / "advice.json").read_text()).items() if k != "zero_shot"})),
     "advice.json lacks the entry 'zero_shot'"),
    (lambda run: (run / "study.db").write_bytes((run / "study.db").read_bytes()[:2000]),
     "study.db cannot be read"),
    (lambda run: (run / "export" / "export.json").write_text('{"variants": 3}'),
     "export.json lacks the entries 'source', 'opset', 'torch_latency_ms', 'recommended'"),
    (lambda run: (run / "search.json").unlink() or (run / "study.db").write_text("not a database"),
     "study.db"),
])
def test_a_broken_record_is_said_in_its_tab_and_the_others_still_draw(damage, match, full_run, tmp_path,
                                                                       monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    damage(run)
    at = app_for(run, monkeypatch=monkeypatch)
    assert not at.exception
    assert match in texts(at.error), texts(at.error)
    assert len(at.error) == 1  # only the tab concerned
    headers = texts(at.header)
    assert ("Decision:" in headers) == ("advice" not in match)
    assert ("Recommended:" in headers) == ("export" not in match)


def test_compare_runs_side_by_side(full_run, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(full_run / "advice.json", other / "advice.json")
    at = app_for(full_run, other, monkeypatch=monkeypatch)
    assert not at.exception
    table = next(df.value for df in at.dataframe if "decision" in df.value.columns)
    assert list(table["run"]) == [str(full_run), str(other)]
    assert table["search best"].iloc[0] == pytest.approx(json.loads((full_run / "search.json").read_text())["best"]["value"])


def test_a_running_search_is_read_live(full_run, tmp_path, monkeypatch):
    import optuna

    run = tmp_path / "live"
    shutil.copytree(full_run, run)
    (run / "search.json").unlink()  # written only at the end of a search
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run / 'study.db'}")
    study.ask()  # a trial that is running now
    at = app_for(run, monkeypatch=monkeypatch)
    assert not at.exception
    assert "A search is running" in texts(at.caption)
    assert {m.label: m.value for m in at.metric}["running"] == "1"


def test_the_dashboard_never_imports_torch(full_run):
    code = ("import os, sys\n"
            f"os.environ[{RUNS_ENV!r}] = {str(full_run)!r}\n"
            "from streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({str(APP)!r}, default_timeout=120).run()\n"
            "at.text_area(key=" + repr(f"try-{full_run}") + ").input('shares fell').run()\n"
            "assert not at.exception, at.exception\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()),
                    reason="no Chromium: install Debian's chromium and chromium-driver (.ci/run does)")
def test_the_real_dashboard_in_a_headless_browser(full_run, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "finetune_advisor", "dashboard", str(full_run), "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait for the server to listen
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.5)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.get(f"http://127.0.0.1:{port}")
        decision = json.loads((full_run / "advice.json").read_text())["decision"].upper()
        WebDriverWait(driver, 90).until(expected_conditions.text_to_be_present_in_element(
            (By.TAG_NAME, "body"), f"Decision: {decision}"))
        WebDriverWait(driver, 60).until(  # the accuracy chart has drawn
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".js-plotly-plot .main-svg")))
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


def test_the_mistakes_tab_shows_per_class_scores_confusion_and_the_worst_errors(full_run, monkeypatch):
    import numpy as np

    from finetune_advisor.core import RunDir
    from finetune_advisor.dashboard._runs import load_run, validation_errors
    from finetune_advisor.export import Predictor

    errors = validation_errors(load_run(full_run))
    task = RunDir(full_run).load_task()
    probs = Predictor(full_run / "export").predict_proba(task.valid.texts)
    gold = np.array([errors.labels.index(task.labels[i]) for i in task.valid.labels])
    confusion = np.array(errors.confusion)
    assert confusion.sum() == len(task.valid)
    assert (confusion.sum(1) == np.bincount(gold, minlength=len(errors.labels))).all()
    assert errors.accuracy == float((probs.argmax(1) == gold).mean()) == np.trace(confusion) / confusion.sum()
    for row, label in zip(errors.per_class, errors.labels):
        i = errors.labels.index(label)
        predicted = confusion[:, i].sum()
        assert row["recall"] == confusion[i, i] / confusion[i].sum()
        assert row["precision"] == (confusion[i, i] / predicted if predicted else 0)
    assert len(errors.mistakes) == min(20, int((probs.argmax(1) != gold).sum()))
    confidence = [m["p(predicted)"] for m in errors.mistakes]
    assert confidence == sorted(confidence, reverse=True) and all(m["true"] != m["predicted"] for m in errors.mistakes)

    at = app_for(full_run, monkeypatch=monkeypatch)
    assert not at.exception
    assert f"Validation accuracy {errors.accuracy:.4f}" in texts(at.header)
    per_class = next(df.value for df in at.dataframe if "recall" in df.value.columns)
    assert list(per_class["label"]) == errors.labels


def test_a_head_only_search_is_drawn_at_k_0_and_empty_cells_read_as_a_dash(tmp_path):
    import optuna

    from finetune_advisor.dashboard._runs import fixed_params, layer_points, table, trial_rows

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("space", {"unfrozen_layers": "0", "learning_rate": "1e-5:3e-4", "max_length": "64,128"})
    study.add_trial(optuna.trial.create_trial(
        params={"max_length": 128}, distributions={"max_length": optuna.distributions.CategoricalDistribution([64, 128])},
        value=0.97, user_attrs={"method": "closed-form logistic regression"}))
    assert fixed_params(study) == {"unfrozen_layers": 0}
    (row,) = trial_rows(study)
    assert row["unfrozen_layers"] == 0 and row["method"] == "closed-form logistic regression"

    assert layer_points(study.get_trials(), fixed_params(study)["unfrozen_layers"]) == {"COMPLETE": [(0, 0.97, 0)]}
    assert layer_points(study.get_trials()) == {}  # without the space's fixed k: nothing to place
    shown = table([{"trial": 0, "seconds": None}, {"trial": 1, "seconds": 2.5}])
    assert list(shown["seconds"]) == ["–", 2.5]


def test_learning_curves_are_drawn_in_epochs_when_a_trial_reports_inside_epoch_one(tmp_path):
    """search's first rung: steps are thirds of an epoch; the table counts whole epochs and the
    curves' x axis reads epochs, not pruner steps."""
    import optuna
    import optuna.visualization as vis

    from finetune_advisor.core import STEPS_PER_EPOCH, steps_per_epoch
    from finetune_advisor.dashboard._runs import epoch_axis, trial_rows

    study = optuna.create_study(direction="maximize")
    study.set_user_attr(STEPS_PER_EPOCH, 3)
    dist = {"epochs": optuna.distributions.IntDistribution(1, 3)}
    study.add_trial(optuna.trial.create_trial(params={"epochs": 2}, distributions=dist, value=0.9,
                                              intermediate_values={1: 0.5, 3: 0.8, 6: 0.9}))
    study.add_trial(optuna.trial.create_trial(params={"epochs": 3}, distributions=dist, value=0.3,
                                              state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.3}))
    assert [r["epochs run"] for r in trial_rows(study)] == [2, 0]
    fig = epoch_axis(vis.plot_intermediate_values(study), steps_per_epoch(study))
    xs = sorted(tuple(t.x) for t in fig.data if t.x is not None)
    assert xs == [(1 / 3,), (1 / 3, 1, 2)] and fig.layout.xaxis.title.text == "epoch"
    assert steps_per_epoch(optuna.create_study()) == 1  # a study from before the first rung


def test_an_image_run_shows_the_image_shift_measures(tmp_path, monkeypatch):
    """An image task's advice (no tokens, no reference set: MMD absent) draws its own shift table."""
    run = tmp_path / "images"
    run.mkdir()
    shift = {"unk_rate": None, "fertility": None, "mmd2": None, "mmd_p_value": None, "pad": None,
             "effective_rank": 329.0, "hidden_size": 1280, "model_input": [224, 224], "size_ratio": 0.125,
             "grayscale_share": 1.0, "normalisation_gap": 0.4314, "contrast_ratio": 0.7052}
    (run / "advice.json").write_text(json.dumps({
        "decision": "head-only", "reasons": ["a reason"], "zero_shot": {"accuracy": None, "method": "n/a"},
        "probe": {"accuracy": 0.847, "knn_accuracy": 0.827}, "shift": shift,
        "expected": {"fine_tune_accuracy": 0.84, "uncertainty": 0.03, "gain_over_probe": -0.007},
        "cost": {"device": "cpu", "search_seconds": 3409.0, "per_epoch_seconds": {"0": 1.0, "1": 41.0}},
        "advisor_seconds": 155.0, "chance_accuracy": 0.1,
        "thresholds": {"near_chance_floor": 0.19, "max_unk_rate": 0.05, "min_gain": 0.01}}))
    at = app_for(run, monkeypatch=monkeypatch)
    assert not at.exception and not at.error
    table = next(df.value for df in at.dataframe if "measure" in df.value.columns)
    values = dict(zip(table["measure"], table["value"]))
    assert values["size ratio (median side / model's)"] == 0.125 and values["normalisation gap (sd)"] == 0.4314
    assert "unknown-token rate" not in values
    assert "no reference (--reference DIR)" in set(table["threshold"])


def test_the_front_of_accuracy_against_latency_is_drawn_with_the_chosen_point_and_the_budget():
    import optuna

    from finetune_advisor.core import SearchRecord
    from finetune_advisor.dashboard._runs import front_rows
    from finetune_advisor.dashboard.app import front_chart

    study = optuna.create_study(direction="maximize")
    for number, (acc, fp32, int8, depth) in enumerate([(0.90, 4.0, 2.0, 2), (0.95, 8.0, 5.0, 4), (0.85, 6.0, 3.0, 3)]):
        study.add_trial(optuna.trial.create_trial(
            params={"kept_layers": depth}, distributions={"kept_layers": optuna.distributions.IntDistribution(1, 6)},
            value=acc, user_attrs={"latency_ms": {"fp32": {"batch_1": fp32, "batch_32": 10 * fp32},
                                                  "int8": {"batch_1": int8, "batch_32": 10 * int8}}}))
    complete = study.get_trials()
    front, points = front_rows(complete)
    assert [(p["number"], p["variant"]) for p in front] == [(0, "int8"), (1, "int8")]
    assert len(points) == 6
    record = SearchRecord.from_json({"study_name": "s", "storage": "x", "direction": "maximize", "metric": "accuracy",
                                     "n_trials": {"complete": 3, "pruned": 0, "fail": 0}, "best": None, "trials": [],
                                     "latency_budget_ms": 6.0, "latency_batch": 1})
    fig = front_chart(complete, record)
    names = [trace.name for trace in fig.data]
    assert "front" in names and "chosen" in names
    chosen = next(trace for trace in fig.data if trace.name == "chosen")
    assert list(chosen.x) == [5.0] and list(chosen.y) == [0.95]  # the best trial at its fastest variant
    assert fig.layout.shapes[0].x0 == 6.0  # the budget line
    assert front_chart([t for t in complete if False], record) is None
