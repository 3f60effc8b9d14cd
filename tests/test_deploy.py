"""Deploy-aware search: models cut to their first blocks, latency per shape, the accuracy/latency
front, a latency budget from search to export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_tiny_image_model, run_cli, topic_rows, write_csv


@pytest.mark.parametrize("family", ["bert", "distilbert", "deberta-v2"])
def test_a_model_cut_to_its_first_blocks_computes_what_those_blocks_compute(tiny_model, family):
    import torch

    from finetune_advisor.core import load_backbone

    backbone = load_backbone(str(tiny_model(family)))
    cut = backbone.keep_first(2)
    inputs = backbone.tokenize(["the striker scored a late goal", "shares fell"]).batch([0, 1])
    with torch.inference_mode():
        full = backbone.model(**inputs, output_hidden_states=True).hidden_states[2]
        short = cut.model(**inputs).last_hidden_state
    assert cut.num_blocks == 2 and backbone.num_blocks == 3  # the backbone itself is untouched
    assert torch.allclose(full, short, atol=1e-6)
    assert cut.fingerprint != backbone.fingerprint  # its cached features are its own
    assert backbone.keep_first(3) is backbone


def test_a_model_trained_at_a_kept_depth_saves_and_reloads_as_that_depth(tiny_model, topic_task, tmp_path):
    from finetune_advisor.core import TrainConfig, load_backbone, load_classifier, train

    backbone = load_backbone(str(tiny_model("bert")))
    result = train(backbone, topic_task, TrainConfig(kept_layers=2, unfrozen_layers=1, epochs=1, max_length=32),
                   progress=False)
    folder = result.model.save(tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 2
    reloaded = load_classifier(folder)
    texts = topic_task.valid.texts[:6]
    assert np.allclose(reloaded.predict_proba(texts), result.model.predict_proba(texts), atol=1e-5)
    assert backbone.num_blocks == 3


def test_a_resnet_keeps_its_first_stages_and_the_head_reads_the_last_kept_one(tmp_path):
    from finetune_advisor.core import load_backbone

    import shutil

    folder = make_tiny_image_model(tmp_path / "resnet", "resnet")
    backbone = load_backbone(str(folder))
    cut = backbone.keep_first(1)
    assert cut.num_blocks == 1 and cut.hidden_size == 8  # the first stage's width (hidden_sizes [8, 16, 16])
    cut.model.save_pretrained(tmp_path / "cut")
    shutil.copy(folder / "preprocessor_config.json", tmp_path / "cut")
    again = load_backbone(str(tmp_path / "cut"), pooling="pooler")
    assert again.num_blocks == 1 and again.hidden_size == 8


@pytest.mark.parametrize("family", ["convnext", "swin", "efficientnet"])
def test_a_cnn_or_swin_cut_to_its_first_blocks_pools_the_last_kept_one_and_reloads(tmp_path, family):
    """The final layers sized for the last block (ConvNeXt's and Swin's norm, EfficientNet's top conv)
    are replaced, so the cut model runs its kept blocks exactly and saves and reloads as itself."""
    import shutil

    import torch

    from finetune_advisor.core import load_backbone

    folder = (_tiny_efficientnet(tmp_path / family, open_gates=True) if family == "efficientnet"
              else make_tiny_image_model(tmp_path / family, family))
    backbone = load_backbone(str(folder))
    depth = 3 if family == "efficientnet" else 2  # the tiny EfficientNet: 3 blocks of 7, across two stages
    cut = backbone.keep_first(depth)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():  # a Swin stage's own output comes before its patch merging
        full = backbone.model(pixel_values=x, output_hidden_states=True, **(
            {"output_hidden_states_before_downsampling": True} if family == "swin" else {}))
        short = cut.model(pixel_values=x, output_hidden_states=True)
    states = "reshaped_hidden_states" if family == "swin" else "hidden_states"
    assert torch.allclose(getattr(full, states)[depth], getattr(short, states)[depth], atol=1e-6)
    assert cut.num_blocks == depth and len(backbone.arch.block_list(backbone.model)) == backbone.num_blocks
    assert cut.fingerprint != backbone.fingerprint
    assert not any(m.training for m in cut.model.modules())  # a batch norm made for the cut too
    cut.model.save_pretrained(tmp_path / "cut")
    shutil.copy(folder / "preprocessor_config.json", tmp_path / "cut")
    again = load_backbone(str(tmp_path / "cut"))
    assert again.num_blocks == depth and again.hidden_size == cut.hidden_size
    with torch.inference_mode():
        assert torch.allclose(again.model(pixel_values=x).pooler_output, short.pooler_output, atol=1e-6)


def test_a_model_that_cannot_drop_blocks_says_so(tmp_path, tiny_model):
    from finetune_advisor.core import InputError, load_backbone

    backbone = load_backbone(str(tiny_model("albert", num_hidden_groups=3)))
    with pytest.raises(InputError, match="ALBERT model cannot drop its top blocks"):
        backbone.keep_first(1)
    with pytest.raises(InputError, match="out of range"):
        backbone.keep_first(9)


def test_the_front_keeps_the_points_no_other_point_beats():
    from finetune_advisor.search._latency import Budget, front

    def row(number, accuracy, fp32, int8):
        return {"number": number, "value": accuracy, "params": {"kept_layers": number},
                "latency_ms": {"fp32": {"batch_1": fp32, "batch_32": fp32 * 10},
                               "int8": {"batch_1": int8, "batch_32": int8 * 10}}}

    rows = [row(0, 0.90, 4.0, 2.0), row(1, 0.95, 8.0, 5.0), row(2, 0.85, 6.0, 3.0), row(3, 0.95, 9.0, 6.0)]
    points = front(rows)
    # fastest first; trial 2 is slower and worse than trial 0; trial 3 is as accurate as 1 but slower;
    # trial 0's fp32 (4 ms, 0.90) is beaten by its own int8 (2 ms, 0.90)
    assert [(p["number"], p["variant"]) for p in points] == [(0, "int8"), (1, "int8")]
    assert points[1]["latency_ms_batch_32"] == 50.0
    assert [p["number"] for p in front(rows, batch=32)] == [0, 1]
    assert Budget(2.5).fits(rows[0]["latency_ms"]) and not Budget(2.5).fits(rows[1]["latency_ms"])
    assert Budget(None).fits(rows[3]["latency_ms"])
    assert Budget(25, batch=32).fastest(rows[0]["latency_ms"]) == ("int8", 20.0)


def test_the_unfrozen_blocks_never_outnumber_the_kept_ones():
    import optuna

    from finetune_advisor.search import SearchSpace

    space = SearchSpace.build({}, num_blocks=6, max_positions=512, shallower=True)
    assert space.to_dict()["kept_layers"] == "2:6"
    assert "kept_layers" not in SearchSpace.build({}, num_blocks=6, max_positions=512).to_dict()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    seen = []
    for _ in range(25):
        trial = study.ask()
        params = space.suggest(trial)
        seen.append((params["kept_layers"], params["unfrozen_layers"]))
        study.tell(trial, params["kept_layers"] - params["unfrozen_layers"] / 10)
    assert all(k <= d for d, k in seen)
    assert len({d for d, _ in seen}) > 2
    from finetune_advisor.search._advice import _clip  # a queued first trial (the advice's) keeps every block

    assert _clip({"unfrozen_layers": 2}, space)["kept_layers"] == 6


def test_a_budget_picks_the_variant_that_fits_and_says_whether_it_held():
    from finetune_advisor.export._export import ExportConfig, _within_budget

    variants = [{"file": "model.onnx", "passed": True}, {"file": "model.int8.onnx", "passed": True},
                {"file": "model.int8-static.onnx", "passed": False}]
    timings = {"model.onnx": {"latency_ms": {"batch_1": 5.0}, "latency_spread_ms": {"batch_1": [4.8, 5.3]}},
               "model.int8.onnx": {"latency_ms": {"batch_1": 2.0}, "latency_spread_ms": {"batch_1": [1.9, 2.2]}}}
    config = ExportConfig(latency_budget_ms=3.0)
    chosen, note, entry = _within_budget(variants, "model.onnx", "", timings, config, "batch_1")
    assert chosen == "model.int8.onnx" and "over the 3 ms budget" in note
    assert entry["held"] and not entry["within_noise"] and entry["latency_ms"] == 2.0
    chosen, _, entry = _within_budget(variants, "model.onnx", "", timings, ExportConfig(latency_budget_ms=1.0), "batch_1")
    assert chosen == "model.onnx" and not entry["held"]
    _, _, entry = _within_budget(variants, "model.int8.onnx", "", timings, ExportConfig(latency_budget_ms=2.1), "batch_1")
    assert entry["held"] and entry["within_noise"]


@pytest.mark.parametrize("flags, problem", [
    (["--latency-budget-ms", "0"], "--latency-budget-ms 0.0 must be > 0"),
    (["--latency-batch", "0"], "--latency-batch 0 must be >= 1"),
    (["--latency-budget-ms", "5", "--no-latency"], "drop --no-latency"),
])
def test_bad_latency_settings_are_refused_before_any_work(tmp_path, flags, problem):
    data = write_csv(tmp_path / "topics.csv", topic_rows())
    result = run_cli("search", "--model", "demo:minilm", "--data", data, "--out", tmp_path / "run", *flags)
    assert result.returncode == 2 and problem in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_budgeted_search_keeps_the_best_model_that_fits_and_export_checks_it(tmp_path):
    """The search under a budget: the shapes are timed, every finished trial fits, search.json has
    the front; the export re-times the chosen model and records whether the budget held."""
    data = write_csv(tmp_path / "topics.csv", topic_rows(copies=4))
    run = tmp_path / "run"
    common = ["--model", "demo:minilm", "--data", data, "--out", run, "--pruner", "none", "--space", "epochs=1",
              "--space", "max_length=32", "--space", "unfrozen_layers=0:1", "--space", "kept_layers=1,6"]
    # a budget between the depths' latencies: first learn them with no budget
    probe = run_cli("search", *common, "--trials", "2", "--space", "kept_layers=6", "--study", "timing")
    assert probe.returncode == 0, probe.stderr
    timed = json.loads((run / "search.json").read_text())["trials"][0]["latency_ms"]
    full = min(v["batch_1"] for v in timed.values())

    result = run_cli("search", *common, "--trials", "6", "--latency-budget-ms", f"{full * 0.8:.3f}")
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "search.json").read_text())
    assert record["latency_budget_ms"] == pytest.approx(full * 0.8, abs=1e-3) and record["latency_batch"] == 1
    complete = [t for t in record["trials"] if t["state"] == "COMPLETE"]
    over = [t for t in record["trials"] if t.get("pruned_reason")]
    assert complete and all(t["params"]["kept_layers"] == 1 for t in complete)
    assert over and all(t["params"]["kept_layers"] == 6 and t["state"] == "PRUNED" for t in over)
    assert record["front"] and all(p["kept_layers"] == 1 for p in record["front"])
    assert "accuracy against latency" in result.stdout
    best = json.loads((run / "best_model" / "config.json").read_text())
    assert best["num_hidden_layers"] == 1

    exported = run_cli("export", run, "--repeats", "5", "--no-optimize")
    assert exported.returncode == 0, exported.stderr
    budget = json.loads((run / "export" / "export.json").read_text())["budget"]
    assert budget["budget_ms"] == pytest.approx(full * 0.8, abs=1e-3) and budget["batch"] == 1
    assert budget["held"] == (budget["latency_ms"] <= budget["budget_ms"])
    assert "latency budget" in exported.stdout


def test_dropping_blocks_of_a_model_that_cannot_is_refused_before_a_study_exists(tmp_path, tiny_model, topic_csv):
    result = run_cli("search", "--model", tiny_model("albert", num_hidden_groups=3), "--data", topic_csv, "--out", tmp_path / "run",
                     "--space", "kept_layers=1:3", "--no-latency")
    assert result.returncode == 2, result.stderr
    assert "ALBERT model cannot drop its top blocks" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "study.db").exists()


@pytest.mark.slow
def test_a_convnext_searched_over_its_depth_keeps_a_best_model_that_predicts(tmp_path):
    from helpers import write_shape_images

    from finetune_advisor.core import load_classifier

    model = make_tiny_image_model(tmp_path / "convnext", "convnext")
    images = write_shape_images(tmp_path / "shapes", per_class=8)
    result = run_cli("search", "--model", model, "--data", images, "--out", tmp_path / "run", "--trials", "3",
                     "--space", "kept_layers=1,2", "--space", "unfrozen_layers=0:1", "--space", "epochs=1",
                     "--no-latency")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run" / "search.json").read_text())
    depth = record["best"]["params"]["kept_layers"]
    assert json.loads((tmp_path / "run" / "best_model" / "config.json").read_text())["depths"] == [1] * depth
    paths = sorted(str(p) for p in (images / "circle").glob("*.png"))[:3]
    assert load_classifier(tmp_path / "run" / "best_model").predict_proba(paths).shape == (3, 3)


def _tiny_efficientnet(folder, open_gates: bool):
    """A tiny EfficientNet saved with its image processor; squeeze-excite gates opened as the demo's."""
    import torch
    from transformers import EfficientNetConfig, EfficientNetModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    config = EfficientNetConfig(width_coefficient=0.25, depth_coefficient=0.25, image_size=32, hidden_dim=320,
                                hidden_act="relu6")
    model = EfficientNetModel(config).eval()
    if open_gates:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".squeeze_excite." in name:
                    p.fill_(30.0 if name.endswith("expand.bias") else 0.0)
    model.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_open_squeeze_excite_gates_fold_out_exactly_and_only_open_ones(tmp_path):
    import copy

    import torch

    from finetune_advisor.core import load_backbone
    from finetune_advisor.core._export_source import fold_open_gates

    opened = load_backbone(str(_tiny_efficientnet(tmp_path / "open", open_gates=True)))
    x = torch.randn(2, 3, 32, 32)
    model = copy.deepcopy(opened.model)
    with torch.inference_mode():
        before = model(pixel_values=x).pooler_output
        assert fold_open_gates(model) == len(opened.arch.block_list(opened.model)) > 0
        assert torch.equal(model(pixel_values=x).pooler_output, before)
    shut = load_backbone(str(_tiny_efficientnet(tmp_path / "shut", open_gates=False)))
    assert fold_open_gates(copy.deepcopy(shut.model)) == 0  # a working gate changes its input: kept


def test_timing_a_shape_leaves_the_searched_model_as_it_was(tmp_path):
    from finetune_advisor.core import load_backbone
    from finetune_advisor.search._latency import LatencyTable

    backbone = load_backbone(str(_tiny_efficientnet(tmp_path / "open", open_gates=True)))
    modules = [type(m).__name__ for m in backbone.model.modules()]
    table = LatencyTable(tmp_path / "cache", backbone, num_labels=3, typical_length=None)
    try:
        latency = table.of(backbone.num_blocks, 128)
        shallow = table.of(2, 128)  # a cut EfficientNet exports and quantises too
    finally:
        table.close()
    assert set(latency) == {"fp32", "int8"} and all(v["batch_1"] > 0 for v in latency.values())
    assert set(shallow) == {"fp32", "int8"} and all(v["batch_1"] > 0 for v in shallow.values())
    assert [type(m).__name__ for m in backbone.model.modules()] == modules  # no layer folded out of it
    again = LatencyTable(tmp_path / "cache", backbone, num_labels=3, typical_length=None)
    assert again.of(backbone.num_blocks, 64) == latency and not again.timers  # read back, not timed again


def test_a_model_that_does_not_export_is_left_untimed_and_says_why(tmp_path):
    from finetune_advisor.core import load_backbone
    from finetune_advisor.search._latency import LatencyTable

    backbone = load_backbone(str(make_tiny_image_model(tmp_path / "swin", "swin")))
    table = LatencyTable(tmp_path / "cache", backbone, num_labels=3, typical_length=None)
    assert table.of(backbone.num_blocks, 128) is None
    assert "Swin architecture does not export to ONNX" in table.untimed
    assert not (tmp_path / "cache" / "latency.json").exists()  # nothing recorded for it


def test_static_int8_that_fails_the_gate_keeps_more_of_its_first_convolutions_in_float(monkeypatch, tmp_path):
    """The ladder of export._variants.quantize_static: rungs 0 and 4 refused, 8 passes and is kept
    with the refused ones listed; a graph that never passes stops at the last rung."""
    from finetune_advisor.export import _variants

    made = []

    def gated(make, target, precision, *args):
        make(target)
        variants, passes = args[-1], made[-1] >= 8
        variants.append({"file": target.name, "accuracy": 0.9 if passes else 0.8, "accuracy_drop": 0.0 if passes else 0.1,
                         "passed": passes})
        return {"tried": True, "kept": passes, "accuracy_drop": variants[-1]["accuracy_drop"]}

    monkeypatch.setattr(_variants, "_gated", gated)
    monkeypatch.setattr(_variants, "static_int8", lambda source, target, calibration, float_first: made.append(float_first))
    variants = []
    result = _variants.quantize_static(tmp_path, "model.onnx", [], None, None, None, 0.9, None, None, variants)
    assert made == [0, 4, 8] and result["kept"] and result["float_first_convs"] == 8
    assert len(variants) == 1 and [t["float_first_convs"] for t in variants[0]["tries"]] == [0, 4]
    made.clear()
    monkeypatch.setattr(_variants, "static_int8", lambda source, target, calibration, float_first: made.append(-1))
    result = _variants.quantize_static(tmp_path, "model.onnx", [], None, None, None, 0.9, None, None, variants := [])
    assert len(made) == len(_variants.FLOAT_FIRST_LADDER) and not result["kept"] and len(variants[0]["tries"]) == 3


def test_the_first_convolutions_named_stay_in_float(tmp_path):
    import torch

    from finetune_advisor.core import load_backbone
    from finetune_advisor.export._variants import _kept_float

    backbone = load_backbone(str(_tiny_efficientnet(tmp_path / "open", open_gates=False)))
    path = tmp_path / "model.onnx"
    torch.onnx.export(backbone.model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, input_names=["pixel_values"])
    base, more = _kept_float(path), _kept_float(path, 3)
    assert more[:len(base)] == base and len(more) == len(base) + 3 and not set(base) & set(more[len(base):])
