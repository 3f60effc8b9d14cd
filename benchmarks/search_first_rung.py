"""Benchmark: the search's first rung on a third of the data against a first rung after a whole
epoch, side by side in one run.

The search of benchmarks/search_vs_hf.py, (a) `search` on the full space (demo:minilm on 800
examples of demo:bbc-news, the same space, the same 4 start-up configurations queued first, 12
trials, seed 0, Hyperband), run twice: with `first_rung=1/3` (a trial first reports its validation
accuracy after a third of its first epoch, so Hyperband can stop a poor one there) and with
`first_rung=1` (epochs only), after an untimed one-trial search on 100 other rows (the first search
in a process pays one-off costs). Each run starts from its own empty feature cache. Reported per side:
total seconds, the time until a trial first reaches within 0.005 of the best whole-epoch accuracy
either side found, the best accuracy, and how many trials were pruned and where.

Writes benchmarks/results/search_first_rung.json and prints the comparison.

    python benchmarks/search_first_rung.py [--rows 800] [--trials 12] [--advise]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_advisor.core import DataConfig, library_versions, load_task, write_json_atomic  # noqa: E402
from search_vs_hf import SPACE, START, TOLERANCE, RssSampler, run_ours, time_to, trial_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_first_rung.json"
RUNGS = {"1/3": 1 / 3, "1": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--advise", action="store_true", help="(b): advise first, then search what it leaves open")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task("demo:bbc-news", DataConfig(max_rows=args.rows, seed=0))
    results = {}
    with tempfile.TemporaryDirectory() as tmp, RssSampler() as sampler:
        # untimed: the first search in a process pays one-off costs (libraries, files, kernels)
        os.environ["FINETUNE_ADVISOR_CACHE"] = str(Path(tmp) / "warm-up-cache")
        run_ours(load_task("demo:bbc-news", DataConfig(max_rows=100, seed=1)), 1, Path(tmp), sampler,
                 advise_first=False)
        for name, rung in RUNGS.items():
            folder = Path(tmp) / f"rung-{rung:.3f}"
            folder.mkdir()
            os.environ["FINETUNE_ADVISOR_CACHE"] = str(folder / "cache")  # each run starts cold
            results[name] = run_ours(task, args.trials, folder, sampler, advise_first=args.advise, first_rung=rung)
            r = results[name]
            print(f"first rung {name}: {r['seconds']:.0f} s, best {r['best_value']:.4f}", flush=True)
    best = max(t["score"] for r in results.values() for t in r["trials"] if t["score"] is not None)
    target = best - TOLERANCE
    to_target = {n: time_to(r["trials"], target) for n, r in results.items()}
    summary = {
        "path": "advise+search" if args.advise else "search",
        "target": target, "time_to_target_s": to_target,
        "total_s": {n: r["seconds"] for n, r in results.items()},
        "best_accuracy": {n: r["best_value"] for n, r in results.items()},
        "pruned": {n: sum(t["state"] == "PRUNED" for t in r["trials"]) for n, r in results.items()},
        "pruned_inside_epoch_1": {n: sum(t["state"] == "PRUNED" and t["epochs_run"] == 0 for t in r["trials"])
                                  for n, r in results.items()},
        "third_speedup_total": results["1"]["seconds"] / results["1/3"]["seconds"],
        "third_speedup_to_target": to_target["1"] / to_target["1/3"] if to_target["1"] and to_target["1/3"] else None,
    }
    out = RESULTS if not args.advise else RESULTS.with_name("search_first_rung_advise.json")
    write_json_atomic(out, {
        "benchmark": "search_first_rung", "rows": args.rows, "train_rows": len(task.train),
        "valid_rows": len(task.valid), "trials": args.trials, "space": SPACE, "start_with": START,
        "tolerance": TOLERANCE, "summary": summary, "runs": results,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": library_versions()})
    for n, r in results.items():
        print(f"first rung {n}: to {target:.4f} in {to_target[n] or float('nan'):.0f} s, total {r['seconds']:.0f} s, "
              f"trials {trial_line(r['trials'])}")
    print(f"a first rung on a third of the data: {summary['third_speedup_total']:.2f}x the total, "
          f"{summary['third_speedup_to_target'] or float('nan'):.2f}x to the target")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
