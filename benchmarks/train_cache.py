"""Benchmark: the frozen-layer cache, side by side with plain training, in one run.

demo:minilm on 600 training examples of demo:bbc-news (max length 128, 2 epochs): seconds per
epoch (training + validation, cache building excluded and reported apart) for k = 0, 1, 2, 6
unfrozen blocks, with and without the cache, the ratio of whole runs with the cache's building
included (what one trial gains when no earlier trial built it), and the validation accuracy. With k = 6 = L
every block trains, so there is nothing to cache and both runs take the same path.

Writes benchmarks/results/train_cache.json and prints a table.

    python benchmarks/train_cache.py [--train-rows 600] [--epochs 2] [--ks 0 1 2 6]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


from finetune_advisor.core import DataConfig, TrainConfig, library_versions, load_backbone, load_task, train, write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_cache.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 6])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    # 80/10/10 split: ask for 1.25x the training rows in all
    task = load_task("demo:bbc-news", DataConfig(max_rows=round(args.train_rows * 1.25), seed=0))
    backbone = load_backbone("demo:minilm")
    rows = []
    for k in args.ks:
        runs = {}
        for cache in ("memory", "off"):
            config = TrainConfig(unfrozen_layers=k, epochs=args.epochs, patience=0, max_length=args.max_length,
                                 batch_size=16, cache=cache, device=args.device, seed=0)
            t0 = time.perf_counter()
            result = train(backbone, task, config, progress=False)
            runs[cache] = {"seconds_per_epoch": result.epoch_seconds, "cache_seconds": result.cache_seconds,
                           "total_seconds": time.perf_counter() - t0, "cached": result.cached, "device": result.device,
                           "valid_accuracy": result.history[-1].valid_accuracy,
                           "per_epoch": [h.seconds for h in result.history]}
            del result
        speedup = runs["off"]["seconds_per_epoch"] / runs["memory"]["seconds_per_epoch"]
        # the whole run, building the cache included: what one training run (one trial) gains
        with_build = runs["off"]["total_seconds"] / runs["memory"]["total_seconds"]
        rows.append({"unfrozen_layers": k, "cached": runs["memory"], "uncached": runs["off"],
                     "speedup_per_epoch": speedup, "speedup_with_cache_build": with_build,
                     "accuracy_difference": runs["memory"]["valid_accuracy"] - runs["off"]["valid_accuracy"]})
        print_row(rows[-1], flush=True)

    record = {"benchmark": "train_cache", "model": "demo:minilm", "data": "demo:bbc-news",
              "train_rows": len(task.train), "valid_rows": len(task.valid), "epochs": args.epochs,
              "max_length": args.max_length, "batch_size": 16, "device": rows[0]["cached"]["device"],
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "versions": library_versions(), "rows": rows,
              "target": "k <= 2: >= 3x faster per epoch with the cache, validation accuracy within 1 point"}
    write_json_atomic(args.out, record)
    print(f"wrote {args.out}")


def print_row(row: dict, flush: bool = False) -> None:
    if row["unfrozen_layers"] == 0 or not hasattr(print_row, "header"):
        print_row.header = True
        print(f"{'k':>2} {'cached s/epoch':>15} {'plain s/epoch':>14} {'speed-up':>9} {'cache build s':>14} "
              f"{'with build':>11} {'acc cached':>11} {'acc plain':>10}")
    c, u = row["cached"], row["uncached"]
    print(f"{row['unfrozen_layers']:>2} {c['seconds_per_epoch']:>15.2f} {u['seconds_per_epoch']:>14.2f} "
          f"{row['speedup_per_epoch']:>8.2f}x {c['cache_seconds']:>14.2f} {row['speedup_with_cache_build']:>10.2f}x "
          f"{c['valid_accuracy']:>11.3f} {u['valid_accuracy']:>10.3f}", flush=flush)


if __name__ == "__main__":
    main()
