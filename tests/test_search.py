"""search/: the space, the study (resume, identity, storage errors), trials that fail, pruning,
the best model on disk, workers on SQLite and PostgreSQL, and a search killed mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from finetune_advisor.core import InputError
from finetune_advisor.search import SearchConfig, SearchSpace, parse_param
from helpers import topic_rows, write_csv

# Small, quick trials: one or two epochs, short inputs, the top two blocks at most.
QUICK = {"epochs": "1:2", "max_length": "32", "unfrozen_layers": "0:2", "batch_size": "16"}


def cli(*args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "finetune_advisor", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).parent.parent)


def search_json(*args, **kwargs) -> dict:
    """search(...)'s record as search.json holds it."""
    from finetune_advisor.search import search

    return search(*args, **kwargs).to_json()


def trials_of(url: str, study: str = "search"):
    """The study's trials, read without creating tables (a poller must not race the search that
    creates them)."""
    import optuna

    storage = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


# --------------------------------------------------------------------------- space


def test_space_syntax_range_choice_fixed():
    assert parse_param("learning_rate", "1e-5:1e-3") == SearchSpace.build(
        {"learning_rate": "1e-5:1e-3"}, num_blocks=6, max_positions=512)["learning_rate"]
    lr = parse_param("learning_rate", "1e-5:1e-3")
    assert (lr.low, lr.high, lr.log, lr.fixed) == (1e-5, 1e-3, True, None)
    k = parse_param("unfrozen_layers", "1:3")
    assert k.values == (1, 2, 3) and not k.log
    assert parse_param("batch_size", "8,16,32").choices == (8, 16, 32)
    assert parse_param("epochs", "3").fixed == 3
    assert parse_param("weight_decay", "0.05:0.05").fixed == 0.05
    assert parse_param("schedule", "linear,cosine").choices == ("linear", "cosine")


@pytest.mark.parametrize("name,text,match", [
    ("lerning_rate", "1e-5", "not a searchable parameter.*learning_rate"),
    ("batch_size", "16,big", "'big' is not an integer"),
    ("epochs", "4:1", "range is empty"),
    ("learning_rate", "0:1e-3", "log scale"),
    ("weight_decay", "", "give a value"),
])
def test_space_syntax_errors_name_the_value(name, text, match):
    with pytest.raises(InputError, match=match):
        parse_param(name, text)


def test_space_is_bounded_by_model_and_data():
    space = SearchSpace.build({}, num_blocks=6, max_positions=512, text_lengths=np.full(100, 40))
    assert space["unfrozen_layers"].values == tuple(range(7))
    assert space["max_length"].choices == (64,)  # 64 holds every 40-token text: longer would only cost
    long = SearchSpace.build({}, num_blocks=6, max_positions=200, text_lengths=np.full(100, 1000))
    assert long["max_length"].choices == (64, 128)  # 256 is beyond the model
    with pytest.raises(InputError, match="unfrozen_layers=0:9.*6 blocks"):
        SearchSpace.build({"unfrozen_layers": "0:9"}, num_blocks=6, max_positions=512)
    with pytest.raises(InputError, match="max_length=1024.*8 to 512"):
        SearchSpace.build({"max_length": "1024"}, num_blocks=6, max_positions=512)


def test_search_config_checks():
    with pytest.raises(InputError, match="--trials 0") as e:
        SearchConfig(trials=0, pruner="random", workers=0)
    assert "--pruner 'random'" in str(e.value) and "--workers 0" in str(e.value)
    with pytest.raises(InputError, match="--first-rung 0.4 must be 1/n"):
        SearchConfig(first_rung=0.4)
    assert SearchConfig(first_rung=1 / 4).steps_per_epoch == 4 and SearchConfig(first_rung=1).steps_per_epoch == 1


# --------------------------------------------------------------------------- one process


