"""Benchmark: the deploy-aware search against the default one, and int8 for an image model.

Text (demo:minilm on `--rows` examples of demo:bbc-news, 80/10/10): two searches with the same
trials, seed, pruner and space, each timing its trials' shapes with onnxruntime (latency on, the
default):
- default: the full depth, as `search` runs without a budget;
- deploy-aware: `--latency-budget-ms` (the batch-1 latency of the full model's int8 at 128
  tokens, measured here first), which also searches kept_layers ceil(L/3):L.
`front` is the deploy-aware search's front; `speedup_within_1pt` = batch-32 latency of the
default (full-depth) search's best trial / that of the fastest front point within 0.01 of the
best accuracy either search found, the same variant on both sides (int8 when both have it);
`search_cost_ratio` = the deploy-aware search's seconds / the default's.
Targets (issue 32): speedup_within_1pt >= 2.0, search_cost_ratio <= 1.3.

Images (demo:efficientnet-lite0 on `--image-rows` of demo:fashion-mnist): the head fitted in
closed form on frozen features (search with unfrozen_layers=0), exported by `export`;
`int8_accuracy_drop` = torch's validation accuracy - the best int8 variant's, and
`int8_speedup_batch_32` = torch eager / that variant at batch 32, with the CPU's vector
extensions. Targets: drop <= 0.01, speed-up >= 1.8 on AVX2. The same export on a second source,
scikit-learn's handwritten digits (`images_digits`: all 1,797, 80/10/10), checks that the int8
recipe (tuned on Fashion-MNIST) holds on data it was not tuned on.

Writes benchmarks/results/deploy_front.json and prints the summary.

    python benchmarks/deploy_front.py [--rows 800] [--trials 10] [--image-rows 1500] [--skip-text] [--skip-images]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from finetune_advisor.core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic
from finetune_advisor.export._latency import machine, vector_extensions

RESULTS = Path(__file__).resolve().parent / "results" / "deploy_front.json"
SPACE = {"epochs": "1:3", "max_length": "64,128,256"}


def text(args) -> dict:
    from finetune_advisor.search import SearchConfig, search

    task = load_task("demo:bbc-news", DataConfig(max_rows=args.rows, seed=0))
    backbone = load_backbone("demo:minilm")
    with tempfile.TemporaryDirectory() as tmp:
        budget = _full_int8_latency(backbone, task)
        runs = {}
        for name, extra in (("default", {}), ("deploy", {"latency_budget_ms": budget})):
            config = SearchConfig(trials=args.trials, seed=0, space=SPACE, use_advice=False, **extra)
            t0 = time.perf_counter()
            record = search(backbone, task, Path(tmp) / name, config, progress=False, log=lambda line: None)
            runs[name] = (record, time.perf_counter() - t0)
    (default, default_s), (deploy, deploy_s) = runs["default"], runs["deploy"]
    best_accuracy = max(r.best.value for r, _ in runs.values() if r.best)
    within = [p for p in deploy.front if p.accuracy >= best_accuracy - 0.01]
    fastest = min(within, key=lambda p: p.latency_ms_batch_32) if within else None
    full = next(t for t in default.trials if t.number == default.best.number)
    variant = fastest.variant if fastest and fastest.variant in (full.latency_ms or {}) else "fp32"
    speedup = (full.latency_ms[variant]["batch_32"] / fastest.latency_ms_batch_32) if fastest else None
    return {
        "model": "demo:minilm", "data": f"demo:bbc-news, {args.rows} rows", "trials": args.trials,
        "latency_budget_ms": budget,
        "front": [{"kept_layers": p.kept_layers, "max_length": p.max_length, "variant": p.variant,
                   "accuracy": p.accuracy, "latency_ms_batch_1": p.latency_ms_batch_1,
                   "latency_ms_batch_32": p.latency_ms_batch_32} for p in deploy.front],
        "default_front": [p.to_json() for p in default.front],
        "best_accuracy": best_accuracy, "default_best": {"accuracy": default.best.value, "params": default.best.params,
                                                         "latency_ms": full.latency_ms},
        "deploy_best": deploy.best.to_json() if deploy.best else None,
        "fastest_within_1pt": fastest.to_json() if fastest else None,
        "speedup_within_1pt": speedup, "search_seconds": {"default": default_s, "deploy": deploy_s},
        "search_cost_ratio": deploy_s / default_s,
        "trials_pruned_over_budget": sum(1 for t in deploy.trials if t.pruned_reason),
    }


def _full_int8_latency(backbone, task) -> float:
    """Batch-1 latency of the full model's int8 at 128 tokens (or the texts' median, if shorter)."""
    from finetune_advisor.search import SearchConfig
    from finetune_advisor.search._workers import latency_table

    table = latency_table(backbone, task, SearchConfig())
    try:
        latency = table.of(backbone.num_blocks, 128)
    finally:
        table.close()
    return round(latency.get("int8", latency["fp32"])["batch_1"], 2)


def digits_folder(root: Path) -> Path:
    """scikit-learn's handwritten digits (UCI optdigits, 1,797 8x8 grayscale images, 10 classes; CC BY
    4.0) as an image folder root/<digit>/<n>.png: a source the int8 recipe was not tuned on."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for n, (image, label) in enumerate(zip(digits.images, digits.target)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(root / str(label) / f"{n}.png")
    return root


