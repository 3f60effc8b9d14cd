"""Bad input, faults and hostile files, command by command: each must end with exit status 2 (1 for
a model that fails its export checks), one message naming the value and the fix, no traceback,
and nothing written. README "Errors and recovery" lists these cases."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from finetune_advisor.pipeline.cli import main
from helpers import topic_rows, write_csv


def snapshot(root: Path) -> dict:
    """Every file (with its size and modification time) and folder under `root`."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "folder"
            for p in root.rglob("*")} if root.exists() else {}


def run_main(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def expect_refusal(capsys, root: Path, argv, match: str, status: int = 2, lines: int = 3) -> str:
    """Run `argv`; it must exit `status` with a message matching `match`, and change nothing under `root`."""
    before = snapshot(root)
    code, out, err = run_main(capsys, *argv)
    assert code == status, (code, out, err)
    assert re.search(match, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= lines, err
    assert snapshot(root) == before, "something was written"
    return err


@pytest.fixture
def topics(tmp_path) -> Path:
    return write_csv(tmp_path / "topics.csv", topic_rows(copies=4))


@pytest.fixture(scope="session")
def remote_code_model(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """A model folder whose config maps its classes to Python code in the folder; that code, if
    ever run, writes a marker file."""
    folder = tmp_path_factory.mktemp("remote") / "model"
    shutil.copytree(tiny_model("bert"), folder)
    marker = folder.parent / "CODE_RAN"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="sneakybert", auto_map={"AutoConfig": "sneaky.SneakyConfig",
                                                     "AutoModel": "sneaky.SneakyModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "sneaky.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertConfig, BertModel\n"
        "class SneakyConfig(BertConfig):\n    model_type = 'sneakybert'\n"
        "class SneakyModel(BertModel):\n    config_class = SneakyConfig\n")
    return folder, marker


# ------------------------------------------------------------------------------------------ data


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


TWO_CLASSES = [{"text": f"sentence number {i}", "label": "ab"[i % 2]} for i in range(20)]

DATA_CASES = {
    "a folder named like a CSV": (lambda d: (d / "x.csv").mkdir() or d / "x.csv", "is a folder, not a data file"),
    "JSONL with a truncated last line": (
        lambda d: write(d / "cut.jsonl", jsonl(TWO_CLASSES) + '{"text": "half a li'),
        r"line 21 is not valid JSON .*cut short"),
    "JSON holding one object": (lambda d: write(d / "one.json", json.dumps(TWO_CLASSES[0])), "holds one JSON object"),
    "JSONL whose text is a list": (
        lambda d: write(d / "l.jsonl", jsonl(TWO_CLASSES + [{"text": ["a", "b"], "label": "a"}])),
        r"'text' holds a list, not a single value, in 1 row\(s\) \(data rows 21\)"),
    "JSONL whose label is a dict": (
        lambda d: write(d / "d.jsonl", jsonl(TWO_CLASSES + [{"text": "x", "label": {"a": 1}}])),
        r"'label' holds a dict"),
    "labels 1 and 1.0": (
        lambda d: write_csv(d / "n.csv", [{"text": f"t {i}", "label": ["1", "1.0", "2"][i % 3]} for i in range(30)]),
        r"the labels '1', '1.0' look like the same number"),
    "JSONL labels 1 and 1.0": (
        lambda d: write(d / "n.jsonl", jsonl({"text": f"t {i}", "label": [1, 1.0, 2][i % 3]} for i in range(30))),
        r"the labels '1', '1.0' look like the same number"),
    "a label 'nan'": (
        lambda d: write_csv(d / "nan.csv", TWO_CLASSES + [{"text": "x", "label": "nan"}]),
        r"1 row\(s\) have the label 'nan', which reads as a missing value"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_data_files_that_cannot_be_read_are_named(case, tmp_path, capsys):
    make, match = DATA_CASES[case]
    path = make(tmp_path)
    expect_refusal(capsys, tmp_path, ["data", path], match)


def test_a_semicolon_csv_is_read_with_its_delimiter(tmp_path, capsys):
    path = write_csv(tmp_path / "semi.csv", TWO_CLASSES, delimiter=";")
    code, out, err = run_main(capsys, "data", path)
    assert code == 0, err
    assert "20 rows, 2 classes; text column 'text'" in out


def test_a_json_array_of_rows_is_read(tmp_path, capsys):
    path = write(tmp_path / "rows.json", json.dumps(TWO_CLASSES))
    code, out, err = run_main(capsys, "data", path)
    assert code == 0 and "20 rows, 2 classes" in out, err


def test_max_rows_says_what_it_kept(tmp_path, capsys):
    rows = [{"text": f"row {i} of class {c}", "label": f"c{c}"} for c in range(100) for i in range(4)]
    code, out, err = run_main(capsys, "data", write_csv(tmp_path / "many.csv", rows), "--max-rows", "150")
    assert code == 0, err
    assert "--max-rows 150: kept 300 rows, not 150, because each of the 100 classes keeps at least 3" in out


def test_the_demo_keeps_copies_of_an_article_in_one_split():
    from finetune_advisor.core import load_task

    task = load_task("demo:bbc-news")
    train, valid = set(task.train.texts), set(task.valid.texts)
    assert not train & valid and not train & set(task.test.texts)
    assert any("appear more than once" in w for w in task.warnings)
    assert not any("also appear in training" in w for w in task.warnings)


@pytest.mark.parametrize("command", ["data", "advise", "export"])
def test_model_shipped_code_never_runs(command, remote_code_model, topics, tmp_path, monkeypatch, capsys):
    import io

    folder, marker = remote_code_model
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 10))  # a "yes" to any question
    argv = {"data": ["data", topics, "--model", folder],
            "advise": ["advise", "--model", folder, "--data", topics, "--out", tmp_path / "run"],
            "export": ["export", folder, "--data", topics, "--out", tmp_path / "deploy"]}[command]
    if command == "export":  # a classification folder: the same code behind a *ForSequenceClassification
        config = json.loads((folder / "config.json").read_text())
        config["architectures"] = ["SneakyForSequenceClassification"]
        config["auto_map"]["AutoModelForSequenceClassification"] = "sneaky.SneakyModel"
        export_folder = tmp_path / "clf"
        shutil.copytree(folder, export_folder)
        (export_folder / "config.json").write_text(json.dumps(config))
        argv[1] = export_folder
    expect_refusal(capsys, tmp_path, argv, "ships its own Python code, which finetune-advisor does not run")
    assert not marker.exists()


# ------------------------------------------------------------------------------ output folders


def bad_outputs(tmp_path: Path) -> dict:
    (tmp_path / "a-file").write_text("keep me")
    return {"/proc (not writable)": ("/proc/finetune-advisor-out", "cannot be written"),
            "a file": (tmp_path / "a-file", "is a file"),
            "below a file": (tmp_path / "a-file" / "run", "is a file")}


@pytest.mark.parametrize("where", ["/proc (not writable)", "a file", "below a file"])
@pytest.mark.parametrize("command", ["advise", "search", "run"])
def test_an_unwritable_out_is_refused_before_any_work(command, where, topics, tmp_path, capsys):
    out, match = bad_outputs(tmp_path)[where]
    argv = [command, "--model", "demo:minilm", "--data", topics, "--out", out]
    expect_refusal(capsys, tmp_path, argv, match)


@pytest.mark.parametrize("command", ["advise", "search", "run"])
def test_a_corrupt_run_json_is_named_before_any_work(command, topics, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"commands": ')
    expect_refusal(capsys, tmp_path, [command, "--model", "demo:minilm", "--data", topics, "--out", run],
                   r"run.json' is not a readable JSON record")


@pytest.mark.parametrize("url,match", [
    ("sqlite:////proc/nope/x.db", "cannot be written"),
    ("sqlite:///{tmp}", "is a folder; name a database file"),
    ("postgresql://fa:hunter2@127.0.0.1:1/none?password=hunter3", "cannot be reached"),
])
def test_a_storage_that_cannot_work_is_refused_early(url, match, topics, tmp_path, capsys):
    url = url.format(tmp=tmp_path)
    for command in ("search", "run"):
        err = expect_refusal(capsys, tmp_path, [command, "--model", "demo:minilm", "--data", topics,
                                                "--out", tmp_path / "run", "--storage", url], match)
        assert "hunter2" not in err and "hunter3" not in err


@pytest.mark.parametrize("space,match", [
    ("batch_size=0", "space 'batch_size=0': batch_size 0 must be >= 1"),
    ("learning_rate=-1", "learning_rate -1.0 must be > 0"),
    ("learning_rate=1e-5:inf", "learning_rate inf is not a finite number"),
    ("epochs=0:3", "epochs 0 must be >= 1"),
    ("warmup_ratio=0:1", r"warmup_ratio 1.0 must be in \[0, 1\)"),
    ("layer_lr_decay=0.5,1.5", r"layer_lr_decay 1.5 must be in \(0, 1\]"),
    ("max_length=4", "max_length 4 must be >= 8"),
    ("unfrozen_layers=-1:2", "unfrozen_layers -1 must be >= 0"),
    ("schedule=steep", "schedule 'steep' must be one of linear, cosine"),
])
def test_a_space_value_out_of_range_is_refused_before_the_study(space, match, topics, tmp_path, capsys):
    expect_refusal(capsys, tmp_path, ["search", "--model", "demo:minilm", "--data", topics, "--out",
                                      tmp_path / "run", "--space", space], match)


# ----------------------------------------------------------------------------- export, predict


@pytest.fixture
def run_copy(searched_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(searched_run, run)
    return run


def test_export_never_replaces_a_folder_it_did_not_write(run_copy, tmp_path, capsys):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("my notes")
    expect_refusal(capsys, tmp_path, ["export", run_copy, "--out", keep], "did not write .*left untouched")
    assert (keep / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("where", ["/proc (not writable)", "a file", "below a file"])
def test_export_to_an_unwritable_out_is_refused(where, run_copy, tmp_path, capsys):
    out, match = bad_outputs(tmp_path)[where]
    expect_refusal(capsys, tmp_path, ["export", run_copy, "--out", out], match)


@pytest.mark.parametrize("damage,match", [
    (lambda run: (run / "run.json").write_text("{not json"), r"run.json' is not a readable JSON record"),
    (lambda run: (run / "run.json").write_text("[1, 2]"), r"run.json holds a JSON list"),
    (lambda run: (run / "best_model" / "labels.json").write_text("{"), r"labels.json' is not a readable JSON record"),
    (lambda run: (run / "best_model" / "labels.json").write_text(
        json.dumps({"labels": ["a", "b"], "pooling": "mean", "max_length": 32})),
     r"lists 2 labels but .*head.safetensors' holds a head for 3 classes"),
    (lambda run: (run / "best_model" / "model.safetensors").write_bytes(
        (run / "best_model" / "model.safetensors").read_bytes()[:5000]),
     r"the model in '.*best_model' could not be loaded"),
])
def test_a_broken_run_file_is_named(damage, match, run_copy, tmp_path, capsys):
    damage(run_copy)
    err = expect_refusal(capsys, tmp_path, ["export", run_copy], match)
    assert "--model" not in err  # no flag the user did not give


def test_nan_logits_fail_parity_and_nothing_is_exported(run_copy, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    head = run_copy / "best_model" / "head.safetensors"
    weights = load_file(str(head))
    weights["weight"][0, 0] = float("nan")
    save_file(weights, str(head))
    err = expect_refusal(capsys, tmp_path, ["export", run_copy, "--no-quantize", "--repeats", "1"],
                         "gives NaN or infinite logits", status=1, lines=5)  # 2 progress lines before
    assert "PyTorch gives NaN" in err
    assert not (run_copy / "export").exists()


@pytest.fixture
def export_copy(full_run, tmp_path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(full_run / "export", folder)
    return folder


@pytest.mark.parametrize("args,match", [
    ([""], "empty text: 1 of 1 inputs"),
    (["fine", "   "], r"empty text: 1 of 2 inputs .*\(number 2\)"),
    (["--batch-size", "0", "text"], "--batch-size 0 must be >= 1"),
    (["--variant", "../../outside.onnx", "text"], "outside the export folder"),
    (["--variant", "tokenizer.json", "text"], "is not an .onnx file"),
])
def test_predict_refuses_bad_input(args, match, export_copy, tmp_path, capsys):
    (tmp_path.parent / "outside.onnx").write_bytes(b"not a model")
    expect_refusal(capsys, tmp_path, ["predict", export_copy, *args], match)


def test_predict_refuses_a_binary_file(export_copy, tmp_path, capsys):
    binary = tmp_path / "texts.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    expect_refusal(capsys, tmp_path, ["predict", export_copy, "--file", binary], "is not UTF-8 text")


@pytest.mark.parametrize("record,match", [
    (lambda r: {**r, "recommended": "../outside.onnx"}, "outside the export folder"),
    (lambda r: {**r, "recommended": None}, "recommended must be a string, not null"),
    (lambda r: [r], "holds a JSON list"),
])
def test_predict_refuses_an_export_json_that_points_elsewhere(record, match, export_copy, tmp_path, capsys):
    (tmp_path / "outside.onnx").write_bytes(b"not a model")
    path = export_copy / "export.json"
    path.write_text(json.dumps(record(json.loads(path.read_text()))))
    expect_refusal(capsys, tmp_path, ["predict", export_copy, "text"], match)


# --------------------------------------------------------------------------------- dashboard


def test_the_dashboard_refuses_a_port_in_use(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expect_refusal(capsys, tmp_path, ["dashboard", tmp_path, "--port", port],
                       f"--port {port} is already in use on 127.0.0.1")


def test_run_json_never_holds_a_password(tmp_path, monkeypatch):
    from finetune_advisor.core import RunDir, mask_url

    assert mask_url("postgresql://u:pw@h:5/db?password=x&sslmode=require") == \
        "postgresql://u:***@h:5/db?password=***&sslmode=require"
    monkeypatch.setattr("sys.argv", ["finetune-advisor", "search", "--storage", "postgresql://u:pw1@h/db",
                                     "--other", "sqlite:///x.db?password=pw2"])
    RunDir(tmp_path).write_run_record(command="search", configs={"storage": "postgresql://u:pw3@h/db?pwd=pw4"})
    text = (tmp_path / "run.json").read_text()
    for secret in ("pw1", "pw2", "pw3", "pw4"):
        assert secret not in text
    assert "postgresql://u:***@h/db" in text


def test_storage_comes_from_the_environment(tmp_path, monkeypatch):
    from finetune_advisor.search import STORAGE_ENV, storage_url

    assert storage_url(None, tmp_path) == f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    monkeypatch.setenv(STORAGE_ENV, "postgresql://optuna@db/optuna")
    assert storage_url(None, tmp_path) == "postgresql://optuna@db/optuna"
    assert storage_url("sqlite:///given.db", tmp_path) == "sqlite:///given.db"


def test_stale_temp_folders_of_dead_processes_are_cleaned(tmp_path):
    import subprocess
    import sys

    from finetune_advisor.core import atomic_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".best_model.{dead}.tmp"
    live = tmp_path / f".best_model.{os.getppid()}.tmp"  # a live process's work in progress
    for folder in (stale, live):
        folder.mkdir()
        (folder / "weights").write_text("x")
    with atomic_folder(tmp_path / "best_model", marker="trial.json") as folder:
        (folder / "trial.json").write_text("{}")
    assert not stale.exists() and live.exists() and (tmp_path / "best_model" / "trial.json").exists()
