"""`finetune-advisor search`: Optuna over layers to unfreeze and hyperparameters; RUN/search.json,
RUN/best_model and a table of the top trials."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """\
space (each NAME=VALUE: LO:HI a range, A,B,C a choice, V a fixed value):
  unfrozen_layers 0:L   learning_rate 1e-5:3e-4 (log)   head_lr_multiplier 3:100 (log)
  layer_lr_decay 0.7:1.0   batch_size 16,32   weight_decay 0:0.1   warmup_ratio 0:0.2
  epochs 1:4 (small data: both ends grow until a trial sees 3,200 examples; 280 rows search 3:12)
  max_length 64,128,256 (stops at the first length that holds 95% of the texts)
  kept_layers L (with --latency-budget-ms: ceil(L/3):L; the model keeps its first d blocks)
  batchnorm frozen (models with BatchNorm: running statistics kept while training; frozen,train from
    10,000 training rows)
  If RUN/advice.json exists, unfrozen_layers starts from its suggested range (--no-advice to ignore it).

examples:
  finetune-advisor search --model demo:minilm --data demo:bbc-news --out runs/bbc --trials 12
  finetune-advisor search ... --space unfrozen_layers=0:2 --space batch_size=32 --pruner median
  finetune-advisor search ... --latency-budget-ms 5               the most accurate model within 5 ms
  finetune-advisor search ... --workers 2                        two processes on one study
  finetune-advisor search ... --storage postgresql://user:pw@db:5432/optuna --study bbc
                                                                 the same command on several machines
