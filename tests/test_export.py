"""export/: ONNX that matches PyTorch, the int8 gate, the deploy folder and its torch-free
predictor, and every way an export can fail without leaving a partial folder behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finetune_advisor.core import InputError, RunDir
from helpers import run_cli, topic_rows, write_csv

QUICK = ["--repeats", "3"]


@pytest.fixture(scope="module")
def exported(searched_run, tmp_path_factory):
    """The searched run exported by the real command (data read back from RUN/run.json)."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(searched_run, run)
    result = run_cli("export", run, *QUICK)
    assert result.returncode == 0, result.stderr
    return run, result


@pytest.fixture(scope="module")
def topic_valid(searched_run):
    from finetune_advisor.core import RunDir

    return RunDir(searched_run).load_task()


def test_export_json_follows_the_contract(exported):
    run, result = exported
    record = json.loads((run / "export" / "export.json").read_text())
    assert set(record) >= {"source", "opset", "variants", "torch_latency_ms", "recommended"}
    assert record["opset"] == 18 and set(record["torch_latency_ms"]) == {"batch_1", "batch_32"}
    fp32 = record["variants"][0]
    assert fp32["file"] == "model.onnx" and fp32["passed"] and fp32["max_abs_diff"] <= 1e-4
    for v in record["variants"]:
        assert set(v) >= {"file", "precision", "passed", "why"}
        assert (run / "export" / v["file"]).exists() == v["passed"]  # refused variants are not shipped
        assert bool(v["why"]) != v["passed"]
        if v["passed"]:
            assert set(v["latency_ms"]) == {"batch_1", "batch_32"} and 0 <= v["accuracy"] <= 1
    int8 = next(v for v in record["variants"] if v["precision"] == "int8")
    assert int8["passed"] == (int8["accuracy_drop"] <= 0.01)
    passed = {v["file"]: v for v in record["variants"] if v["passed"]}
    b32 = {f: v["latency_ms"]["batch_32"] for f, v in passed.items()}
    exact = [f for f, v in passed.items() if v["precision"].startswith("fp32")]
    assert record["recommended"] in passed and b32[record["recommended"]] <= min(b32[f] for f in exact)
    for v in passed.values():
        q1, q3 = v["latency_spread_ms"]["batch_32"]
        assert q1 <= v["latency_ms"]["batch_32"] <= q3
    assert "recommended:" in result.stdout
    for name in ("tokenizer.json", "labels.json"):
        assert (run / "export" / name).exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".export.")]


def test_attention_is_fused_and_quantised_as_qattention(exported):
    run, _ = exported
    record = json.loads((run / "export" / "export.json").read_text())
    assert record["fusion"]["kept"] and record["fusion"]["fused_operators"]["attention"] == 6  # MiniLM's 6 layers
    fused = next(v for v in record["variants"] if v["file"] == "model.opt.onnx")
    assert fused["max_abs_diff"] <= 1e-4
    int8 = next(v for v in record["variants"] if v["precision"] == "int8")
    assert int8["from"] == "model.opt.onnx" and int8["quantized_nodes"]["QAttention"] == 6


def test_int8_weights_have_one_scale_per_output_channel(exported, tmp_path):
    """One scale per weight tensor flipped 22 of 1,352 unseen BBC predictions, one per output
    channel 4 (export._variants.dynamic_int8): every quantised weight carries a scale vector."""
    import onnx
    from onnx import numpy_helper

    from finetune_advisor.export._variants import dynamic_int8

    run, _ = exported
    dynamic_int8(run / "export" / "model.opt.onnx", tmp_path / "int8.onnx")
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    attention = [values[n.input[4]] for n in graph.node if n.op_type == "QAttention"]  # weight_scale
    matmul = [values[n.input[3]] for n in graph.node if n.op_type == "MatMulInteger"]  # b_zero_point
    assert len(attention) == 6 and all(s.shape == (3 * 384,) for s in attention)  # packed Q, K, V columns
    assert matmul and all(z.size == values[n.input[1]].shape[1] for z, n in
                          zip(matmul, [n for n in graph.node if n.op_type == "MatMulInteger"]))


def test_the_deploy_folder_runs_anywhere_and_agrees_with_pytorch(exported, topic_valid, tmp_path):
    from finetune_advisor.core import load_classifier
    from finetune_advisor.export import Predictor

    run, _ = exported
    moved = shutil.copytree(run / "export", tmp_path / "deploy")  # copy the folder and it runs
    torch_probs = load_classifier(run / "best_model").predict_proba(topic_valid.valid.texts)
    predictor = Predictor(moved, "model.onnx")
    onnx_probs = predictor.predict_proba(topic_valid.valid.texts)
    assert np.abs(onnx_probs - torch_probs).max() < 1e-4
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).all()
    out = predictor.predict(["the striker scored a late goal"])
    assert out[0]["label"] in topic_valid.labels and 0 < out[0]["score"] <= 1


