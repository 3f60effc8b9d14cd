"""Run directory: atomic JSON records and run.json."""

from __future__ import annotations

import json

import pytest

from finetune_advisor.core import RunDir, write_json_atomic


def test_atomic_write_leaves_no_temp_file_and_keeps_the_old_record_on_failure(tmp_path):
    path = write_json_atomic(tmp_path / "advice.json", {"decision": "fine-tune", "accuracy": 0.9})
    assert json.loads(path.read_text()) == {"decision": "fine-tune", "accuracy": 0.9}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"accuracy": float("nan")})  # not valid JSON: refused, not written
    assert json.loads(path.read_text())["decision"] == "fine-tune"
    assert [p.name for p in tmp_path.iterdir()] == ["advice.json"]


def test_dataclasses_numpy_and_paths_become_json(tmp_path):
    from dataclasses import dataclass

    import numpy as np

    @dataclass
    class Cfg:
        lr: float = 1e-3
        where: object = tmp_path

    write_json_atomic(tmp_path / "r.json", {"cfg": Cfg(), "acc": np.float32(0.5), "n": np.int64(3)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"cfg": {"lr": 1e-3, "where": str(tmp_path)},
                                                              "acc": 0.5, "n": 3}


def test_run_record_appends_commands_with_versions(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.path.exists()  # nothing is created before the first write
    run.write_run_record(command="advise", configs={"advisor": {"min_gain": 0.01}}, data_fingerprint="abc")
    run.write_run_record(command="search", configs={"search": {"trials": 4}}, data_fingerprint="abc")
    record = run.read("run.json")
    assert [c["command"] for c in record["commands"]] == ["advise", "search"]
    assert record["data_fingerprint"] == "abc"
    assert record["versions"]["torch"] and record["versions"]["transformers"] and record["versions"]["python"]
