"""The command line: help, `data` on the demo, and every data error as exit status 2 with its message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import topic_rows, write_csv
from finetune_advisor.pipeline import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "finetune_advisor", *args], capture_output=True, text=True, timeout=300)


def test_help_teaches():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "finetune-advisor data demo:bbc-news" in result.stdout and "demo:minilm" in result.stdout


def test_data_on_the_demo_prints_the_summary():
    result = run_cli("data", "demo:bbc-news")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "demo:bbc-news: 2225 rows, 5 classes" in out
    assert "business" in out and "train" in out and "valid" in out and "test" in out
    assert "train token lengths: median" in out
    assert "appear more than once" in out  # the BBC corpus repeats some articles, kept in one split


def test_data_on_a_csv(tmp_path, capsys):
    path = write_csv(tmp_path / "d.csv", topic_rows(copies=3))
    assert main(["data", str(path), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "54 rows, 3 classes" in out and "total" in out


def _bad_files(tmp_path):
    rows = topic_rows()
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ncaf\xe9,a\n")
    (tmp_path / "empty.csv").write_text("")
    blanks = [dict(r) for r in rows]
    blanks[0]["text"] = ""
    return {
        "missing": (["nope.csv"], "'nope.csv' does not exist"),
        "non-utf8": ([str(tmp_path / "latin1.csv")], "line 2 is not valid UTF-8"),
        "empty": ([str(tmp_path / "empty.csv")], "is empty"),
        "column": ([str(write_csv(tmp_path / "c.csv", rows)), "--label-column", "lable"],
                   "Did you mean 'label'?"),
        "blank texts": ([str(write_csv(tmp_path / "b.csv", blanks))], "1 row(s) have an empty or missing 'text'"),
        "one class": ([str(write_csv(tmp_path / "o.csv", [{"text": f"t{i}", "label": "x"} for i in range(5)]))],
                      "at least 2 classes"),
        "tiny class": ([str(write_csv(tmp_path / "t.csv", rows + [{"text": "solo", "label": "rare"}]))],
                       "fewer than 2 examples"),
        "unseen": ([str(write_csv(tmp_path / "tr.csv", rows)), "--valid",
                    str(write_csv(tmp_path / "va.csv", [{"text": "x", "label": "new"}]))], "never seen in training"),
        "demo": (["demo:imdb"], "not a bundled demo"),
    }


@pytest.mark.parametrize("case", ["missing", "non-utf8", "empty", "column", "blank texts", "one class",
                                  "tiny class", "unseen", "demo"])
def test_bad_data_exits_2_with_one_clear_message(tmp_path, capsys, case):
    args, message = _bad_files(tmp_path)[case]
    assert main(["data", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_model_for_token_lengths_exits_2(tmp_path, capsys):
    path = write_csv(tmp_path / "d.csv", topic_rows())
    assert main(["data", str(path), "--model", str(tmp_path)]) == 2
    assert "has no config.json" in capsys.readouterr().err