def test_predict_uses_onnxruntime_only(exported):
    run, _ = exported
    code = ("import sys, json\n"
            "from finetune_advisor.pipeline.cli import main\n"
            f"status = main(['predict', {str(run / 'export')!r}, 'shares fell on the stock market', 'a new phone'])\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert status == 0 and not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in lines] == ["shares fell on the stock market", "a new phone"]
    assert all(set(r) == {"text", "label", "score"} for r in lines)


def test_predict_reads_a_file(exported, tmp_path):
    run, _ = exported
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "the bank raised interest rates"}\n{"text": "the team won the match"}\n')
    result = run_cli("predict", run / "export", "--file", texts)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_a_corrupt_onnx_file_is_a_clear_error(exported, tmp_path):
    run, _ = exported
    broken = shutil.copytree(run / "export", tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not a model")
    result = run_cli("predict", broken, "--variant", "model.onnx", "some text")
    assert result.returncode == 2 and "is not a loadable ONNX model" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_without_best_model_exits_2(tmp_path):
    result = run_cli("export", tmp_path)
    assert result.returncode == 2 and "has no best_model/" in result.stderr and "finetune-advisor search" in result.stderr


def test_a_model_that_is_not_a_classifier_exits_2(minilm_source, tmp_path):
    data = write_csv(tmp_path / "t.csv", topic_rows())
    result = run_cli("export", minilm_source, "--out", tmp_path / "out", "--data", data)
    assert result.returncode == 2 and "is not a classification model" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_transformers_sequence_classification_folder_exports(tiny_model, tmp_path, topic_task):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune_advisor.export import ExportConfig, Predictor, export

    folder = tmp_path / "hf"
    source = tiny_model("roberta")
    labels = list(topic_task.labels)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    record = export(folder, tmp_path / "out", topic_task, ExportConfig(repeats=2), progress=lambda s: None)
    assert record.variants[0].passed and record.variants[0].max_abs_diff <= 1e-4
    fused = [v for v in record.variants if v.file == "model.opt.onnx"]  # another family's graph, fused or not
    assert all(v.max_abs_diff <= 1e-4 for v in fused if v.passed) and record.fusion["tried"]
    assert Predictor(tmp_path / "out").labels == labels


def test_an_architecture_that_does_not_export_is_named(tmp_path):
    import torch

    from finetune_advisor.core import ExportSource
    from finetune_advisor.export._onnx import to_onnx

    class DataDependent(torch.nn.Module):  # control flow on values: torch.export cannot trace it
        def forward(self, input_ids, attention_mask):
            if input_ids.sum() > 1000:
                return input_ids.float()[:, :2]
            return attention_mask.float()[:, :2]

    class Tok:
        def __call__(self, texts, pairs=None, **kw):
            return {"input_ids": np.ones((len(texts), 4), dtype=np.int64),
                    "attention_mask": np.ones((len(texts), 4), dtype=np.int64)}

    source = ExportSource(DataDependent(), Tok(), ["a", "b"], 16, ("input_ids", "attention_mask"), "strangeformer")
    with pytest.raises(InputError, match="the strangeformer architecture does not export to ONNX"):
        to_onnx(source, tmp_path / "m.onnx", 18)


def test_a_failing_parity_check_exports_nothing_and_lists_every_check(searched_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(searched_run, run)
    result = run_cli("export", run, "--atol", "1e-12", "--rtol", "0", *QUICK)
    assert result.returncode == 1
    assert "does not match PyTorch, so nothing was exported" in result.stderr
    assert "validation split: |logit difference|" in result.stderr and "batch 1, shortest text" in result.stderr
    assert "--atol / --rtol" in result.stderr  # the refusal names what loosens it
    assert not (run / "export").exists() and not [p for p in run.iterdir() if p.name.startswith(".export.")]


def test_a_write_failing_half_way_leaves_the_old_export_untouched(searched_run, tmp_path, monkeypatch):
    from finetune_advisor.export import ExportConfig, export
    from finetune_advisor.export import _export as module

    run = tmp_path / "run"
    shutil.copytree(searched_run, run)
    (run / "export").mkdir()
    (run / "export" / "export.json").write_text('{"old": true}')
    task = RunDir(run).load_task()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "quantize", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export(run / "best_model", run / "export", task, ExportConfig(repeats=2, optimize=False),
               progress=lambda s: None)
    assert json.loads((run / "export" / "export.json").read_text()) == {"old": True}
    assert not [p for p in run.iterdir() if p.name.startswith(".export.")]


def _timed(file, precision, median, q1, q3):
    return {"file": file, "precision": precision, "passed": True, "why": "",
            "latency_ms": {"batch_1": 1.0, "batch_32": median}, "latency_spread_ms": {"batch_32": [q1, q3]}}


@pytest.mark.parametrize("int8, expected, noisy", [
    ((400, 380, 420), "model.int8.onnx", False),  # clearly faster: its upper quartile below fp32's lower
    ((600, 560, 640), "model.opt.onnx", True),   # faster by median, but within the fp32 file's spread
    ((900, 880, 920), "model.opt.onnx", False),  # slower than fp32 ONNX: never recommended
])
def test_int8_is_recommended_only_when_clearly_faster_than_fp32(int8, expected, noisy):
    from finetune_advisor.export._variants import recommend

    variants = [_timed("model.onnx", "fp32", 800, 780, 830), _timed("model.opt.onnx", "fp32-fused", 650, 620, 690),
                _timed("model.int8.onnx", "int8", *int8), {"file": "x.onnx", "precision": "int8", "passed": False}]
    file, note = recommend(variants)
    assert file == expected and bool(note) == noisy
    if noisy:
        assert "within noise" in note and "model.int8.onnx" in note


def test_timings_interleave_the_contenders():
    from finetune_advisor.export._variants import Timer

    calls = []
    timer = Timer.__new__(Timer)
    timer.repeats, timer.feeds = 10, {1: "one", 32: "thirty-two"}
    out = timer.measure({"a": lambda f: calls.append(("a", f)), "b": lambda f: calls.append(("b", f))})
    at_1 = [c for c in calls if c[1] == "one"]
    assert at_1 == ([("a", "one")] * 6 + [("b", "one")] * 6) * 3  # in turn: 1 untimed + 5 timed; 3 rounds at least
    assert [c[0] for c in calls if c[1] == "thirty-two"] == ["a", "a", "b", "b"] * 3  # 1 untimed + 1 timed
    assert set(out["a"]["latency_ms"]) == {"batch_1", "batch_32"}
    q1, q3 = out["b"]["latency_spread_ms"]["batch_32"]
    assert q1 <= out["b"]["latency_ms"]["batch_32"] <= q3


def test_a_variant_onnxruntime_cannot_run_is_a_refusal_not_a_crash(tmp_path):
    """A graph onnxruntime refuses (here: not a graph at all) becomes one sentence naming the file,
    which parity and the int8 gate record as the reason the variant is refused."""
    from finetune_advisor.export._checks import DoesNotRun, onnx_logits, parity

    bad = tmp_path / "model.opt.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(DoesNotRun, match=r"^model\.opt\.onnx does not run in onnxruntime: "):
        onnx_logits(None, bad, None)
    variant = {}
    failures = parity(None, bad, None, None, 1e-4, variant)
    assert len(failures) == 1 and failures[0].startswith("model.opt.onnx does not run in onnxruntime")
    assert variant["max_abs_diff"] is None


def test_parity_tolerance_is_absolute_plus_relative_to_the_logits_scale():
    """|onnx - torch| <= atol + rtol x the row's largest |logit|: a deep network's rounding on large
    logits passes, the same difference on small logits does not, and the worst element is reported."""
    from finetune_advisor.export._checks import Tolerance

    tol = Tolerance(atol=1e-4, rtol=1e-3)
    torch_logits = np.array([[12.0, -3.0, 0.01], [0.2, 0.1, -0.1]])
    large = torch_logits + np.array([[9e-4, 0, 9e-4], [0, 0, 0]])  # 9e-4 <= 1e-4 + 1e-3 x 12
    diff, allowed = tol.excess(large, torch_logits)
    assert diff == pytest.approx(9e-4) and allowed == pytest.approx(1e-4 + 12e-3) and diff <= allowed
    small = torch_logits + np.array([[0, 0, 0], [0, 9e-4, 0]])  # 9e-4 > 1e-4 + 1e-3 x 0.2
    diff, allowed = tol.excess(small, torch_logits)
    assert diff == pytest.approx(9e-4) and allowed == pytest.approx(3e-4) and diff > allowed
    assert "atol 0.0001 + rtol 0.001" in tol.describe(diff, allowed)
    assert Tolerance(1e-4, 0.0).excess(large, torch_logits)[1] == pytest.approx(1e-4)  # rtol 0: atol alone


def test_export_config_checks_rtol():
    from finetune_advisor.export import ExportConfig

    with pytest.raises(InputError, match="rtol -1 must be >= 0"):
        ExportConfig(rtol=-1)