@pytest.fixture(scope="module")
def searched(tmp_path_factory, minilm, topic_task):
    """A real 5-trial search of MiniLM on the topic task, then resumed to 7 trials."""

    run = tmp_path_factory.mktemp("run")
    config = SearchConfig(trials=5, space=QUICK, pruner="none")  # latency on, as by default
    first = search_json(minilm, topic_task, run, config, progress=False, log=lambda s: None)
    before = {t["number"]: t["value"] for t in first["trials"]}
    lines = []
    second = search_json(minilm, topic_task, run, SearchConfig(trials=7, space=QUICK, pruner="none"),
                    progress=False, log=lines.append)
    return run, first, second, before, lines


def test_search_json_follows_the_contract(searched):
    run, first, record, _, _ = searched
    assert set(record) >= {"study_name", "storage", "direction", "metric", "n_trials", "best", "trials"}
    assert record["storage"] == f"sqlite:///{(run / 'study.db').resolve()}"
    assert record["direction"] == "maximize" and record["metric"] == "accuracy"
    assert record["n_trials"]["complete"] == 7 and record["finished"] == 7
    for t in record["trials"]:
        assert set(t) >= {"number", "state", "value", "params", "seconds"}
        assert t["params"]["max_length"] == 32  # the space's fixed values are in every row
        # the pruner heard from the trial after a third of its first epoch, then after each epoch
        assert list(t["intermediate"]) == ["0.3333"] + [str(e) for e in range(1, t["params"]["epochs"] + 1)]
    assert len({t["params"]["unfrozen_layers"] for t in record["trials"]}) >= 2  # the sampler searched k
    best = max(record["trials"], key=lambda t: (t["value"], -t["number"]))
    assert record["best"]["number"] == best["number"] and record["best"]["value"] == best["value"]
    assert (run / "search.json").exists()
    # every trial's shape was timed (one shape here: the full depth at 32 tokens), and the front drawn from them
    for t in record["trials"]:
        assert set(t["latency_ms"]) == {"fp32", "int8"}
        assert all(set(v) == {"batch_1", "batch_32"} and min(v.values()) > 0 for v in t["latency_ms"].values())
    assert record["latency_budget_ms"] is None and record["latency_batch"] == 1 and record["latency_machine"]
    front = record["front"]
    assert front and [p["latency_ms"] for p in front] == sorted(p["latency_ms"] for p in front)
    assert all(a["accuracy"] < b["accuracy"] for a, b in zip(front, front[1:]))
    assert front[-1]["accuracy"] == record["best"]["value"]


def test_resume_keeps_finished_trials_and_counts_the_total(searched):
    _, first, second, before, lines = searched
    assert len(first["trials"]) == 5 and len(second["trials"]) == 7
    assert {t["number"]: t["value"] for t in second["trials"][:5]} == before
    assert any("resuming study 'search': 5 of 7" in line for line in lines)


def test_best_model_is_the_best_trial_and_reloads(searched, topic_task):
    from transformers import AutoModel

    from finetune_advisor.core import load_classifier

    run, _, record, _, _ = searched
    saved = json_of(run / "best_model" / "trial.json")
    assert saved["number"] == record["best"]["number"] and saved["value"] == record["best"]["value"]
    assert [p.name for p in run.iterdir() if p.name.startswith(".best_model.") and p.suffix != ".lock"] == []
    AutoModel.from_pretrained(run / "best_model")  # plain transformers reads the encoder
    model = load_classifier(run / "best_model")
    accuracy = float((model.predict_proba(topic_task.valid.texts).argmax(1) == topic_task.valid.labels).mean())
    assert accuracy == pytest.approx(record["best"]["value"])


def json_of(path: Path):
    import json

    return json.loads(path.read_text())


def test_a_study_that_searches_something_else_is_refused(searched, minilm, topic_task):
    from finetune_advisor.search import search

    run = searched[0]
    with pytest.raises(InputError, match="study 'search' already exists and searches something else.*space"):
        search(minilm, topic_task, run, SearchConfig(latency=False, trials=8, space={**QUICK, "epochs": "1:3"}),
               progress=False, log=lambda s: None)
    with pytest.raises(InputError, match="pruner_steps_per_epoch: stored 3, now 1"):  # its steps would mix
        search(minilm, topic_task, run, SearchConfig(latency=False, trials=8, space=QUICK, first_rung=1), progress=False,
               log=lambda s: None)


