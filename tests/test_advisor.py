"""The advisor: zero-shot methods on known answers, bad optional files, and `advise` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetune_advisor.advisor import AdvisorConfig, read_inputs
from finetune_advisor.advisor._signals import head_or_nli_zero_shot, label_embedding_zero_shot, zero_shot_method
from finetune_advisor.core import InputError
from finetune_advisor.pipeline import main

REQUIRED = {
    "decision": None, "reasons": None,
    "zero_shot": {"method", "accuracy"},
    "probe": {"accuracy", "knn_accuracy", "logme"},
    "shift": {"unk_rate", "fertility", "mmd2", "mmd_p_value", "pad"},
    "expected": {"fine_tune_accuracy", "gain_over_probe", "suggested_unfrozen_layers"},
    "cost": {"search_seconds", "per_epoch_seconds", "device"},
    "advisor_seconds": None,
}


def test_label_embedding_zero_shot_reads_topics(minilm, topic_task):
    x = minilm.embed(topic_task.valid.texts, pooling="mean", progress=False)
    accuracy = label_embedding_zero_shot(minilm, x, topic_task.valid.labels, topic_task.labels)
    assert accuracy >= 0.7  # "sport", "money", "tech" are words MiniLM knows
    wrong = {"money": "a story about football", "sport": "a story about computers", "tech": "a story about banks"}
    assert label_embedding_zero_shot(minilm, x, topic_task.valid.labels, topic_task.labels, wrong) < accuracy


def _classifier_folder(tmp_path, minilm_source, id2label, bias):
    """A tiny BERT sequence classifier whose head always prefers class `bias` (a known answer)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[bias] = 5.0
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_source).save_pretrained(tmp_path)
    return str(tmp_path), config


def test_own_head_zero_shot_is_chosen_and_scored(tmp_path, minilm_source, topic_task):
    source, config = _classifier_folder(tmp_path, minilm_source, {0: "TECH", 1: "sport", 2: "money", 3: "other"}, 1)
    assert zero_shot_method(config, topic_task.labels) == "head"
    accuracy = head_or_nli_zero_shot(source, "head", topic_task.valid.texts, topic_task.valid.labels,
                                     topic_task.labels, device="cpu")
    sport = topic_task.labels.index("sport")
    assert accuracy == pytest.approx(np.mean(topic_task.valid.labels == sport))


def test_nli_zero_shot_is_chosen_and_scored(tmp_path, minilm_source, topic_task):
    import torch

    source, config = _classifier_folder(tmp_path, minilm_source, {0: "contradiction", 1: "neutral", 2: "entailment"}, 0)
    assert zero_shot_method(config, topic_task.labels) == "nli"
    # a constant entailment logit ties every label, so the first label always wins
    accuracy = head_or_nli_zero_shot(source, "nli", topic_task.valid.texts, topic_task.valid.labels,
                                     topic_task.labels, device=torch.device("cpu"))
    assert accuracy == pytest.approx(np.mean(topic_task.valid.labels == 0))


def test_an_encoder_without_head_uses_label_embeddings(minilm, topic_task):
    assert zero_shot_method(minilm.model.config, topic_task.labels) == "label-embedding"


def test_bad_optional_files_are_reported_together(tmp_path, topic_task):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "desc.json").write_text(json.dumps({"sport": "about sport"}))
    config = AdvisorConfig(reference=str(tmp_path / "empty.txt"), unlabeled=str(tmp_path / "none.txt"),
                           label_descriptions=str(tmp_path / "desc.json"))
    with pytest.raises(InputError) as err:
        read_inputs(topic_task, config)
    text = str(err.value)
    assert len(err.value.problems) == 3
    assert "--reference file" in text and "is empty" in text
    assert "--unlabeled file" in text and "none.txt' does not exist" in text
    assert "no sentence for label(s) 'money', 'tech'" in text


def test_advisor_config_errors():
    with pytest.raises(InputError, match=r"--min-gain 1.5 must be in \[0, 1\)"):
        AdvisorConfig(min_gain=1.5)


