"""Hostile input, round 3: damaged storage, refusals before any work, data that would be silently
wrong, deploy folders others can read, commands that can be pasted. Ctrl-C and SIGTERM are in
test_search.py (test_a_stop_signal_…, test_a_search_killed_mid_trial_…). README "Errors and
recovery" lists these cases."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_advisor.core import DataConfig, InputError, RunDir, load_task, write_json_atomic
from helpers import run_cli, topic_rows, write_csv
from test_hostile import expect_refusal, run_main, write

SEARCH = ["search", "--model", "demo:minilm", "--space", "max_length=32", "--no-latency"]


@pytest.fixture(autouse=True)
def quiet_optuna():
    """Studies made here by hand log at INFO to a stream capsys may have closed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def topics(tmp_path) -> Path:
    return write_csv(tmp_path / "topics.csv", topic_rows(copies=4))


# --------------------------------------------------------------------------- storage


def a_study_db(path: Path) -> Path:
    import optuna

    optuna.create_study(study_name="search", storage=f"sqlite:///{path}")
    return path


@pytest.mark.parametrize("damage, match", [
    (lambda db: db.write_bytes(os.urandom(4096)), "is not a readable SQLite database"),
    (lambda db: db.write_bytes(a_study_db(db).read_bytes()[: db.stat().st_size // 2]), "is not a readable SQLite"),
])
def test_a_damaged_study_db_is_named_before_any_work(damage, match, topics, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    damage(run / "study.db")
    err = expect_refusal(capsys, tmp_path, [*SEARCH, "--data", topics, "--out", run], match)
    assert str(run / "study.db") in err and "Move" in err


def test_an_immutable_study_db_is_named_before_any_work(topics, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    db = a_study_db(run / "study.db")
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        expect_refusal(capsys, tmp_path, [*SEARCH, "--data", topics, "--out", run],
                       rf"the study '{db}' cannot be written")
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_study_is_refused(url, topics, tmp_path, capsys, monkeypatch):
    expect_refusal(capsys, tmp_path, [*SEARCH, "--data", topics, "--out", tmp_path / "run", "--storage", url],
                   "is an in-memory database: the study would be lost")
    monkeypatch.setenv("FINETUNE_ADVISOR_STORAGE", url)
    expect_refusal(capsys, tmp_path, [*SEARCH, "--data", topics, "--out", tmp_path / "run"],
                   r"\$FINETUNE_ADVISOR_STORAGE .* is an in-memory database")


def test_a_bad_storage_from_the_environment_names_the_variable(topics, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FINETUNE_ADVISOR_STORAGE", "garbage")
    err = expect_refusal(capsys, tmp_path, [*SEARCH, "--data", topics, "--out", tmp_path / "run"],
                         r"\$FINETUNE_ADVISOR_STORAGE 'garbage' is not a database URL")
    assert "--storage" not in err


# --------------------------------------------------------------------------- refused before the work


@pytest.mark.parametrize("command", [["data"], SEARCH])
def test_a_negative_seed_is_refused(command, topics, tmp_path, capsys):
    where = [topics] if command == ["data"] else ["--data", topics, "--out", tmp_path / "run"]
    expect_refusal(capsys, tmp_path, [*command, *where, "--seed", "-1"], "--seed -1 must be >= 0")


def test_an_opset_out_of_range_is_refused_before_any_work(tmp_path, capsys):
    expect_refusal(capsys, tmp_path, ["export", tmp_path / "run", "--opset", "99"],
                   r"--opset 99 is newer than the newest opset the installed onnx knows \(\d+\)")


def test_an_empty_out_is_refused(topics, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (SEARCH, ["advise", "--model", "demo:minilm"]):
        expect_refusal(capsys, tmp_path, [*command, "--data", topics, "--out", ""], "--out is empty")


def test_an_empty_split_is_an_input_error_before_anything_is_written(tmp_path, capsys):
    data = write_csv(tmp_path / "two.csv", topic_rows(copies=4))  # columns text, label
    err = expect_refusal(capsys, tmp_path, ["data", data, "--text-column", "label"], "with no rows")
    assert "--text-column" in err
    expect_refusal(capsys, tmp_path, [*SEARCH, "--data", data, "--text-column", "label", "--out", tmp_path / "run"],
                   "with no rows")


def test_run_refuses_a_study_of_other_data_before_advising(topics, tmp_path, capsys):
    import optuna

    run = tmp_path / "run"
    run.mkdir()
    study = optuna.create_study(study_name="search", storage=f"sqlite:///{run / 'study.db'}", direction="maximize")
    study.set_user_attr("data_fingerprint", "another data set")
    expect_refusal(capsys, tmp_path, ["run", "--data", topics, "--out", run, "--max-length", "32"],
                   "study 'search' in .* searched other data fingerprint than this run's")


@pytest.mark.slow
def test_two_processes_on_one_study_finish_the_total_together(topics, tmp_path):
    """`--trials 2` is the total over every process on the study, not 2 each."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "finetune_advisor", *SEARCH, "--data", str(topics), "--out", str(out), "--trials",
            "2", "--pruner", "none", "--space", "unfrozen_layers=1", "--space", "epochs=3", "--no-advice"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errs = [p.communicate(timeout=600)[1] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, errs
    record = json.loads((out / "search.json").read_text())
    assert record["finished"] == 2 and len(record["trials"]) == 2


# --------------------------------------------------------------------------- data that would be silently wrong


def test_labels_with_spaces_around_them_are_one_class_with_a_note(tmp_path):
    rows = topic_rows(copies=4)
    for row in rows[::3]:
        row["label"] = f" {row['label']}"
    task = load_task(str(write_csv(tmp_path / "d.csv", rows)))
    assert task.labels == ["money", "sport", "tech"]
    assert any("label(s) have spaces around them, read without (e.g. ' sport' as 'sport'" in w for w in task.warnings)


def test_a_repeated_header_column_is_refused_and_named(tmp_path):
    data = write(tmp_path / "d.csv", "text,label,text\n" + "".join(f"a{i},x,b{i}\n" for i in range(10)))
    with pytest.raises(InputError, match=r"the header names the column\(s\) 'text' more than once"):
        load_task(str(data))


def test_a_row_with_an_extra_field_is_named_by_its_number(tmp_path):
    lines = [f"t{i},{'ab'[i % 2]}" for i in range(20)]
    lines[0] += ",extra"
    data = write(tmp_path / "d.csv", "text,label\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"data row\(s\) 1 have more fields than the header's 2"):
        load_task(str(data))


def test_test_rows_seen_in_training_are_warned(tmp_path):
    rows = topic_rows(copies=4)
    data = write_csv(tmp_path / "d.csv", rows)
    test = write_csv(tmp_path / "t.csv", rows[:5])
    task = load_task(str(data), DataConfig(test=str(test)))
    assert any("test row(s) also appear in training" in w for w in task.warnings)


def test_many_unsplittable_classes_are_listed_ten_and_a_count(tmp_path):
    rows = [{"text": f"row {i}", "label": f"class{i:05d}"} for i in range(10_000)]
    with pytest.raises(InputError) as caught:
        load_task(str(write_csv(tmp_path / "d.csv", rows)))
    message = str(caught.value)
    assert "10000 of 10000 classes" in message and "and 9990 more" in message and len(message) < 1000


def test_a_pipe_as_data_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    result = run_cli("data", fifo, timeout=120)  # no writer: reading it would wait forever
    assert result.returncode == 2 and "is not a regular file" in result.stderr


@pytest.mark.slow
def test_a_relative_data_path_is_recorded_absolute(topics, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(capsys, *SEARCH, "--data", "topics.csv", "--out", "run", "--space", "unfrozen_layers=0")
    assert status == 0, err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["data"]["source"] == str(topics.absolute())
    monkeypatch.chdir(tmp_path.parent)  # another folder: the run still finds its data
    assert RunDir(tmp_path / "run").load_task().fingerprint == record["data"]["fingerprint"]


# --------------------------------------------------------------------------- deploy folders and printed commands


def test_records_and_folders_are_written_with_the_umask_like_a_plain_write(tmp_path):
    from finetune_advisor.core import atomic_folder

    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "labels.json", {"labels": ["a"]})
        with atomic_folder(tmp_path / "export", marker="export.json") as folder:
            write_json_atomic(folder / "export.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "export" / "export.json").stat().st_mode) == 0o644


def test_printed_commands_can_be_pasted(tmp_path):
    import shlex

    from finetune_advisor.pipeline._export_command import example_input
    from finetune_advisor.pipeline._run_command import _where

    text_task = load_task(str(write_csv(tmp_path / "d.csv", topic_rows(copies=4))))
    run = RunDir(tmp_path / "sp ace ü")
    lines = _where(run, text_task, exported=True)
    command = next(line for line in lines.splitlines() if "finetune-advisor predict" in line)
    words = shlex.split(command.split("ONNX deploy folder: ")[1])
    assert words[:3] == ["finetune-advisor", "predict", str(run.path / "export")] and words[3] == "some text"
    dashboard = lines.splitlines()[-1].split("see it all: ")[1]
    assert shlex.split(dashboard) == ["finetune-advisor", "dashboard", str(run.path)]

    images = tmp_path / "im ages"
    for label in ("a", "b"):
        (images / label).mkdir(parents=True)
        for i in range(4):
            from PIL import Image

            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(images / label / f"{i}.png")
    image_task = load_task(str(images))
    assert shlex.split(example_input(image_task)) == [image_task.valid.texts[0]]


@pytest.mark.slow
def test_predict_names_a_damaged_tokenizer_and_labels_of_another_export(full_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "export"
    shutil.copytree(full_run / "export", folder)
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:1000])
    expect_refusal(capsys, tmp_path, ["predict", folder, "text"], r"tokenizer.json' cannot be read .* cut short")
    shutil.copy(full_run / "export" / "tokenizer.json", tokenizer)
    labels = json.loads((folder / "labels.json").read_text())
    (folder / "labels.json").write_text(json.dumps({**labels, "labels": labels["labels"][:-1]}))
    expect_refusal(capsys, tmp_path, ["predict", folder, "text"],
                   r"names \d+ labels, but '.*\.onnx' scores \d+ classes")


@pytest.mark.slow
def test_predict_refuses_a_pipe_as_its_file(full_run, tmp_path):
    fifo = tmp_path / "texts.txt"
    os.mkfifo(fifo)
    result = run_cli("predict", full_run / "export", "--file", fifo, timeout=120)
    assert result.returncode == 2 and "is not a regular file" in result.stderr