def test_a_study_with_another_direction_is_refused(tmp_path, minilm, topic_task):
    import optuna

    from finetune_advisor.search import search

    optuna.create_study(study_name="search", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="minimize")
    with pytest.raises(InputError, match="direction minimize.*maximizes accuracy.*--study"):
        search(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=1, space=QUICK), progress=False, log=lambda s: None)


def test_a_trial_that_raises_or_runs_out_of_memory_fails_with_its_reason(tmp_path, minilm, topic_task,
                                                                          monkeypatch):
    import torch

    from finetune_advisor import core

    real_train, calls = core.train, []

    def flaky_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(core, "train", flaky_train)
    record = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=4, space=QUICK, pruner="none"),
                    progress=False, log=lambda s: None)
    states = [t["state"] for t in record["trials"]]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]  # the study went on to its total
    assert record["trials"][1]["fail_reason"] == "RuntimeError: boom"
    assert record["trials"][2]["fail_reason"].startswith("out of memory at batch_size 16, max_length 32")


def test_a_nan_loss_fails_the_trial_with_its_reason(tmp_path, minilm, topic_task):

    space = {**QUICK, "unfrozen_layers": "1", "learning_rate": "1e30", "head_lr_multiplier": "1e6"}
    record = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=1, space=space), progress=False,
                    log=lambda s: None)
    (trial,) = record["trials"]
    assert trial["state"] == "FAIL" and trial["fail_reason"].startswith("non-finite loss: the loss became")
    assert record["best"] is None and not (tmp_path / "best_model").exists()


@pytest.mark.parametrize("grouped", [True, False])
def test_trials_train_on_batches_grouped_by_length_unless_asked_not_to(tmp_path, minilm, topic_task, monkeypatch,
                                                                      grouped):
    from finetune_advisor.core import _train

    calls = []
    real = _train.length_grouped_batches
    monkeypatch.setattr(_train, "length_grouped_batches", lambda *a, **k: calls.append(1) or real(*a, **k))
    space = {**QUICK, "unfrozen_layers": "1", "epochs": "1"}
    search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=1, space=space, group_by_length=grouped),
                progress=False, log=lambda s: None)
    assert bool(calls) == grouped


@pytest.mark.slow
def test_pruning_prunes_and_none_does_not(tmp_path, minilm, topic_task):

    # A wide learning-rate range from random heads (trials started from the probe's head are all
    # good from the first epoch): some trials barely move from chance after an epoch.
    space = {**QUICK, "epochs": "3", "learning_rate": "1e-7:1e-3", "head_lr_multiplier": "1:100"}
    pruned = search_json(minilm, topic_task, tmp_path / "median",
                         SearchConfig(latency=False, trials=8, space=space, pruner="median", head_start="random",
                                      min_examples=0),  # plain epochs: 54 rows would make the pruner wait 15
                         progress=False, log=lambda s: None)
    assert pruned["n_trials"]["pruned"] >= 1
    for t in pruned["trials"]:
        epochs = sum(float(e).is_integer() for e in t["intermediate"])
        assert epochs < 3 if t["state"] == "PRUNED" else epochs >= 1  # pruned trials stopped early
    # a trial far behind is stopped at the first rung, after a third of the data
    assert any(list(t["intermediate"]) == ["0.3333"] for t in pruned["trials"] if t["state"] == "PRUNED")
    kept = search_json(minilm, topic_task, tmp_path / "none", SearchConfig(latency=False, trials=4, space=space, pruner="none"),
                  progress=False, log=lambda s: None)
    assert kept["n_trials"]["pruned"] == 0


def write_advice(folder, task, decision, suggested=None):
    from finetune_advisor.core import AdviceRecord, Cost, Expected, Probe, Shift, ZeroShot

    AdviceRecord(decision=decision, reasons=["x"], zero_shot=ZeroShot(), probe=Probe(accuracy=0.9),
                 shift=Shift(None, None, None, None, None), cost=Cost(None, {}, "cpu"), advisor_seconds=1.0,
                 expected=Expected(suggested_unfrozen_layers=suggested), data_fingerprint=task.fingerprint).write(folder)