def test_advise_cli_bad_label_descriptions_exits_2_before_loading_the_model(tmp_path, topic_csv, capsys):
    (tmp_path / "d.json").write_text("[1, 2]")
    code = main(["advise", "--model", "./no-such-model", "--data", str(topic_csv), "--out", str(tmp_path / "run"),
                 "--label-descriptions", str(tmp_path / "d.json")])
    assert code == 2
    assert "is not a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_advise_end_to_end_on_the_demo(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["advise", "--model", "demo:minilm", "--data", "demo:bbc-news", "--max-rows", "200",
                 "--max-length", "64", "--out", str(run), "--gpu-hourly-cost", "2", "--min-gain", "0.03"])
    assert code == 0
    out = capsys.readouterr().out
    advice = json.loads((run / "advice.json").read_text())
    for key, inner in REQUIRED.items():
        assert key in advice, key
        if inner:
            assert inner <= set(advice[key]), (key, inner - set(advice[key]))
    # BBC topics: training pays (zero-shot is well below the probe) and the model reads the text; whether
    # the top blocks add 0.03 is within the noise of 20 validation rows, so both trained answers are right
    assert advice["decision"] in ("head-only", "fine-tune"), advice["reasons"]
    assert advice["thresholds"]["min_gain"] == 0.03 and advice["reasons"] and all(any(ch.isdigit() for ch in r) for r in advice["reasons"])
    assert advice["probe"]["accuracy"] > 0.7  # BBC topics are easy for MiniLM features
    assert advice["shift"]["unk_rate"] < 0.01
    assert set(advice["cost"]["per_epoch_seconds"]) == {str(k) for k in range(7)}
    assert advice["cost"]["search_cost"] > 0
    from finetune_advisor.core import RunDir, epochs_for  # small data: the search's trials train longer, and cost so

    rows = len(RunDir(run).load_task().train)
    assert advice["cost"]["search"]["epochs"] == epochs_for(3, rows) > 3
    assert 0.5 < advice["probe"]["baseline_accuracy"] <= 1  # character n-grams read BBC topics too
    steps = advice["step_seconds"]
    # 20 validation rows: the probes and the baseline are cross-validated over every sampled row too
    assert set(steps) == {"embedding", "probes", "zero_shot", "shift", "pilot", "cross_validation", "cost"}
    assert advice["probe"]["cv_folds"] == 5 and advice["probe"]["scored_rows"] > advice["probe"]["valid_rows"]
    assert sum(steps.values()) <= advice["advisor_seconds"]
    assert f"decision: {advice['decision'].upper()}" in out and "no pretraining (character 2-5-gram TF-IDF + linear SVM)" in out
    assert json.loads((run / "run.json").read_text())["commands"][0]["command"] == "advise"


def test_too_few_rows_per_class_skips_with_a_reason_and_still_decides(tmp_path, tiny_model):
    from finetune_advisor.advisor import advise
    from helpers import topic_rows, write_csv
    from finetune_advisor.core import DataConfig, load_backbone, load_task

    rows = topic_rows(copies=2) + [{"text": "a single rare row", "label": "rare"}]
    valid = topic_rows(copies=1) + [{"text": "another rare row", "label": "rare"}]
    task = load_task(str(write_csv(tmp_path / "train.csv", rows)),
                     DataConfig(valid=str(write_csv(tmp_path / "valid.csv", valid))))
    backbone = load_backbone(str(tiny_model("bert")))
    record = advise(backbone, task, AdvisorConfig(max_length=32, pilot_epochs=1), progress=False).to_json()
    assert record["decision"] != "fine-tune" and record["reasons"]  # no pilot, so no fine-tuning estimate
    assert any(s.startswith("probe: a class has fewer than 2") for s in record["skipped"])
    assert any(s.startswith("pilot: fewer than 2 training rows") for s in record["skipped"])
    assert record["expected"]["fine_tune_accuracy"] is None and not record["expected"]["pilot_accuracy"]


