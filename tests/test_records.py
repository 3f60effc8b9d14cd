"""The run directory's records read into their types, all the way down: files written by the
previous version of this project (tests/fixtures/records_0_1, from a real `run`), keys a newer
version adds, and files that are not records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_advisor import AdviceRecord, ExportRecord, RunRecord, SearchRecord, TrialRecord
from finetune_advisor.core import InputError, Latency, Probe, RunDir, TrialRow, Variant

OLD = Path(__file__).parent / "fixtures" / "records_0_1"
TYPES = {"advice.json": AdviceRecord, "search.json": SearchRecord, "export.json": ExportRecord,
         "run.json": RunRecord, "trial.json": TrialRecord}


@pytest.mark.parametrize("file", sorted(TYPES))
def test_a_record_of_the_previous_version_reads_into_its_type_with_every_key_known(file):
    record = TYPES[file].read(OLD / file)
    assert record.unknown_keys() == []  # every key it wrote has a typed field today
    again = TYPES[file].from_json(record.to_json())
    assert again == record  # what is written reads back the same


def test_nested_parts_are_attributes():
    raw = json.loads((OLD / "advice.json").read_text())
    advice = AdviceRecord.read(OLD / "advice.json")
    assert isinstance(advice.probe, Probe) and advice.probe.accuracy == raw["probe"]["accuracy"]
    # the n-gram model of earlier versions is today's modality-neutral baseline
    assert advice.probe.baseline_accuracy == raw["probe"]["ngram_accuracy"]
    assert advice.probe.baseline_p_value == raw["probe"]["ngram_p_value"]
    assert advice.cost.per_epoch_seconds == raw["cost"]["per_epoch_seconds"]
    assert advice.thresholds.min_gain == raw["thresholds"]["min_gain"]

    search = SearchRecord.read(OLD / "search.json")
    assert all(isinstance(t, TrialRow) for t in search.trials) and search.n_trials.complete >= 1
    assert search.best.value == max(t.value for t in search.trials if t.state == "COMPLETE")
    assert search.best_model.number == search.best.number == TrialRecord.read(OLD / "trial.json").number

    export = ExportRecord.read(OLD / "export.json")
    assert isinstance(export.torch_latency_ms, Latency) and all(isinstance(v, Variant) for v in export.variants)
    assert export.variant(export.recommended).passed
    raw_export = json.loads((OLD / "export.json").read_text())
    quantised = [v for v in raw_export["variants"] if "from" in v]
    assert quantised and export.variant(quantised[0]["file"]).made_from == quantised[0]["from"]

    run = RunRecord.read(OLD / "run.json")
    assert run.commands[0].command == "run" and run.data_used().source == "demo:bbc-news"


def test_a_variant_writes_its_source_file_under_from():
    variant = Variant.from_json({"file": "model.int8.onnx", "precision": "int8", "passed": True, "from": "model.onnx"})
    assert variant.made_from == "model.onnx" and variant.to_json()["from"] == "model.onnx"
    assert "made_from" not in variant.to_json()


def test_keys_of_a_newer_version_are_kept_where_they_stand_and_written_back(tmp_path):
    raw = json.loads((OLD / "advice.json").read_text())
    raw["calibrated_on"] = "suite v9"
    raw["probe"]["fancy_score"] = 0.5
    record = AdviceRecord.from_json(raw)
    assert record.extra == {"calibrated_on": "suite v9"} and record.probe.extra == {"fancy_score": 0.5}
    assert sorted(record.unknown_keys()) == ["calibrated_on", "probe.fancy_score"]
    record.write(tmp_path)
    again = json.loads((tmp_path / "advice.json").read_text())
    assert again["calibrated_on"] == "suite v9" and again["probe"]["fancy_score"] == 0.5


@pytest.mark.parametrize("change, message", [
    (lambda a: a["probe"].update(accuracy="high"), r"advice.json: probe.accuracy must be a number, not"),
    (lambda a: a["probe"].pop("accuracy"), r"advice.json: probe lacks the entry 'accuracy'"),
    (lambda a: a.update(reasons="one"), r"advice.json: reasons must be a list"),
    (lambda a: a["cost"]["per_epoch_seconds"].update({"1": None}), r"cost.per_epoch_seconds.1 must be a number"),
    (lambda a: a.update(decision="maybe"), r"decision 'maybe' is not one of"),
])
def test_a_damaged_record_names_the_file_and_the_key(tmp_path, change, message):
    raw = json.loads((OLD / "advice.json").read_text())
    change(raw)
    (tmp_path / "advice.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=message):
        AdviceRecord.read(tmp_path)


def test_run_json_grows_one_command_at_a_time_and_says_its_data(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_run_record(command="advise", configs={"advisor": {"min_gain": 0.01}}, data_fingerprint="abc",
                         data_source=str(tmp_path / "d.csv"), data_config={"seed": 0})
    run.write_run_record(command="search", configs={"search": {"trials": 4}}, data_fingerprint="abc")
    record = RunRecord.read(run.path)
    assert [c.command for c in record.commands] == ["advise", "search"]
    assert record.data.source == str(tmp_path / "d.csv") and record.data.config == {"seed": 0}
    assert record.data_used() == record.data and record.versions["numpy"]