def test_advice_narrows_layers_and_seeds_the_first_trial(tmp_path, minilm, topic_task):
    write_advice(tmp_path, topic_task, "fine-tune", [1, 3])
    lines = []
    space = {k: v for k, v in QUICK.items() if k != "unfrozen_layers"}
    record = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=2, space=space), progress=False,
                    log=lines.append)
    assert record["space"]["unfrozen_layers"] == "1:3"
    first = record["trials"][0]["params"]
    assert first["unfrozen_layers"] == 2 and first["learning_rate"] == 5e-5 and first["batch_size"] == 16
    assert any("narrowed to 1..3" in line for line in lines)


def test_start_with_configurations_are_tried_first_in_order(tmp_path, minilm, topic_task):
    space = {k: v for k, v in QUICK.items() if k not in ("unfrozen_layers", "learning_rate")}
    space |= {"unfrozen_layers": "0:2", "learning_rate": "1e-5:1e-3"}
    start = ({"unfrozen_layers": 2, "learning_rate": 3e-4}, {"unfrozen_layers": 0, "learning_rate": 5.0})
    record = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=3, space=space, start_with=start),
                         progress=False, log=lambda s: None)
    tried = [(t["params"]["unfrozen_layers"], t["params"]["learning_rate"]) for t in record["trials"][:2]]
    assert tried == [(2, 3e-4), (0, 1e-3)]  # in order; 5.0 moved inside the space


def test_start_with_an_unknown_parameter_is_refused():
    with pytest.raises(InputError, match="unknown parameters: learning_rat"):
        SearchConfig(start_with=({"learning_rat": 1e-4},))


def test_a_head_only_advice_is_read_by_the_search_itself(tmp_path, minilm, topic_task):
    """`search` after a head-only advice trains heads only, whoever calls it (run or the command)."""
    write_advice(tmp_path, topic_task, "head-only", [1, 3])
    space = {k: v for k, v in QUICK.items() if k != "unfrozen_layers"}
    lines = []
    record = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=2, space=space), progress=False,
                         log=lines.append)
    assert record["space"]["unfrozen_layers"] == "0" and float(record["space"]["layer_lr_decay"]) == 1
    assert all(t["params"]["unfrozen_layers"] == 0 for t in record["trials"])
    assert any("head-only" in line for line in lines)


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def topics_file(tmp_path) -> Path:
    return write_csv(tmp_path / "topics.csv", topic_rows(copies=4))


def quick_flags(latency: bool = False):
    """The quick space as flags; trials untimed unless `latency` (the two-worker test times them)."""
    return [f for name, value in QUICK.items() for f in ("--space", f"{name}={value}")] + ([] if latency else ["--no-latency"])


@pytest.mark.parametrize("flags,match", [
    (["--storage", "not a url"], "--storage 'not a url' is not a database URL"),
    (["--storage", "postgresql://fa:secret@127.0.0.1:1/none"], "--storage 'postgresql://fa:\\*\\*\\*@127.0.0.1:1/none'"),
    (["--space", "epochs"], "--space 'epochs' must be NAME=VALUE"),
    (["--space", "depth=3"], "'depth' is not a searchable parameter"),
    (["--space", "augment=false,true"], "flips and crops are for images"),
    (["--trials", "0"], "--trials 0 must be >= 1"),
    (["--first-rung", "1/0"], "--first-rung '1/0' is not a share of an epoch"),
    (["--first-rung", "0.4"], "--first-rung 0.4 must be 1/n for a whole n"),
])
def test_bad_search_input_exits_2_and_writes_nothing(tmp_path, topics_file, flags, match):
    import re

    out = tmp_path / "run"
    result = cli("search", "--model", "demo:minilm", "--data", str(topics_file), "--out", str(out), *flags)
    assert result.returncode == 2, result.stderr
    assert re.search(match, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path, topics_file):
    out = tmp_path / "run"
    result = cli("search", "--model", "demo:minilm", "--data", str(topics_file), "--out", str(out),
                 "--trials", "6", "--workers", "2", "--pruner", "none", *quick_flags(latency=True))
    assert result.returncode == 0, result.stderr
    trials = trials_of(f"sqlite:///{out / 'study.db'}")
    timed = [t.user_attrs["latency_ms"] for t in trials if t.state.name == "COMPLETE"]
    assert timed and all(x == timed[0] for x in timed)  # one shape, timed once, read by both workers
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no number twice, none missing
    assert 6 <= len(trials) <= 7  # the total, plus at most the other worker's running trial
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert "top" in result.stdout and (out / "best_model" / "trial.json").exists()


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FINETUNE_ADVISOR_TEST_POSTGRES"),
                    reason="no PostgreSQL server: set FINETUNE_ADVISOR_TEST_POSTGRES=postgresql://… "
                           "(.ci/run starts one)")
