"""Benchmark: training batches grouped by length against random batches, side by side in one run.

demo:minilm on short texts of varied length: 2,000 sentences of demo:bbc-news (every sentence of
3 words or more, drawn at random, seed 0), labelled with their article's topic, 1,600 to train,
max length 128. For k = 1, 2 and 6 (= L, every block: no frozen-layer cache) unfrozen blocks,
3 epochs from the closed-form probe's head (as every search trial starts), seeds 0 and 1, the same
run twice in turn: random batches (`group_by_length=False`) and batches of similar length
(`group_by_length=True`, `core._train.length_grouped_batches`). Reported per run: seconds per
epoch (training + validation; the validation pass is length-sorted on both sides), the best
epoch's validation accuracy, and the padding: the share of the training batches' tokens that are
padding in epoch 1. The summary: the speed-up per epoch for each k and the mean accuracy difference
(grouped - random) over k and seeds. Texts that all reach max length (the BBC articles at 128
tokens) have nothing to gain: every batch is full either way.

Writes benchmarks/results/train_buckets.json and prints a table.

    python benchmarks/train_buckets.py [--rows 2000] [--ks 1 2 6] [--seeds 0 1] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np


from finetune_advisor.core import DataConfig, TrainConfig, library_versions, load_backbone, load_task, train, write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_buckets.json"


def sentence_task(folder: Path, rows: int):
    """BBC sentences (3 words or more) labelled with their article's topic, `rows` of them."""
    bbc = load_task("demo:bbc-news", DataConfig(test_fraction=0.0, valid_fraction=0.1))
    labelled = [(s, bbc.labels[y]) for split in (bbc.train, bbc.valid) for text, y in zip(split.texts, split.labels)
                for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]
    pick = np.random.default_rng(0).permutation(len(labelled))[:rows]
    path = folder / "sentences.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(labelled[i] for i in pick)
    return load_task(str(path), DataConfig(test_fraction=0.0, valid_fraction=0.2))


def padding_share(batches: list[np.ndarray], lengths: np.ndarray) -> float:
    """Padding tokens / all tokens of the batches, each padded to its longest row."""
    padded = sum(len(b) * lengths[b].max() for b in batches)
    return float(1 - sum(lengths[b].sum() for b in batches) / padded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 6])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from finetune_advisor.core import FeatureCache, fit_head
    from finetune_advisor.core._train import length_grouped_batches

    backbone = load_backbone("demo:minilm")
    with tempfile.TemporaryDirectory() as tmp:
        task = sentence_task(Path(tmp), args.rows)
    cache = FeatureCache(None)
    lengths = cache.encoded(backbone, task.train, 128).lengths
    order = np.random.default_rng(1).permutation(len(task.train))  # epoch 1's order at seed 0
    padding = {"random": padding_share([order[s:s + 16] for s in range(0, len(order), 16)], lengths),
               "grouped": padding_share(length_grouped_batches(order, lengths, 16, np.random.default_rng(1)), lengths)}
    print(f"{len(task.train)} training sentences, tokens: median {np.median(lengths):.0f}, "
          f"90th percentile {np.percentile(lengths, 90):.0f}, max {lengths.max()}; padding at batch 16: "
          f"random {padding['random']:.0%}, grouped {padding['grouped']:.0%}", flush=True)
    pooled = cache.features(backbone, task.train, start=backbone.num_blocks, max_length=128, progress=False).numpy()
    head = fit_head(pooled, task.train.labels, task.num_labels)[:2]
    runs = []
    for k in args.ks:
        for seed in args.seeds:
            for grouped in (False, True):
                config = TrainConfig(unfrozen_layers=k, epochs=args.epochs, patience=0, max_length=128, batch_size=16,
                                     learning_rate=1e-4, head_lr_multiplier=3, seed=seed, group_by_length=grouped)
                result = train(backbone, task, config, cache=cache, head_init=head, progress=False)
                runs.append({"unfrozen_layers": k, "seed": seed, "grouped": grouped,
                             "seconds_per_epoch": result.epoch_seconds,
                             "per_epoch": [h.seconds for h in result.history],
                             "best_valid_accuracy": result.best_valid_accuracy})
                print(f"k={k} seed={seed} {'grouped' if grouped else 'random '}: {result.epoch_seconds:6.1f} s/epoch, "
                      f"accuracy {result.best_valid_accuracy:.4f}", flush=True)
                del result

    def mean(k, grouped, key):
        return float(np.mean([r[key] for r in runs if r["unfrozen_layers"] == k and r["grouped"] == grouped]))

    diffs = [g["best_valid_accuracy"] - r["best_valid_accuracy"] for g, r in zip(runs[1::2], runs[0::2])]
    summary = {
        "speedup_per_epoch": {str(k): mean(k, False, "seconds_per_epoch") / mean(k, True, "seconds_per_epoch")
                              for k in args.ks},
        "accuracy_grouped_minus_random": {"mean": float(np.mean(diffs)), "min": float(min(diffs)),
                                          "max": float(max(diffs))},
        "padding_share": padding,
        "token_lengths": {"median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90)),
                          "max": int(lengths.max())},
    }
    write_json_atomic(args.out, {
        "benchmark": "train_buckets", "model": "demo:minilm", "data": f"{args.rows} BBC sentences by topic",
        "train_rows": len(task.train), "valid_rows": len(task.valid), "epochs": args.epochs, "batch_size": 16,
        "summary": summary, "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "versions": library_versions()})
    for k, x in summary["speedup_per_epoch"].items():
        print(f"k={k}: grouped batches {x:.2f}x per epoch")
    a = summary["accuracy_grouped_minus_random"]
    print(f"accuracy, grouped - random: mean {a['mean']:+.4f} (from {a['min']:+.4f} to {a['max']:+.4f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
