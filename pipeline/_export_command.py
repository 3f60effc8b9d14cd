"""`finetune-advisor export` (ONNX, checked, quantised, timed) and `predict` (onnxruntime only)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def register(sub) -> None:
    from ._data_args import add_data_arguments

    p = sub.add_parser(
        "export", help="export the best model to ONNX (+ int8), checked against PyTorch, with latencies",
        description="Export RUN/best_model (or a Hugging Face sequence-classification folder) to ONNX, check it "
                    "against PyTorch on the validation split and odd shapes, quantise it to int8 when the "
                    "accuracy stays within the gate, time it, and write a deploy folder (RUN/export) that runs "
                    "on onnxruntime alone. A model that fails a check is not exported.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  finetune-advisor export runs/bbc                       writes runs/bbc/export\n"
               "  finetune-advisor export runs/bbc --no-quantize --atol 1e-5\n"
               "  finetune-advisor export ./my-classifier --data valid.csv --out ./deploy\n"
               "The validation data is the run's own (RUN/run.json) unless --data is given.")
    p.add_argument("source", metavar="RUN", help="run directory with best_model/, or a classification model folder")
    p.add_argument("--out", metavar="DIR", help="deploy folder (default: RUN/export)")
    add_data_arguments(p, required=False, data_help="data whose validation split checks the export "
                                                   "(default: the run's data, from RUN/run.json)")
    g = p.add_argument_group("checks")
    g.add_argument("--atol", type=float, default=1e-4,
                   help="absolute part of the largest |logit difference| allowed vs PyTorch (default 1e-4)")
    g.add_argument("--rtol", type=float, default=1e-3,
                   help="relative part: times the largest |logit| of the same input (default 1e-3); the gate is "
                        "|difference| <= atol + rtol x scale, and the same predicted class")
    g.add_argument("--max-accuracy-drop", type=float, default=0.01,
                   help="int8 is kept only if its accuracy is at most this much lower (default 0.01)")
    g.add_argument("--no-quantize", action="store_true", help="skip int8 quantisation")
    g.add_argument("--no-optimize", action="store_true", help="skip fusing the graph for onnxruntime (attention, layer norms, "
                   "activations); int8 then quantises the plain graph")
    g.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    g.add_argument("--repeats", type=int, default=30, help="timed runs per contender at batch 1, in rounds of 5; batch 32 gets as many "
                   "rounds of one run (default 30); each round runs torch and every variant in turn")
    g = p.add_argument_group("deployment latency")
    g.add_argument("--latency-budget-ms", type=float, metavar="MS",
                   help="check the export against this budget (default: the search's, from RUN/search.json)")
    g.add_argument("--latency-batch", type=int, metavar="N", help="the budget's batch size (default: the search's, or 1)")
    p.set_defaults(run=run_export)

    q = sub.add_parser(
        "predict", help="classify texts or images with an exported model (onnxruntime only)",
        description="Classify texts (or, with an image model's export, image files) with an export folder; prints "
                    'one JSON line per input ({"text" or "image", "label", "score"}). Needs only onnxruntime and '
                    "numpy, with tokenizers for text or Pillow for images.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               '  finetune-advisor predict runs/bbc/export "Shares fell sharply" "The striker scored twice"\n'
               "  finetune-advisor predict runs/bbc/export --file texts.txt > predictions.jsonl\n"
               "  finetune-advisor predict runs/photos/export cat.jpg dog.png")
    q.add_argument("folder", metavar="EXPORT", help="an export folder (RUN/export)")
    q.add_argument("texts", nargs="*", metavar="INPUT", help="texts to classify, or image files for an image model")
    q.add_argument("--file", help="texts (or image paths), one a line (or JSONL with a \"text\" field)")
    q.add_argument("--variant", help="the .onnx file to use (default: the recommended one)")
    q.add_argument("--batch-size", type=int, default=32)
    q.set_defaults(run=run_predict)


def run_export(args) -> int:
    from ..core import InputError, RunDir, check_replaceable, load_task
    from ..export import EXPORT_RECORD, ExportConfig, ExportError, export

    from ._data_args import data_config

    root = Path(args.source)
    budget, batch = args.latency_budget_ms, args.latency_batch
    if budget is None and (root / "search.json").is_file():
        from ..core import SearchRecord

        searched = SearchRecord.read(root / "search.json")
        budget, batch = searched.latency_budget_ms, batch or searched.latency_batch
    config = ExportConfig(opset=args.opset, atol=args.atol, rtol=args.rtol, quantize=not args.no_quantize,
                          max_accuracy_drop=args.max_accuracy_drop, optimize=not args.no_optimize,
                          repeats=args.repeats, latency_budget_ms=budget, latency_batch=batch or 1)
    if (root / "best_model").is_dir():
        source, out = root / "best_model", Path(args.out) if args.out else root / "export"
    elif (root / "config.json").is_file():
        if not args.out:
            raise InputError(f"'{root}' is a model folder: say where the deploy folder goes with --out DIR.")
        source, out = root, Path(args.out)
    else:
        raise InputError(f"'{root}' has no best_model/ (and is no model folder). Run finetune-advisor search "
                         f"--out {root} … first, or give a sequence-classification model folder.")
    check_replaceable(out, marker=EXPORT_RECORD, flag="--out" if args.out else "the deploy folder")
    run_dir = RunDir(root)
    run_dir.run_record()  # a broken run.json is named here, before any work
    task = load_task(args.data, data_config(args)) if args.data else run_dir.load_task()
    try:
        record = export(source, out, task, config, progress=lambda line: print(line, file=sys.stderr))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if run_dir.exists("run.json"):
        run_dir.write_run_record(command="export", configs={"export": config}, data_fingerprint=task.fingerprint)
    print(format_export(record))
    print(f"\nwrote {out}  (try: finetune-advisor predict {shlex.quote(str(out))} {example_input(task)})")
    return 0


def example_input(task) -> str:
    """An input to try the deploy folder on, quoted for the shell: one of the data's own images
    for an image model, a sentence for a text model."""
    if task.modality == "image":
        return shlex.quote(task.valid.texts[0])
    return shlex.quote("some text")


def format_export(record) -> str:
    """An ExportRecord as a table of variants."""
    t = record.torch_latency_ms
    nan = float("nan")
    w = max(16, *(len(v.file) for v in record.variants))
    torch_acc = f"{record.torch_accuracy:.4f}" if record.torch_accuracy is not None else "-"
    lines = [f"{'variant':<{w}} {'accuracy':>8} {'max|diff|':>10} {'batch 1 ms':>10} {'batch 32 ms':>11}  status",
             f"{'torch eager':<{w}} {torch_acc:>8} {'':>10} {t.batch_1:>10.1f} {t.batch_32:>11.1f}"]
    for v in record.variants:
        lat = v.latency_ms
        acc = f"{v.accuracy:.4f}" if v.accuracy is not None else "-"
        diff = f"{v.max_abs_diff:.1e}" if v.max_abs_diff is not None else "-"
        status = "kept" if v.passed else f"refused: {v.why}"
        lines.append(f"{v.file:<{w}} {acc:>8} {diff:>10} {lat.batch_1 if lat else nan:>10.1f} "
                     f"{lat.batch_32 if lat else nan:>11.1f}  {status}")
    best = record.recommended
    shape = f"{record.sequence_length} tokens" if record.sequence_length else "one image size"
    lines.append(f"recommended: {best} ({record.speedup_over_torch[best]:.2f}x torch at batch 32, {shape})")
    if record.recommendation_note:
        lines.append(f"note: {record.recommendation_note}")
    b = record.budget
    if b is not None:
        verdict = "holds" if b.held else "does NOT hold"
        noise = " (within timing noise: the quartiles straddle it)" if b.within_noise else ""
        lines.append(f"latency budget {b.budget_ms:g} ms at batch {b.batch}: {verdict}, {b.variant} takes "
                     f"{b.latency_ms:.1f} ms here{noise}")
    return "\n".join(lines)


def run_predict(args) -> int:
    from ..export import Predictor, PredictorError

    texts = list(args.texts)
    try:
        if args.batch_size < 1:
            raise PredictorError(f"--batch-size {args.batch_size} must be >= 1 (e.g. 32).")
        if args.file:
            texts += _read_texts(args.file)
        if not texts:
            raise PredictorError("no inputs: give texts (or image files) as arguments or with --file FILE.")
        predictor = Predictor(args.folder, args.variant)
        predictions = predictor.predict(texts, batch_size=args.batch_size)
    except PredictorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    key = "image" if predictor.modality == "image" else "text"
    for text, p in zip(texts, predictions):
        print(json.dumps({key: text, **p}, ensure_ascii=False))
    return 0


def _read_texts(file: str) -> list[str]:
    from ..export import PredictorError

    path = Path(file)
    if path.exists() and not path.is_file():
        raise PredictorError(f"--file '{file}' is not a regular file (a pipe, socket, device or folder): reading it "
                             "could wait forever. Save the texts to a file, one a line, and give that.")
    if not path.is_file():
        raise PredictorError(f"--file '{file}' does not exist.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PredictorError(f"--file '{file}' is not UTF-8 text (line {line}, byte 0x{raw[e.start]:02x}). "
                             "Give a text file, one text a line, saved as UTF-8.") from None
    if "\x00" in text:
        raise PredictorError(f"--file '{file}' holds NUL bytes: it looks binary. Give a text file, one text a line.")
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        try:
            texts = [json.loads(line)["text"] for line in lines]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PredictorError(f"--file '{file}': each JSONL line needs a \"text\" field.") from None
        if not all(isinstance(t, str) for t in texts):
            raise PredictorError(f"--file '{file}': every \"text\" must be a string.")
        return texts
    return lines
