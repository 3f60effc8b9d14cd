"""`finetune-advisor run`: advise, then search when the advice says so, then export; one command
from a dataset to a deployable model.

    fine-tune    -> search over layers and hyperparameters
    head-only    -> the same search with unfrozen_layers fixed to 0 (the search reads the advice)
    zero-shot    -> stop, saying why (--force-search searches anyway)
    change-model -> stop, saying why (--force-search searches anyway)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

DEMO_MODEL, DEMO_DATA = "demo:minilm", "demo:bbc-news"


def register(sub) -> None:
    from ..core import DEFAULT_TRIALS

    p = sub.add_parser(
        "run", help="advise, search if advised, export: from data to a deployable model in one command",
        description="Run the whole chain in one run directory: advise; search when the advice is fine-tune (or "
                    "train a head on frozen features when it is head-only); export the winner to ONNX. With no "
                    "--model/--data it runs on the bundled demos (MiniLM-L6 on BBC news topics).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  finetune-advisor run --out runs/demo                     the demo, start to end\n"
               "  finetune-advisor run --model ./my-model --data reviews.csv --out runs/reviews --trials 30\n"
               "  finetune-advisor run ... --timeout 1800 --force-search    search even if the advice says not to\n"
               "  finetune-advisor run ... --latency-budget-ms 5             the most accurate model within 5 ms a request\n"
               "Re-running the same command resumes the search (--trials is a total).")
    p.add_argument("--model", metavar="M", default=DEMO_MODEL, help=f"model (default {DEMO_MODEL})")
    from ._data_args import add_data_arguments

    add_data_arguments(p, required=False, data_help=f"data (default {DEMO_DATA})")
    p.add_argument("--out", metavar="RUN", required=True, help="run directory (created if missing)")
    g = p.add_argument_group("budget")
    g.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"search trials in total (default {DEFAULT_TRIALS}; the advisor's cost estimate assumes the "
                        "same number)")
    g.add_argument("--timeout", type=float, metavar="S", help="stop starting search trials after S seconds")
    g.add_argument("--max-length", type=int, help="fix the input length in tokens (default: advisor 128, "
                                                   "search bounded by the data)")
    g.add_argument("--min-gain", type=float, default=0.01,
                   help="accuracy gain that makes fine-tuning worth it (default 0.01)")
    g.add_argument("--force-search", action="store_true", help="search even when the advice is zero-shot or "
                                                                "change-model")
    g = p.add_argument_group("where it runs")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    g.add_argument("--workers", type=int, default=1, help="search worker processes (default 1)")
    g.add_argument("--storage", metavar="URL", help="Optuna storage URL (default sqlite:///RUN/study.db)")
    g.add_argument("--no-quantize", action="store_true", help="export without int8")
    from ._search_command import add_latency_arguments

    add_latency_arguments(p)
    p.set_defaults(run=run)


def run(args) -> int:
    """Load the data and the model once, then advise, search (when advised) and export, each
    stage called as a function and writing its own record into the run directory."""
    from ..advisor import AdvisorConfig, advise, read_inputs
    from ..core import (BEST_MODEL_DIR, EXPORT_DIR, EXPORT_FILE, InputError, RunDir, check_replaceable,
                      load_backbone, load_task)
    from ..export import ExportConfig, ExportError, export
    from ..search import SearchConfig, check_same_search, check_storage, model_identity, search, storage_url

    from ._advise_command import format_advice
    from ._data_args import absolute, data_config, print_notes
    from ._export_command import format_export
    from ._search_command import format_trials

    trials = args.trials
    InputError.check([(trials >= 1, f"--trials {trials} must be >= 1."),
                      (args.max_length is None or args.max_length >= 8,
                       f"--max-length {args.max_length} must be >= 8 tokens.")])
    t0 = time.perf_counter()
    data = absolute(args.data) or DEMO_DATA
    # 1) every setting and output is checked before anything is loaded
    run_dir = RunDir(args.out)
    run_dir.check()
    check_storage(storage_url(args.storage, run_dir.path))
    check_replaceable(run_dir.file(EXPORT_DIR), marker=EXPORT_FILE, flag="the deploy folder")
    aconfig = AdvisorConfig(max_length=args.max_length or AdvisorConfig.max_length, device=args.device,
                            seed=args.seed, search_trials=trials, min_gain=args.min_gain)
    sconfig = SearchConfig(trials=trials, timeout=args.timeout, storage=args.storage, workers=args.workers,
                           device=args.device, seed=args.seed,
                           space={"max_length": str(args.max_length)} if args.max_length else {},
                           latency=not args.no_latency, latency_budget_ms=args.latency_budget_ms,
                           latency_batch=args.latency_batch)
    econfig = ExportConfig(quantize=not args.no_quantize, latency_budget_ms=args.latency_budget_ms,
                           latency_batch=args.latency_batch)
    dconfig = data_config(args)
    # 2) the data and the model, once for every stage
    task = load_task(data, dconfig)
    inputs = read_inputs(task, aconfig)
    backbone = load_backbone(args.model, device=args.device)
    check_same_search(storage_url(args.storage, run_dir.path), sconfig.study, data_fingerprint=task.fingerprint,
                      model=model_identity(backbone))
    print_notes(task, backbone, args.model)

    _stage("1/3 advise")
    advice = advise(backbone, task, aconfig, inputs=inputs, progress=True, run_dir=run_dir.path)
    run_dir.write_run_record(command="run", configs={"model": args.model, "advisor": aconfig, "search": sconfig,
                                                     "export": econfig},
                             data_fingerprint=task.fingerprint, data_source=data, data_config=dconfig,
                             model_changes=backbone.changes)
    print(format_advice(advice))
    if advice.decision in ("zero-shot", "change-model") and not args.force_search:
        print(f"\nThe advice is {advice.decision.upper()}, so nothing was trained:", *advice.reasons, sep="\n  ")
        print(f"(--force-search searches anyway)\n\n{_where(run_dir, task, exported=False)}")
        return 0

    _stage(f"2/3 search ({'a head on frozen features' if advice.decision == 'head-only' else advice.decision})")
    record = search(backbone, task, run_dir.path, sconfig, advice=advice, model_ref=args.model, data_ref=data,
                    data_config=dconfig)
    print(format_trials(record))
    if not record.best:
        return 1

    _stage("3/3 export")
    try:
        exported = export(run_dir.file(BEST_MODEL_DIR), run_dir.file(EXPORT_DIR), task, econfig,
                          progress=lambda line: print(line, file=sys.stderr))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_export(exported))
    print(f"\nfinished in {time.perf_counter() - t0:.0f} s\n{_where(run_dir, task, exported=True)}")
    return 0


def _stage(name: str) -> None:
    print(f"\n== {name} ==", file=sys.stderr, flush=True)


def _where(run_dir, task, *, exported: bool) -> str:
    """Where each output is, and the commands to use them, ready to paste (paths quoted)."""
    from ._export_command import example_input

    path = run_dir.path
    export = shlex.quote(str(path / "export"))
    lines = ["where everything is:",
             f"  {path / 'advice.json'}    the advice and its numbers",
             f"  {path / 'run.json'}       what was run, on which data, with which versions"]
    if exported:
        lines += [f"  {path / 'search.json'}    the trials; {path / 'study.db'} the Optuna study",
                  f"  {path / 'best_model'}     the best model (transformers folder + head)",
                  f"  {path / 'export'}         ONNX deploy folder: finetune-advisor predict {export} "
                  f"{example_input(task)}"]
    lines.append(f"see it all: finetune-advisor dashboard {shlex.quote(str(path))}")
    return "\n".join(lines)
