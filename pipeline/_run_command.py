"""`finetune-advisor run`: advise, then search when the advice says so, then export; one command
from a dataset to a deployable model.

    fine-tune    -> search over layers and hyperparameters
    head-only    -> the same search with unfrozen_layers fixed to 0 (a head on cached frozen features)
    zero-shot    -> stop, saying why (--force-search searches anyway)
    change-model -> stop, saying why (--force-search searches anyway)
"""

from __future__ import annotations

import argparse
import sys
import time

DEMO_MODEL, DEMO_DATA = "demo:minilm", "demo:bbc-news"


def register(sub) -> None:
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
               "Re-running the same command resumes the search (--trials is a total).")
    p.add_argument("--model", metavar="M", default=DEMO_MODEL, help=f"model (default {DEMO_MODEL})")
    from .cli import add_data_arguments

    add_data_arguments(p, required=False, data_help=f"data (default {DEMO_DATA})")
    p.add_argument("--out", metavar="RUN", required=True, help="run directory (created if missing)")
    g = p.add_argument_group("budget")
    g.add_argument("--trials", type=int, default=12, help="search trials in total (default 12)")
    g.add_argument("--timeout", type=float, metavar="S", help="stop starting search trials after S seconds")
    g.add_argument("--max-length", type=int, help="fix the input length in tokens (default: advisor 128, "
                                                   "search bounded by the data)")
    g.add_argument("--force-search", action="store_true", help="search even when the advice is zero-shot or "
                                                                "change-model")
    g = p.add_argument_group("where it runs")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    g.add_argument("--workers", type=int, default=1, help="search worker processes (default 1)")
    g.add_argument("--storage", metavar="URL", help="Optuna storage URL (default sqlite:///RUN/study.db)")
    g.add_argument("--no-quantize", action="store_true", help="export without int8")
    p.set_defaults(run=run)


def data_flags(args) -> list[str]:
    """The data flags of `args`, as they would be typed (to hand on to each stage)."""
    flags = ["--data", args.data or DEMO_DATA, "--seed", str(args.seed)]
    for name in ("text_column", "text_pair_column", "label_column", "valid", "test", "max_rows"):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def run(args) -> int:
    from core import InputError, RunDir
    from search import check_storage, storage_url

    from .cli import main

    InputError.check([(args.trials >= 1, f"--trials {args.trials} must be >= 1."),
                      (args.max_length is None or args.max_length >= 8,
                       f"--max-length {args.max_length} must be >= 8 tokens.")])
    t0 = time.perf_counter()
    run_dir = RunDir(args.out)
    run_dir.check()  # before an advice that may take minutes
    check_storage(storage_url(args.storage, run_dir.path))
    common = ["--model", args.model, *data_flags(args), "--out", args.out]
    length = ["--max-length", str(args.max_length)] if args.max_length else []

    _stage("1/3 advise")
    status = main(["advise", *common, *length, "--device", args.device])
    if status:
        return status
    advice = run_dir.read("advice.json")
    decision = advice["decision"]
    search_flags = ["--trials", str(args.trials), "--workers", str(args.workers), "--device", args.device]
    search_flags += ["--timeout", str(args.timeout)] if args.timeout else []
    search_flags += ["--storage", args.storage] if args.storage else []
    search_flags += ["--space", f"max_length={args.max_length}"] if args.max_length else []
    if decision == "head-only":  # no block trains, so the layer-wise decay has nothing to act on
        search_flags += ["--space", "unfrozen_layers=0", "--space", "layer_lr_decay=1"]
    elif decision in ("zero-shot", "change-model") and not args.force_search:
        print(f"\nThe advice is {decision.upper()}, so nothing was trained:", *advice["reasons"], sep="\n  ")
        print(f"(--force-search searches anyway)\n\n{_where(run_dir, exported=False)}")
        return 0

    _stage(f"2/3 search ({'a head on frozen features' if decision == 'head-only' else decision})")
    status = main(["search", *common, *search_flags])
    if status:
        return status

    _stage("3/3 export")
    status = main(["export", args.out, *(["--no-quantize"] if args.no_quantize else [])])
    if status:
        return status
    print(f"\nfinished in {time.perf_counter() - t0:.0f} s\n{_where(run_dir, exported=True)}")
    return 0


def _stage(name: str) -> None:
    print(f"\n== {name} ==", file=sys.stderr, flush=True)


def _where(run_dir, *, exported: bool) -> str:
    path = run_dir.path
    lines = ["where everything is:",
             f"  {path / 'advice.json'}    the advice and its numbers",
             f"  {path / 'run.json'}       what was run, on which data, with which versions"]
    if exported:
        lines += [f"  {path / 'search.json'}    the trials; {path / 'study.db'} the Optuna study",
                  f"  {path / 'best_model'}     the best model (transformers folder + head)",
                  f"  {path / 'export'}         ONNX deploy folder: finetune-advisor predict {path / 'export'} \"text\""]
    lines.append(f"see it all: finetune-advisor dashboard {path}")
    return "\n".join(lines)