@pytest.mark.parametrize("blocks, lower_layers, results, expected", [
    (6, False, [0.80, 0.85], [1, 2, 6]),  # k = 2 beats k = 1 by min_gain: every block is tried
    (6, False, [0.80, 0.805], [1, 2]),  # going deeper does not pay
    (6, True, [0.80], [1, 6]),  # the layer probes point deeper: straight to every block, no k = 2
    (2, True, [0.80, 0.70], [1, 2]),  # two blocks: k = 2 is every block
    (1, False, [0.80], [1]),
])
def test_the_pilot_picks_its_depths(blocks, lower_layers, results, expected):
    from finetune_advisor.advisor._pilot import next_pilot_depth

    done, order = {}, []
    while (k := next_pilot_depth(done, blocks, lower_layers, min_gain=0.01)) is not None:
        order.append(k)
        done[k] = results[len(done)] if len(done) < len(results) else 0.9
    assert order == expected


def _word_order_task(tmp_path, rows: int):
    """BBC sentences, half with their words shuffled: order is what mean-pooled frozen features
    blur and what fine-tuning learns (measured on MiniLM: probe ~0.84, all blocks tuned ~0.99)."""
    import re

    from helpers import write_csv
    from finetune_advisor.core import DataConfig, load_task

    bbc = load_task("demo:bbc-news", DataConfig(test_fraction=0.0))
    sentences = [s for text in bbc.train.texts for s in re.split(r"(?<=[.!?])\s+", text) if 10 <= len(s.split()) <= 25]
    rng = np.random.default_rng(0)
    data = []
    for i in rng.permutation(len(sentences))[:rows]:
        words = sentences[i].split()
        shuffled = len(data) % 2 == 1
        data.append({"text": " ".join(words[j] for j in rng.permutation(len(words))) if shuffled else sentences[i],
                     "label": "shuffled" if shuffled else "original"})
    return load_task(str(write_csv(tmp_path / "order.csv", data)), DataConfig(test_fraction=0.0, valid_fraction=0.25))


@pytest.mark.slow
def test_the_pilot_predicts_a_gain_where_fine_tuning_pays(tmp_path, minilm):
    from finetune_advisor.advisor import advise

    task = _word_order_task(tmp_path, 400)
    record = advise(minilm, task, AdvisorConfig(max_length=64), progress=False).to_json()
    expected, probe = record["expected"], record["probe"]["accuracy"]
    assert probe < 0.9  # frozen features half-see word order
    assert expected["fine_tune_accuracy"] - probe > 0.05, (expected, probe)
    assert record["decision"] == "fine-tune"
    low, high = expected["suggested_unfrozen_layers"]
    assert 1 <= low <= high <= minilm.num_blocks


def test_cross_validated_predictions_are_scikit_learns_on_the_same_folds():
    from sklearn.model_selection import cross_val_predict, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from finetune_advisor.advisor._signals import cv_folds, knn_predictions, out_of_fold

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 8)) + y[:, None] * 0.8
    folds = cv_folds(y, seed=0)
    assert len(folds) == 5 and sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(60))
    ours = out_of_fold(lambda tr, te: knn_predictions(x[tr], y[tr], x[te]), y, folds)
    knn = KNeighborsClassifier(n_neighbors=10, metric="cosine", weights="distance")
    assert np.array_equal(ours, cross_val_predict(knn, x, y, cv=folds))
    scores = cross_val_score(knn, x, y, cv=folds)  # per fold; over all rows they weigh by fold size
    assert np.mean(ours == y) == pytest.approx(np.average(scores, weights=[len(te) for _, te in folds]))
    assert cv_folds(np.array([0, 0, 1])) == []  # a class of one row: nothing to hold out


def test_a_small_validation_sample_is_scored_by_cross_validation_over_every_row(tmp_path, tiny_model, topic_task):
    from finetune_advisor.advisor import advise
    from finetune_advisor.advisor import standard_error
    from finetune_advisor.core import load_backbone

    backbone = load_backbone(str(tiny_model("bert")))
    record = advise(backbone, topic_task, AdvisorConfig(max_length=32, pilot_epochs=1), progress=False)
    probe, rows = record.probe, len(topic_task.train) + len(topic_task.valid)
    assert probe.valid_rows == len(topic_task.valid) < 200
    assert probe.scored_rows == rows and probe.cv_folds == 5
    assert probe.accuracy_se == standard_error(probe.accuracy, rows)  # on every scored row, not the split's
    assert probe.baseline_accuracy_se == standard_error(probe.baseline_accuracy, rows)
    assert any(f"cross-validated (5 folds) over all {rows} sampled rows" in r for r in record.reasons)