Re-running the same command resumes: --trials is the total of finished trials, not that many more.
"""


def register(sub) -> None:
    from ..core import DEFAULT_TRIALS
    from ..search import HEAD_STARTS, PRUNERS

    from ._data_args import add_data_arguments

    p = sub.add_parser(
        "search", help="search how many layers to unfreeze and the hyperparameters (Optuna)",
        description="Run or resume an Optuna study (TPE, pruning on each epoch's validation accuracy) over the "
                    "number of top blocks to fine-tune and the training hyperparameters. Frozen layers are "
                    "computed once and shared by all trials. Writes RUN/study.db (unless --storage), "
                    "RUN/search.json and the best model so far in RUN/best_model.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--model", metavar="M", required=True, help="Hugging Face id, local folder, or demo:minilm")
    add_data_arguments(p)
    p.add_argument("--out", metavar="RUN", required=True, help="run directory (created if missing)")
    g = p.add_argument_group("budget")
    g.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"total finished trials in the study (default {DEFAULT_TRIALS})")
    g.add_argument("--timeout", type=float, metavar="S", help="stop starting new trials after S seconds")
    g = p.add_argument_group("space and pruning")
    g.add_argument("--space", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter's range (repeatable; see below)")
    g.add_argument("--space-file", metavar="FILE", help='JSON {"NAME": "VALUE", …} of overrides')
    g.add_argument("--pruner", choices=PRUNERS, default="hyperband", help="default: hyperband")
    g.add_argument("--first-rung", default="1/3", metavar="1/N",
                   help="share of the first epoch after which a trial first reports to the pruner, so a poor "
                        "one stops after that much data (default 1/3; 1 = after whole epochs only)")
    g.add_argument("--no-advice", action="store_true", help="ignore RUN/advice.json")
    g.add_argument("--head-search", action="store_true",
                   help="when only a head trains (unfrozen_layers=0), search its hyperparameters with trials "
                        "instead of fitting it once in closed form")
    g.add_argument("--head-start", choices=HEAD_STARTS, default="probe",
                   help="where each trial's head starts: probe (default; the closed-form head on the frozen "
                        "features, fitted once, then fine-tuned with the blocks: LP-FT) or random")
    add_latency_arguments(p)
    g = p.add_argument_group("storage and workers")
    g.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: sqlite:///RUN/study.db)")
    g.add_argument("--study", default="search", help="study name in the storage (default: search)")
    g.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    g.add_argument("--heartbeat", type=int, default=30, metavar="S",
                   help="seconds between heartbeats; a trial silent for 5 is retried (default 30)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    g.add_argument("--cache", default="auto", help="frozen-feature cache: auto (pooled features on disk, shared with advise; the rest in "
                        "memory for one worker, on disk for several), memory, disk or off (default auto)")
    g.add_argument("--cache-gb", type=float, default=2.0,
                   help="most GiB of cached features held in memory per worker (default 2)")
    g.add_argument("--cache-disk-gb", type=float, default=10.0,
                   help="most GiB the disk cache ($FINETUNE_ADVISOR_CACHE or ~/.cache/finetune-advisor) may "
                        "hold; least recently used files go first (default 10)")
    p.set_defaults(run=run)


def add_latency_arguments(p) -> None:
    """--latency-budget-ms, --latency-batch and --no-latency (search and run)."""
    g = p.add_argument_group("deployment latency")
    g.add_argument("--latency-budget-ms", type=float, metavar="MS",
                   help="the most accurate model whose deployed latency (onnxruntime on this machine, fp32 or "
                        "int8) fits MS milliseconds per request; also searches kept_layers (drop top blocks)")
    g.add_argument("--latency-batch", type=int, default=1, metavar="N",
                   help="the budget is per batch of N requests (default 1)")
    g.add_argument("--no-latency", action="store_true",
                   help="do not time each trial's shape (search.json then has no accuracy/latency front)")


def space_overrides(pairs: list[str], file: str | None) -> dict[str, str]:
    """{name: value} from a space file, then --space NAME=VALUE flags on top."""
    from ..core import InputError

    overrides: dict[str, str] = {}
    if file:
        path = Path(file)
        if not path.is_file():
            raise InputError(f"--space-file '{file}' does not exist.")
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"--space-file '{file}' is not valid JSON ({e}).") from None
        if not isinstance(loaded, dict):
            raise InputError(f'--space-file \'{file}\' must hold one JSON object, e.g. {{"epochs": "1:3"}}.')
        overrides.update({str(k): str(v) for k, v in loaded.items()})
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--space '{pair}' must be NAME=VALUE, e.g. --space learning_rate=1e-5:1e-4.")
        overrides[name.strip()] = value.strip()
    return overrides


def first_rung(text: str) -> float:
    """--first-rung as a number: "1/3", "0.5" or "1"."""
    from ..core import InputError

    top, sep, bottom = text.partition("/")
    try:
        return float(top) / float(bottom) if sep else float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"--first-rung '{text}' is not a share of an epoch; give 1/N, e.g. 1/3, or 1.") from None


def run(args) -> int:
    from ..core import BEST_MODEL_DIR, SEARCH_FILE, RunDir, load_backbone, load_task
    from ..search import SearchConfig, check_augment, check_storage, parse_param, search, storage_url

    from ._data_args import absolute, data_config, print_notes

    overrides = space_overrides(args.space, args.space_file)
    config = SearchConfig(trials=args.trials, timeout=args.timeout, storage=args.storage, study=args.study,
                          pruner=args.pruner, first_rung=first_rung(args.first_rung), workers=args.workers,
                          space=overrides, use_advice=not args.no_advice,
                          seed=args.seed, device=args.device, cache=args.cache, cache_gb=args.cache_gb,
                          cache_disk_gb=args.cache_disk_gb,
                          heartbeat=args.heartbeat, head_search=args.head_search,
                          head_start=args.head_start, latency=not args.no_latency,
                          latency_budget_ms=args.latency_budget_ms, latency_batch=args.latency_batch)
    for name, value in overrides.items():  # names, syntax and ranges checked before anything loads
        parse_param(name, value)
    RunDir(args.out).check()
    check_storage(storage_url(args.storage, Path(args.out)), heartbeat=args.heartbeat)
    dconfig = data_config(args)
    task = load_task(args.data, dconfig)
    check_augment(parse_param("augment", overrides["augment"]) if "augment" in overrides else None, task.modality,
                  args.model)  # before the model loads
    backbone = load_backbone(args.model, device=args.device)
    print_notes(task, backbone, args.model)
    run_dir = RunDir(args.out)
    record = search(backbone, task, run_dir.path, config, model_ref=args.model, data_ref=absolute(args.data),
                    data_config=dconfig)
    run_dir.write_run_record(command="search", configs={"search": config, "model": args.model},
                             data_fingerprint=task.fingerprint, data_source=absolute(args.data), data_config=dconfig,
                             model_changes=backbone.changes)
    print(format_trials(record))
    print(f"\nwrote {run_dir.file(SEARCH_FILE)}"
          + (f" and {run_dir.file(BEST_MODEL_DIR)}" if record.best_model else ""))
    return 0 if record.best else 1


def format_trials(record, top: int = 5) -> str:
    """The top trials of a SearchRecord as a table, with the study's counts above it."""
    n = record.n_trials
    lines = [f"study '{record.study_name}' ({record.storage}): {n.complete} complete, {n.pruned} pruned, "
             f"{n.fail} failed"]
    rows = sorted((t for t in record.trials if t.state == "COMPLETE"), key=lambda t: -t.value)[:top]
    if not rows:
        reasons = sorted({t.fail_reason or t.pruned_reason for t in record.trials if t.fail_reason or t.pruned_reason})
        return "\n".join(lines + ["no trial completed"] + [f"  - {r}" for r in reasons])
    searched = [k for k, v in record.space.items() if ":" in v or "," in v]  # fixed values are not shown
    names = sorted(searched, key=lambda k: k != "unfrozen_layers")
    short = {"unfrozen_layers": "k", "kept_layers": "d", "learning_rate": "lr", "head_lr_multiplier": "head_x", "layer_lr_decay": "decay",
             "batch_size": "batch", "weight_decay": "wd", "warmup_ratio": "warmup", "max_length": "len"}
    header = ["trial", "accuracy"] + [short.get(k, k) for k in names] + ["seconds"]
    table = [header]
    for t in rows:
        cells = [str(t.number), f"{t.value:.4f}"]
        for k in names:
            v = t.params.get(k, "")
            cells.append(f"{v:.2g}" if isinstance(v, float) else str(v))
        cells.append(f"{t.seconds:.0f}" if t.seconds is not None else "")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines.append(f"top {len(rows)} trials:")
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    if record.front:
        budget = f", budget {record.latency_budget_ms:g} ms" if record.latency_budget_ms is not None else ""
        lines.append(f"accuracy against latency (onnxruntime, batch {record.latency_batch}{budget}), fastest first:")
        lines += [f"  trial {p.number}: {p.accuracy:.4f} at {p.latency_ms:.1f} ms ({p.variant}"
                  + (f", {p.kept_layers} blocks" if p.kept_layers is not None else "")
                  + (f", {p.max_length} tokens" if p.max_length is not None else "") + ")" for p in record.front]
    return "\n".join(lines)
