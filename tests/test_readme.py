"""The README cannot rot: its set-up commands are the ones CI runs, every `finetune-advisor`
command in it parses, and its demo and quick-start commands run end to end (with a tiny budget),
leaving every record of the run directory and a model that predicts."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from helpers import run_cli, topic_rows, write_csv

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
# appended to `run`: a small slice, short inputs, two trials, and a search whatever the advice
TINY = {"run": ["--max-rows", "150", "--max-length", "32", "--trials", "2", "--force-search"]}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[list[str]]:
    """`finetune-advisor …` commands of a block (continuation lines joined, comments dropped)."""
    joined = block.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["finetune-advisor"]:
                found.append(words[1:])
    return found


def test_the_setup_commands_are_the_ones_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    setup = [b for b in bash_blocks(README) if "python3 -m venv" in b]
    assert len(setup) == 2
    demo, tests = setup
    assert "pip install torch==2.13.0" in demo and "finetune-advisor run --out runs/demo" in demo
    test_command = tests.strip().split("&&")[-1].strip()
    assert test_command == "python -m pytest -q"
    assert ci.strip().splitlines()[-1] == test_command  # CI runs exactly the README's test command
    assert "pip install --quiet torch==2.13.0" in ci and 'pip install --quiet -e ".[test]"' in ci


def test_every_command_in_the_readme_parses():
    from finetune_advisor.pipeline.cli import build_parser

    found = [c for block in bash_blocks(README) for c in commands(block)]
    assert len(found) >= 8
    parser = build_parser()
    for words in found:
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"README command does not parse: finetune-advisor {' '.join(words)}")


@pytest.mark.slow
def test_the_demo_command_runs_end_to_end(tmp_path):
    """`finetune-advisor run --out runs/demo` from the README, on a slice: every record, then a prediction."""
    from finetune_advisor.export import Predictor

    (demo,) = [c for b in bash_blocks(README) if "python3 -m venv" in b for c in commands(b)]
    run = tmp_path / "runs" / "demo"
    result = run_cli(*[str(run) if w == "runs/demo" else w for w in demo], *TINY["run"])
    assert result.returncode == 0, result.stderr
    assert f"finetune-advisor dashboard {run}" in result.stdout
    record = json.loads((run / "run.json").read_text())
    assert [c["command"] for c in record["commands"]] == ["run"]
    assert record["data"]["source"] == "demo:bbc-news" and record["data"]["fingerprint"]
    advice = json.loads((run / "advice.json").read_text())
    search = json.loads((run / "search.json").read_text())
    # the search followed the advice: a head alone after head-only (or zero-shot, searched as asked)
    assert (search["space"]["unfrozen_layers"] == "0") == (advice["decision"] == "head-only"), advice["decision"]
    assert search["finished"] == (1 if advice["decision"] == "head-only" else 2) and search["best"] is not None
    assert json.loads((run / "best_model" / "trial.json").read_text())["number"] == search["best"]["number"]
    export = json.loads((run / "export" / "export.json").read_text())
    assert export["variants"][0]["passed"] and (run / "export" / export["recommended"]).exists()
    (prediction,) = Predictor(run / "export").predict(["The striker scored twice in the cup final"])
    assert prediction["label"] == "sports" and prediction["score"] > 0.5


@pytest.mark.slow
def test_the_quick_start_runs_on_a_csv(tmp_path):
    block = README.split("<!-- quickstart")[1]
    quick = commands(bash_blocks(block)[0])
    assert [c[0] for c in quick] == ["data", "run", "predict", "dashboard"]
    write_csv(tmp_path / "reviews.csv", topic_rows(copies=4))
    for words in quick:
        if words[0] == "dashboard":  # a server: the dashboard tests start it
            continue
        words = [str(tmp_path / w) if w.startswith(("reviews.csv", "runs/")) else w for w in words]
        result = run_cli(*words, *TINY.get(words[0], []))
        assert result.returncode == 0, (words, result.stderr)
    assert (tmp_path / "runs" / "reviews" / "export" / "export.json").exists()
    assert json.loads(result.stdout.splitlines()[0])["label"] == "tech"  # "The battery died after a week"


@pytest.mark.slow
def test_the_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, as written, in a fresh folder."""
    block = README.split("<!-- python-api -->")[1]
    (code,) = re.findall(r"```python\n(.*?)```", block, flags=re.S)[:1]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Python API)", "exec"), {})
    from finetune_advisor import ExportRecord, RunRecord, SearchRecord

    run = tmp_path / "runs" / "notebook"
    assert SearchRecord.read(run).best is not None
    assert ExportRecord.read(run / "export").variants[0].passed
    assert not (run / "run.json").exists() or RunRecord.read(run)  # the API writes no run.json of its own
