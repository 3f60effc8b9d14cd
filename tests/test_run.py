"""`finetune-advisor run` follows the advice: it stops on zero-shot (unless --force-search) and
trains only a head when the advice is head-only. The full chain on the demo is in test_readme."""

from __future__ import annotations

import json

import pytest

from finetune_advisor.pipeline.cli import main
from helpers import topic_rows, write_csv


@pytest.fixture
def advised_as(monkeypatch, full_run):
    """Make the advisor return a real record (the full run's) with the decision given."""
    from finetune_advisor import advisor
    from finetune_advisor.core import AdviceRecord

    real = json.loads((full_run / "advice.json").read_text())

    def set_decision(decision: str):
        def fake_advise(backbone, task, config, *, inputs=None, progress=True, run_dir=None):
            record = AdviceRecord.from_json({**real, "decision": decision, "data_fingerprint": task.fingerprint,
                                             "reasons": [f"(test) the advice is {decision}"]})
            record.write(run_dir)
            return record

        monkeypatch.setattr(advisor, "advise", fake_advise)

    return set_decision


def test_run_stops_when_the_advice_is_zero_shot(advised_as, tmp_path, capsys):
    advised_as("zero-shot")
    data = write_csv(tmp_path / "t.csv", topic_rows(copies=4))
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "run"), "--max-length", "32"]) == 0
    out = capsys.readouterr().out
    assert "The advice is ZERO-SHOT, so nothing was trained" in out and "(test) the advice is zero-shot" in out
    assert (tmp_path / "run" / "advice.json").exists() and not (tmp_path / "run" / "search.json").exists()


def test_run_trains_a_head_when_the_advice_is_head_only(advised_as, tmp_path, capsys):
    advised_as("head-only")
    data = write_csv(tmp_path / "t.csv", topic_rows(copies=4))
    run = tmp_path / "run"
    assert main(["run", "--data", str(data), "--out", str(run), "--max-length", "32", "--trials", "2",
                 "--no-quantize"]) == 0
    search = json.loads((run / "search.json").read_text())
    assert search["space"]["unfrozen_layers"] == "0"
    assert all(t["params"]["unfrozen_layers"] == 0 for t in search["trials"])
    assert (run / "export" / "model.onnx").exists() and not (run / "export" / "model.int8.onnx").exists()
    assert f"finetune-advisor dashboard {run}" in capsys.readouterr().out