def test_two_workers_on_postgresql(tmp_path, topics_file):
    url = os.environ["FINETUNE_ADVISOR_TEST_POSTGRES"]
    study = f"pytest-{os.getpid()}-{time.time_ns()}"
    out = tmp_path / "run"
    result = cli("search", "--model", "demo:minilm", "--data", str(topics_file), "--out", str(out),
                 "--trials", "4", "--workers", "2", "--storage", url, "--study", study, "--pruner", "none",
                 *quick_flags())
    assert result.returncode == 0, result.stderr
    trials = trials_of(url, study)
    assert sorted(t.number for t in trials) == list(range(len(trials))) and len(trials) >= 4
    assert not (out / "study.db").exists()
    assert json_of(out / "search.json")["storage"].startswith("postgresql")


def wait_for_a_running_second_trial(url: str, timeout: float = 300) -> None:
    """Poll the study until the first trial has completed and the second is running (not a later
    one, which may end before the caller acts on a loaded machine)."""
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.2)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            continue
        try:
            states = [t.state for t in trials_of(url)]
        except Exception:  # the study does not exist yet
            continue
        if len(states) == 2 and states[0] == TrialState.COMPLETE and states[1] == TrialState.RUNNING:
            return
    pytest.fail("the search never reached a running second trial")


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_and_retries_it(tmp_path, topics_file):
    """kill -9 during a trial; the same command again, at once (no heartbeat's grace to wait out),
    keeps finished trials, retries the killed one with the same parameters, and reaches the total."""
    from optuna.trial import TrialState

    out = tmp_path / "run"
    args = ["search", "--model", "demo:minilm", "--data", str(topics_file), "--out", str(out), "--trials", "3",
            "--pruner", "none", *quick_flags(), "--space", "epochs=20", "--space", "patience=20",
            "--space", "unfrozen_layers=1:2"]  # trials of several seconds, no early stop: the kill lands inside one
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "finetune_advisor", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    url = f"sqlite:///{out / 'study.db'}"
    try:
        wait_for_a_running_second_trial(url)
        time.sleep(1.0)  # past the sampling of its parameters, into its training
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = {t.number: t for t in trials_of(url)}
    killed = max(before)
    assert before[killed].state == TrialState.RUNNING

    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"trial {killed} was left running by process {proc.pid}, which has ended" in result.stdout
    after = {t.number: t for t in trials_of(url)}
    for number, t in before.items():
        if t.state == TrialState.COMPLETE:
            assert after[number].value == t.value  # kept, not re-run
    assert after[killed].state == TrialState.FAIL and "fail_reason" not in after[killed].user_attrs
    retries = [t for t in after.values() if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == after[killed].params
    assert retries[0].state == TrialState.COMPLETE
    record = json_of(out / "search.json")
    assert record["finished"] == 3 and record["n_trials"]["running"] == 0


# --------------------------------------------------------------------------- no configuration twice


def _sampled(study, sampler, n):
    """n trials of a quick objective on `study` through `sampler` (the search's own)."""
    import optuna

    study = optuna.load_study(study_name=study.study_name, storage=study._storage, sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        params = {"lr": trial.suggest_float("lr", 1e-5, 1e-3, log=True), "k": trial.suggest_int("k", 0, 6),
                  "wd": trial.suggest_float("wd", 0, 0.1)}
        study.tell(trial, params["lr"] * 100 + params["k"] / 10 - params["wd"])


def _params(study):
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)]


