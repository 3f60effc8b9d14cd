"""Benchmark: the exported model against torch eager, side by side in one run.

A MiniLM classifier on demo:bbc-news (a run directory's best_model; without one, the top 2
blocks are trained for 2 epochs on 800 examples at max length 128 and saved as one), exported by
`export.export` with its checks, then timed here, every contender in turn within each round:

- fixed shape, batch 32 x 128 tokens and batch 1: torch eager (SDPA) and each kept ONNX variant,
  plus static int8 (QDQ, calibrated on 128 training texts) of the fused graph, which the export
  does not try: it is here to show whether it would pay;
- the validation texts as users send them: texts sorted by length and batched 32 at a time, each
  batch padded to its longest text, on both sides (the Predictor's batching; torch gets the same).

Timing as the export's own (export._variants.time_in_turn): each round runs every contender once
untimed, then times it; ONNX sessions do not spin. Medians with quartiles. Targets (issue 17): fp32 >= 1.15x and int8 >= 2.0x torch at batch 32;
int8 >= 2.5x on the validation texts; int8 accuracy drop <= 0.01, parity <= 1e-4.

Writes benchmarks/results/export_latency.json and prints a table.

    python benchmarks/export_latency.py [--run runs/demo] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np


from finetune_advisor.core import DataConfig, library_versions, load_task, write_json_atomic  # noqa: E402
from finetune_advisor.export._latency import machine, vector_extensions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export_latency.json"
STATIC = "model.static-int8.onnx"


def trained_model(run: Path, task) -> Path:
    """RUN/best_model, trained here first when the run has none."""
    from finetune_advisor.core import TrainConfig, load_backbone, train

    if (run / "best_model" / "head.safetensors").exists():
        return run / "best_model"
    result = train(load_backbone("demo:minilm"), task,
                   TrainConfig(unfrozen_layers=2, epochs=2, max_length=128, batch_size=16, seed=0), progress=True)
    return result.model.save(run / "best_model")


def static_int8(folder: Path, base: str, source, task) -> Path:
    """Static QDQ int8 of `base` (MatMuls, per-channel weights as the export's dynamic int8,
    activations calibrated on training texts)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Texts(CalibrationDataReader):
        def __init__(self):
            texts = list(task.train.texts[:128])
            self.feeds = iter([source.inputs(texts[i:i + 16]) for i in range(0, len(texts), 16)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(folder / base), str(folder / STATIC), Texts(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul"], per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    return folder / STATIC


def dynamic_int8(folder: Path, base: str) -> Path:
    """The export's own int8 (dynamic, of the fused graph), remade when its gate refused it."""
    from finetune_advisor.export._variants import INT8
    from finetune_advisor.export._variants import dynamic_int8 as make

    make(folder / base, folder / INT8)
    return folder / INT8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory with best_model, timed on its own data "
                                                 "(default: train one on --rows rows)")
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=10,
                        help="rounds at batch 32 (batch 1: as many rounds of 5 runs; validation texts: half)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from finetune_advisor.core import RunDir, load_export_source
    from finetune_advisor.export import ExportConfig, Predictor, export
    from finetune_advisor.export._checks import ort_session
    from finetune_advisor.export._variants import INT8, time_in_turn

    with tempfile.TemporaryDirectory() as tmp:
        if args.run:  # the run's own data, so its validation rows were not trained on
            task = RunDir(args.run).load_task()
        else:
            task = load_task("demo:bbc-news", DataConfig(max_rows=args.rows, seed=0))
        model = trained_model(args.run or Path(tmp) / "run", task)
        folder = Path(tmp) / "export"
        record = export(model, folder, task, ExportConfig(repeats=5)).to_json()
        source = load_export_source(model)
        kept = [v for v in record["variants"] if v["passed"]]
        fused = next((v["file"] for v in kept if v["precision"] == "fp32-fused"), "model.onnx")
        extra = {STATIC: static_int8(folder, fused, source, task)}
        if not (folder / INT8).exists():  # refused by the accuracy gate: timed all the same
            extra[INT8] = dynamic_int8(folder, fused)
        predictors = {v["file"]: Predictor(folder, v["file"]) for v in kept} | {
            f: Predictor(folder, f) for f in extra}
        gold = np.array([source.labels.index(task.labels[i]) for i in task.valid.labels])
        accuracy = {f: float((predictors[f].logits(task.valid.texts).argmax(1) == gold).mean()) for f in extra}

        sessions = {f: ort_session(folder / f, spinning=False) for f in predictors}
        runners = {"torch": source.logits} | {f: (lambda x, s=s: s.run(None, x)) for f, s in sessions.items()}
        length = 128
        texts = [task.valid.texts[i % len(task.valid)] for i in range(32)]
        fixed = {1: time_in_turn(runners, [source.inputs(texts[:1], length=length)], args.repeats, block=5),
                 32: time_in_turn(runners, [source.inputs(texts, length=length)], args.repeats)}
        valid = time_in_turn(runners, [feeds for _, feeds in predictors["model.onnx"].batches(list(task.valid.texts))],
                             max(3, args.repeats // 2))

    def speedup(table, name):
        return table["torch"][1] / table[name][1]

    rows = []
    refused = next((v for v in record["variants"] if v["file"] == INT8 and not v["passed"]), None)
    added = [{"file": STATIC, "precision": "static-int8 (QDQ), benchmark only"}] + (
        [{**refused, "precision": "int8 (refused by the export's accuracy gate)"}] if refused else [])
    for v in kept + added:
        f = v["file"]
        rows.append({"file": f, "precision": v["precision"], "accuracy": accuracy.get(f, v.get("accuracy")),
                     "max_abs_diff": v.get("max_abs_diff"), "fused_operators": v.get("fused_operators"),
                     "quantized_nodes": v.get("quantized_nodes"),
                     "batch_1_ms": fixed[1][f], "batch_32_ms": fixed[32][f], "valid_texts_ms": valid[f],
                     "speedup": {"batch_1": speedup(fixed[1], f), "batch_32": speedup(fixed[32], f),
                                 "valid_texts": speedup(valid, f)}})
    by_file = {r["file"]: r for r in rows}
    int8 = by_file.get(INT8)
    best_fp32 = max((r for r in rows if r["precision"].startswith("fp32")), key=lambda r: r["speedup"]["batch_32"])
    summary = {
        "sequence_length": length,
        "fp32_speedup_batch_32": best_fp32["speedup"]["batch_32"],
        "fp32_file": best_fp32["file"],
        "int8_speedup_batch_32": int8["speedup"]["batch_32"] if int8 else None,
        "int8_speedup_valid_texts": int8["speedup"]["valid_texts"] if int8 else None,
        "static_int8_speedup_batch_32": by_file[STATIC]["speedup"]["batch_32"],
        "int8_accuracy_drop": record["quantization"].get("accuracy_drop"),
        "static_int8_accuracy_drop": record["torch_accuracy"] - accuracy[STATIC],
        "int8_kept_by_export": refused is None,
        "recommended_by_export": record["recommended"],
        "recommendation_note": record.get("recommendation_note"),
        "valid_texts": len(task.valid),
        "targets": "fp32 >= 1.15x and int8 >= 2.0x torch eager at batch 32 x 128; int8 >= 2.5x on the validation "
                   "texts; int8 drop <= 0.01",
    }
    write_json_atomic(args.out, {"benchmark": "export_latency", "rows": args.rows, "valid_rows": len(task.valid),
                                 "repeats": args.repeats, "torch_accuracy": record["torch_accuracy"],
                                 "torch_ms": {"batch_1": fixed[1]["torch"], "batch_32": fixed[32]["torch"],
                                              "valid_texts": valid["torch"]},
                                 "timing": "each figure [q1, median, q3] ms; contenders in turn in every round (export._variants.time_in_turn)",
                                 "variants": rows, "summary": summary, "fusion": record["fusion"],
                                 "quantization": record["quantization"],
                                 "machine": {"cpu": machine(), "platform": platform.platform(), "cpus": os.cpu_count(),
                                             "vector_extensions": vector_extensions()},
                                 "versions": library_versions()})
    print(f"{'variant':<24} {'accuracy':>8} {'b1 ms':>7} {'b32 ms':>8} {'valid ms':>9} {'b1 x':>5} {'b32 x':>6} "
          f"{'valid x':>7}")
    print(f"{'torch eager':<24} {record['torch_accuracy']:>8.4f} {fixed[1]['torch'][1]:>7.1f} "
          f"{fixed[32]['torch'][1]:>8.1f} {valid['torch'][1]:>9.1f} {1:>5.2f} {1:>6.2f} {1:>7.2f}")
    for r in rows:
        s = r["speedup"]
        print(f"{r['file']:<24} {r['accuracy'] or 0:>8.4f} {r['batch_1_ms'][1]:>7.1f} {r['batch_32_ms'][1]:>8.1f} "
              f"{r['valid_texts_ms'][1]:>9.1f} {s['batch_1']:>5.2f} {s['batch_32']:>6.2f} {s['valid_texts']:>7.2f}")
    print(f"export recommended {record['recommended']}" + (f" ({summary['recommendation_note']})"
                                                           if summary["recommendation_note"] else ""))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
