"""Benchmark: on small data, should the search score its trials by k-fold cross-validation instead
of on the one validation split? Both selections side by side in one run, on the same candidates.

The question (issue: honest numbers on small data): with N labelled rows, the search trains each
trial on the training split and scores it on the validation split (about a quarter of N). With
N = 160, one validation row moves a trial's score by 2.5 points, so the search's pick among close
candidates rides on noise. Scoring by k-fold (k = 5) uses every row for validation once, at k times
the training cost.

Setup: demo:minilm on demo:bbc-news. For each of `--repeats` draws, N rows are sampled
(stratified) as the user's labelled data; 1,000 other rows are a test set the selection never sees.
The candidates are the search's cheap trials: the closed-form head (k = 0, core.fit_head, as
head-only trials are fitted) and the top k = 1 and 2 blocks trained 3 epochs from that head
(LP-FT, as every search trial starts; learning rate 1e-4, head x3, seed 0). Two selections among
the same candidates:
- split: each candidate trained on the training split (the product's default split) and scored on
  its validation split (what the search does now);
- k-fold: each candidate scored by its mean accuracy over 5 stratified folds of all N rows.
Ties go to the cheaper candidate. Either pick is then the candidate trained on the training split
(what best_model holds), so the only difference is which candidate each selection picks.
Reported: test accuracy of each selection's pick, of the best candidate in hindsight (the oracle),
how often the two selections agree, and the training runs each costs.

Writes benchmarks/results/search_kfold.json and prints the comparison.

    python benchmarks/search_kfold.py [--rows 160] [--repeats 4]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from finetune_advisor.advisor._signals import cv_folds
from finetune_advisor.core import (DataConfig, FeatureCache, TaskData, TrainConfig, fit_head, library_versions,
                                   load_backbone, load_task, sample_indices, train,
                                   write_json_atomic)
from finetune_advisor.core._data import valid_share
from finetune_advisor.core._split import _allocate

RESULTS = Path(__file__).resolve().parent / "results" / "search_kfold.json"
CANDIDATES = (0, 1, 2)  # unfrozen blocks, cheapest first
FOLDS = 5
TEST_ROWS = 1000
MAX_LENGTH = 128


def _task(task, train, valid) -> TaskData:
    return TaskData(task.source, task.labels, train, valid, None, task.text_column, task.label_column, None)


def score(backbone, task, train_s, valid_s, k: int, cache) -> tuple[float, object]:
    """(validation accuracy, a predict(texts) -> classes) of candidate k trained on `train_s`."""
    x = {name: cache.features(backbone, s, start=backbone.num_blocks, max_length=MAX_LENGTH, progress=False).numpy()
         for name, s in (("train", train_s), ("valid", valid_s))}
    weight, bias, _ = fit_head(x["train"], train_s.labels, task.num_labels)
    if k == 0:
        def predict(split):
            f = cache.features(backbone, split, start=backbone.num_blocks, max_length=MAX_LENGTH, progress=False)
            return (f.numpy() @ weight.T + bias).argmax(1)
        return float(np.mean(predict(valid_s) == valid_s.labels)), predict
    config = TrainConfig(unfrozen_layers=k, epochs=3, patience=0, learning_rate=1e-4, head_lr_multiplier=3,
                         max_length=MAX_LENGTH, seed=0)
    result = train(backbone, _task(task, train_s, valid_s), config, cache=cache, head_init=(weight, bias),
                   progress=False)
    return result.best_valid_accuracy, lambda split: result.model.predict_proba(split.texts).argmax(1)


def pick(scores: dict[int, float]) -> int:
    best = max(scores.values())
    return next(k for k in CANDIDATES if scores[k] >= best - 1e-9)


def one_draw(backbone, bbc, rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    everything = bbc.train
    mine = sample_indices(everything, rows, rng)
    rest = np.setdiff1d(np.arange(len(everything)), mine)
    test = everything.subset(rng.choice(rest, min(TEST_ROWS, len(rest)), replace=False))
    labelled = everything.subset(mine)
    # the product's split of these rows (core._split, at its default validation share for small data)
    train_idx, valid_idx = _allocate(labelled.labels, [valid_share(len(labelled))], rng)
    train_s, valid_s = labelled.subset(train_idx), labelled.subset(valid_idx)
    cache = FeatureCache()
    runs = {"split": 0, "k-fold": 0}
    split_scores, test_acc, split_seconds = {}, {}, 0.0
    for k in CANDIDATES:
        t0 = time.perf_counter()
        split_scores[k], predict = score(backbone, bbc, train_s, valid_s, k, cache)
        split_seconds += time.perf_counter() - t0  # the test set's predictions are not the selection's cost
        test_acc[k] = float(np.mean(predict(test) == test.labels))
        runs["split"] += 1
    t0 = time.perf_counter()
    folds = cv_folds(labelled.labels, seed=seed)
    fold_scores = {k: [] for k in CANDIDATES}
    for tr, te in folds[:FOLDS]:
        for k in CANDIDATES:
            fold_scores[k].append(score(backbone, bbc, labelled.subset(tr), labelled.subset(te), k, cache)[0])
            runs["k-fold"] += 1
    kfold_seconds = time.perf_counter() - t0
    kfold_scores = {k: float(np.mean(v)) for k, v in fold_scores.items()}
    by_split, by_kfold = pick(split_scores), pick(kfold_scores)
    return {"seed": seed, "train_rows": len(train_s), "valid_rows": len(valid_s), "test_rows": len(test),
            "split_scores": split_scores, "kfold_scores": kfold_scores, "test_accuracy": test_acc,
            "pick": {"split": by_split, "k-fold": by_kfold},
            "pick_test_accuracy": {"split": test_acc[by_split], "k-fold": test_acc[by_kfold],
                                   "oracle": max(test_acc.values())},
            "training_runs": runs, "seconds": {"split": split_seconds, "k-fold": kfold_seconds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=160, help="labelled rows a draw gives the user (default 160)")
    parser.add_argument("--repeats", type=int, default=4, help="draws of those rows (default 4)")
    args = parser.parse_args()

    backbone = load_backbone("demo:minilm")
    bbc = load_task("demo:bbc-news", DataConfig(test_fraction=0.0, valid_fraction=0.1))
    draws = []
    for seed in range(args.repeats):
        draws.append(one_draw(backbone, bbc, args.rows, seed))
        d = draws[-1]
        print(f"draw {seed}: split picks k={d['pick']['split']} (test {d['pick_test_accuracy']['split']:.3f}), "
              f"k-fold picks k={d['pick']['k-fold']} (test {d['pick_test_accuracy']['k-fold']:.3f}), "
              f"oracle {d['pick_test_accuracy']['oracle']:.3f}", flush=True)
    mean = {side: float(np.mean([d["pick_test_accuracy"][side] for d in draws])) for side in ("split", "k-fold", "oracle")}
    summary = {"pick_test_accuracy": mean,
               "kfold_minus_split": mean["k-fold"] - mean["split"],
               "agreement": float(np.mean([d["pick"]["split"] == d["pick"]["k-fold"] for d in draws])),
               "cost_ratio": float(np.sum([d["seconds"]["k-fold"] for d in draws])
                                   / np.sum([d["seconds"]["split"] for d in draws])),
               "training_runs": {side: int(np.sum([d["training_runs"][side] for d in draws])) for side in ("split", "k-fold")}}
    record = {"benchmark": "search_kfold", "model": "demo:minilm", "data": "demo:bbc-news", "rows": args.rows,
              "repeats": args.repeats, "candidates": list(CANDIDATES), "folds": FOLDS, "summary": summary,
              "draws": draws, "machine": {"cpu": platform.processor() or platform.machine()},
              "versions": library_versions()}
    write_json_atomic(RESULTS, record)
    print(f"test accuracy of the pick: split {mean['split']:.3f}, k-fold {mean['k-fold']:.3f}, oracle "
          f"{mean['oracle']:.3f}; same pick in {summary['agreement']:.0%} of draws; k-fold costs "
          f"{summary['cost_ratio']:.1f}x the split's time")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