def images(data: str, rows: int | None) -> dict:
    from finetune_advisor.export import ExportConfig, export
    from finetune_advisor.search import SearchConfig, search

    backbone = load_backbone("demo:efficientnet-lite0")
    with tempfile.TemporaryDirectory() as tmp:
        source = str(digits_folder(Path(tmp) / "digits")) if data == "digits" else data
        task = load_task(source, DataConfig(max_rows=rows, seed=0))
        run = Path(tmp) / "run"
        search(backbone, task, run, SearchConfig(space={"unfrozen_layers": "0"}, use_advice=False, latency=False),
               progress=False, log=lambda line: None)
        record = export(run / "best_model", run / "export", task, ExportConfig(repeats=10), progress=print)
    int8 = [v for v in record.variants if v.precision.startswith("int8")]
    kept = [v for v in int8 if v.passed]
    best = min(kept, key=lambda v: v.latency_ms.batch_32) if kept else None
    return {
        "model": "demo:efficientnet-lite0", "data": f"{data}, {len(task.train) + len(task.valid)} rows",
        "valid_rows": len(task.valid), "torch_accuracy": record.torch_accuracy,
        "variants": [{"file": v.file, "precision": v.precision, "passed": v.passed, "accuracy": v.accuracy,
                      "accuracy_drop": v.accuracy_drop, "latency_ms": v.latency_ms.to_json() if v.latency_ms else None,
                      "why": v.why, "float_first_convs": v.float_first_convs, "tries": v.tries}
                     for v in record.variants],
        "torch_latency_ms": record.torch_latency_ms.to_json(),
        "recommended": record.recommended,
        "int8_variant": best.file if best else None,
        "int8_accuracy_drop": (record.torch_accuracy - best.accuracy) if best else None,
        "int8_speedup_batch_32": (record.torch_latency_ms.batch_32 / best.latency_ms.batch_32) if best else None,
        "vector_extensions": vector_extensions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--image-rows", type=int, default=1500)
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-images", action="store_true")
    args = parser.parse_args()
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result = {"text": old.get("text"), "images": old.get("images"), "images_digits": old.get("images_digits")}
    if not args.skip_text:
        result["text"] = text(args)
    if not args.skip_images:
        result["images"] = images("demo:fashion-mnist", args.image_rows)
        result["images_digits"] = images("digits", None)
    t, i = result["text"] or {}, result["images"] or {}
    result["summary"] = {
        "text": {key: t.get(key) for key in ("front", "speedup_within_1pt", "search_cost_ratio")},
        "images": {key: i.get(key) for key in ("int8_accuracy_drop", "int8_speedup_batch_32", "vector_extensions")},
        "images_digits": {key: (result["images_digits"] or {}).get(key)
                          for key in ("int8_variant", "int8_accuracy_drop", "int8_speedup_batch_32")},
    }
    result.update(machine=machine(), versions=library_versions())
    write_json_atomic(RESULTS, result)
    summary = result["summary"]
    print(json.dumps({**summary, "text": {k: v for k, v in summary["text"].items() if k != "front"}}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
