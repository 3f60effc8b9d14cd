"""Benchmark: the exported model against torch eager, side by side in one run.

A MiniLM classifier on demo:bbc-news (a run directory's best_model; without one, the top 2
blocks are trained for 2 epochs on 800 examples at max length 128 and saved as one), exported by
`export.export` with its checks: latency at batch 1 and batch 32 at 128 tokens (median of 30 and
10 runs), validation accuracy of each variant. Targets: int8 >= 2.5x faster than torch eager at
batch 32, fp32 >= 1.1x, int8 accuracy drop <= 1 point.

Writes benchmarks/results/export_latency.json and prints a table.

    python benchmarks/export_latency.py [--run runs/demo] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import DataConfig, library_versions, load_task, write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export_latency.json"


def trained_model(run: Path, task) -> Path:
    """RUN/best_model, trained here first when the run has none."""
    from core import TrainConfig, load_backbone, train

    if (run / "best_model" / "head.safetensors").exists():
        return run / "best_model"
    result = train(load_backbone("demo:minilm"), task,
                   TrainConfig(unfrozen_layers=2, epochs=2, max_length=128, batch_size=16, seed=0), progress=True)
    return result.model.save(run / "best_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory with best_model (default: train one)")
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from export import ExportConfig, export

    task = load_task("demo:bbc-news", DataConfig(max_rows=args.rows, seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or Path(tmp) / "run"
        model = trained_model(run, task)
        record = export(model, Path(tmp) / "export", task, ExportConfig(repeats=args.repeats))
    torch_ms = record["torch_latency_ms"]
    rows = []
    for v in record["variants"]:
        if "latency_ms" not in v:
            continue
        rows.append({"file": v["file"], "precision": v["precision"], "passed": v["passed"], "why": v["why"],
                     "accuracy": v.get("accuracy"), "max_abs_diff": v.get("max_abs_diff"),
                     "latency_ms": v["latency_ms"],
                     "speedup": {b: torch_ms[b] / v["latency_ms"][b] for b in ("batch_1", "batch_32")}})
    by_precision = {r["precision"]: r for r in rows}
    summary = {
        "sequence_length": record["sequence_length"],
        "int8_speedup_batch_32": by_precision.get("int8", {}).get("speedup", {}).get("batch_32"),
        "fp32_speedup_batch_32": by_precision["fp32"]["speedup"]["batch_32"],
        "int8_accuracy_drop": record["quantization"].get("accuracy_drop"),
        "recommended": record["recommended"],
        "targets": "int8 >= 2.5x and fp32 >= 1.1x torch eager at batch 32, int8 drop <= 0.01",
    }
    write_json_atomic(args.out, {"benchmark": "export_latency", "rows": args.rows, "valid_rows": len(task.valid),
                                 "torch_accuracy": record["torch_accuracy"], "torch_latency_ms": torch_ms,
                                 "variants": rows, "summary": summary, "optimization": record["optimization"],
                                 "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                                 "versions": library_versions()})
    print(f"{'variant':<16} {'accuracy':>8} {'b1 ms':>8} {'b32 ms':>8} {'b1 x':>6} {'b32 x':>6}  status")
    print(f"{'torch eager':<16} {record['torch_accuracy']:>8.4f} {torch_ms['batch_1']:>8.1f} "
          f"{torch_ms['batch_32']:>8.1f} {1:>6.2f} {1:>6.2f}")
    for r in rows:
        print(f"{r['file']:<16} {r['accuracy'] or 0:>8.4f} {r['latency_ms']['batch_1']:>8.1f} "
              f"{r['latency_ms']['batch_32']:>8.1f} {r['speedup']['batch_1']:>6.2f} {r['speedup']['batch_32']:>6.2f}"
              f"  {'kept' if r['passed'] else 'refused: ' + r['why']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