def test_two_processes_and_a_resume_never_repeat_a_configuration(tmp_path):
    import optuna

    from finetune_advisor.search._workers import trial_seeded_tpe

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", direction="maximize")
    first, second = trial_seeded_tpe(0, n_startup_trials=3), trial_seeded_tpe(0, n_startup_trials=3)
    for _ in range(4):  # two processes with the same --seed, taking turns on one study
        _sampled(study, first, 1)
        _sampled(study, second, 1)
    _sampled(study, trial_seeded_tpe(0, n_startup_trials=3), 4)  # a resume in a new process
    params = _params(study)
    assert len(params) == 12 and len(set(params)) == 12

    # --seed still reproduces a single fresh run
    again = optuna.create_study(storage=f"sqlite:///{tmp_path / 'b.db'}", direction="maximize")
    _sampled(again, trial_seeded_tpe(0, n_startup_trials=3), 8)
    once = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}", direction="maximize")
    _sampled(once, trial_seeded_tpe(0, n_startup_trials=3), 8)
    assert _params(again) == _params(once)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_fails_the_running_trial_writes_the_record_and_the_rerun_retries_it(tmp_path, topics_file,
                                                                                       signum):
    """Ctrl-C (SIGINT) or SIGTERM (timeout, docker, Kubernetes) mid-trial: exit 128 + the signal with
    one line on how to resume and no traceback, search.json written, the trial failed and queued
    again; the same command again runs it first and reaches the total."""
    from optuna.trial import TrialState

    out = tmp_path / "run"
    # trials of many seconds each (k >= 1, 80 epochs, no early stop): on an idle machine a 3-epoch trial of a
    # cached head ended before the signal reached it, and 20-epoch trials (2-5 s) ended between two polls
    args = ["search", "--model", "demo:minilm", "--data", str(topics_file), "--out", str(out), "--trials", "3",
            "--pruner", "none", *quick_flags(), "--space", "epochs=80", "--space", "patience=80",
            "--space", "unfrozen_layers=1:2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "finetune_advisor", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    url = f"sqlite:///{out / 'study.db'}"
    try:
        wait_for_a_running_second_trial(url)
        time.sleep(1.0)
        proc.send_signal(signum)
        stdout, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "Exception ignored" not in err
    said = [line for line in err.splitlines() if "Run the same command again to resume" in line]
    what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "stopped (SIGTERM)"
    assert len(said) == 1 and said[0].startswith(f"{what}: 1 of 3 trials finished"), err
    record = json_of(out / "search.json")
    interrupted = [t for t in record["trials"] if t.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0]["state"] == "FAIL" and record["n_trials"]["running"] == 0
    waiting = [t for t in trials_of(url) if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == interrupted[0]["number"]

    result = cli(*args)
    assert result.returncode == 0, result.stderr
    after = json_of(out / "search.json")
    retry = [t for t in after["trials"] if t.get("retry_of") == interrupted[0]["number"]]
    assert len(retry) == 1 and retry[0]["state"] == "COMPLETE"
    assert {k: v for k, v in retry[0]["params"].items()} == interrupted[0]["params"]
    assert after["finished"] == 3


def test_head_only_is_fitted_in_closed_form_as_one_trial(tmp_path, minilm, topic_task):
    """unfrozen_layers fixed at 0: the head is a cross-validated logistic regression on all frozen
    features, best_model reproduces its accuracy, the study holds one trial, a rerun does not refit."""
    from finetune_advisor.advisor._signals import probe_accuracy
    from finetune_advisor.core import FeatureCache, load_classifier

    space = {"unfrozen_layers": "0", "max_length": "32"}
    lines = []
    record = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=5, space=space), progress=False,
                         log=lines.append)
    (trial,) = record["trials"]
    assert trial["state"] == "COMPLETE" and record["best"]["number"] == trial["number"]
    cache = FeatureCache()
    x = {s: cache.features(minilm, getattr(topic_task, s), start=minilm.num_blocks, max_length=32,
                           progress=False).numpy() for s in ("train", "valid")}
    probe, _ = probe_accuracy(x["train"], topic_task.train.labels, x["valid"], topic_task.valid.labels)
    assert trial["value"] == pytest.approx(probe)  # the advisor's probe is the head head-only delivers
    model = load_classifier(tmp_path / "best_model")
    assert model.head.weight.abs().max() < 100  # well-conditioned: int8 rounding cannot blow it up
    reloaded = (model.predict_proba(topic_task.valid.texts).argmax(1) == topic_task.valid.labels).mean()
    assert reloaded == pytest.approx(trial["value"])
    assert any("closed form" in line for line in lines)
    again = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=5, space=space), progress=False,
                        log=lambda s: None)
    assert len(again["trials"]) == 1


def test_the_closed_form_head_starts_from_the_advisors_embedded_sample(tmp_path, monkeypatch, minilm, topic_task):
    """advise then search share one feature cache: the head-only search embeds only the training
    rows the advisor's sample left out, and fits the same head as from scratch."""
    from finetune_advisor.advisor import AdvisorConfig, advise

    monkeypatch.setenv("FINETUNE_ADVISOR_CACHE", str(tmp_path / "cache"))
    space = {"unfrozen_layers": "0", "max_length": "32"}
    fresh = search_json(minilm, topic_task, tmp_path / "fresh", SearchConfig(latency=False, trials=1, space=space, cache="memory"),
                        progress=False, log=lambda s: None)
    advice = advise(minilm, topic_task, AdvisorConfig(max_length=32, sample_rows=20, pilot_epochs=1),
                    progress=False).to_json()
    lines = []
    record = search_json(minilm, topic_task, tmp_path / "run", SearchConfig(latency=False, trials=1, space=space), progress=False,
                         log=lines.append)
    sampled = advice["probe"]["train_rows"] + advice["probe"]["valid_rows"]
    assert advice["probe"]["train_rows"] < len(topic_task.train)
    reused = [line for line in lines if "came from the cache" in line]
    assert reused and f"features of {sampled} rows" in reused[0], lines
    assert record["best"]["value"] == pytest.approx(fresh["best"]["value"], abs=1e-9)


def test_head_search_runs_trials_when_asked(tmp_path, minilm, topic_task):
    space = {"unfrozen_layers": "0", "max_length": "32", "epochs": "1", "batch_size": "16"}
    record = search_json(minilm, topic_task, tmp_path, SearchConfig(latency=False, trials=2, space=space, head_search=True,
                                                                    pruner="none"), progress=False, log=lambda s: None)
    assert len(record["trials"]) == 2 and all(t["params"]["unfrozen_layers"] == 0 for t in record["trials"])


def test_trials_start_from_the_probes_head(tmp_path, minilm, topic_task):
    """LP-FT: with a learning rate too small to move anything, a trial started from the probe's
    head scores what the closed-form head scores; one started from a random head stays near chance."""
    from finetune_advisor.core import FeatureCache, fit_head

    space = {"unfrozen_layers": "1", "max_length": "32", "epochs": "1", "batch_size": "16",
             "learning_rate": "1e-12", "head_lr_multiplier": "3", "warmup_ratio": "0"}
    cache = FeatureCache()
    x = {s: cache.features(minilm, getattr(topic_task, s), start=minilm.num_blocks, max_length=32,
                           progress=False).numpy() for s in ("train", "valid")}
    weight, bias, _ = fit_head(x["train"], topic_task.train.labels, topic_task.num_labels)
    closed_form = float(np.mean((x["valid"] @ weight.T + bias).argmax(1) == topic_task.valid.labels))
    values = {}
    for start in ("probe", "random"):
        record = search_json(minilm, topic_task, tmp_path / start,
                             SearchConfig(latency=False, trials=1, space=space, pruner="none", head_start=start),
                             progress=False, log=lambda s: None)
        assert record["head_start"] == start
        values[start] = record["trials"][0]["value"]
    assert values["probe"] == pytest.approx(closed_form, abs=0.02)
    assert values["random"] < closed_form - 0.2


def test_head_start_is_checked():
    with pytest.raises(InputError, match="--head-start 'linear' must be one of probe, random"):
        SearchConfig(head_start="linear")
