"""Benchmark: one search worker on every core against one worker per core, side by side in one run.

The search of benchmarks/search_vs_hf.py (demo:minilm on 800 examples of demo:bbc-news, the same
space, the same 4 start-up configurations queued first, 12 trials, seed 0), run with `workers=1`
(one process, torch on both cores) and with `workers=2` (two processes on one SQLite study, one
core each, frozen features shared through the disk cache). Each side starts from its own empty
feature cache. Reported per side: total seconds, the time until a trial first reaches within
0.005 of the best accuracy either side found, and the best accuracy. Two workers finish more
trials per second when one trial cannot keep two cores busy; TPE then suggests with fewer
finished trials to learn from.

Writes benchmarks/results/search_workers.json and prints the comparison.

    python benchmarks/search_workers.py [--rows 800] [--trials 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_advisor.core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402
from search_vs_hf import SPACE, START, TOLERANCE, per_trial, time_to, trial_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_workers.json"


class _NoRss:
    """per_trial's memory sampler, for processes this one cannot sample: no figure."""

    def peak_between(self, start, end):
        return None


def run(workers: int, task, data_config: DataConfig, trials: int, folder: Path) -> dict:
    import optuna

    from finetune_advisor.search import SearchConfig, search

    os.environ["FINETUNE_ADVISOR_CACHE"] = str(folder / "cache")
    t0 = time.time()
    record = search(load_backbone("demo:minilm"), task, folder,
                    SearchConfig(trials=trials, space=SPACE, seed=0, start_with=START, workers=workers),
                    model_ref="demo:minilm", data_ref="demo:bbc-news", data_config=data_config, progress=False,
                    log=lambda s: None)
    seconds = time.time() - t0
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{folder / 'study.db'}")
    return {"workers": workers, "threads_per_worker": (os.cpu_count() or 1) // workers, "seconds": seconds,
            "trials": per_trial(study, _NoRss(), t0), "best_value": record.best["value"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data_config = DataConfig(max_rows=args.rows, seed=0)
    task = load_task("demo:bbc-news", data_config)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            folder = Path(tmp) / f"workers-{workers}"
            folder.mkdir()
            results[str(workers)] = run(workers, task, data_config, args.trials, folder)
            r = results[str(workers)]
            print(f"{workers} worker(s): {r['seconds']:.0f} s, best {r['best_value']:.4f}", flush=True)
    best = max(t["score"] for r in results.values() for t in r["trials"] if t["score"] is not None)
    target = best - TOLERANCE
    to_target = {w: time_to(r["trials"], target) for w, r in results.items()}
    summary = {
        "target": target, "time_to_target_s": to_target,
        "total_s": {w: r["seconds"] for w, r in results.items()},
        "best_accuracy": {w: r["best_value"] for w, r in results.items()},
        "two_workers_speedup_total": results["1"]["seconds"] / results["2"]["seconds"],
        "two_workers_speedup_to_target": to_target["1"] / to_target["2"] if to_target["1"] and to_target["2"] else None,
    }
    write_json_atomic(RESULTS, {
        "benchmark": "search_workers", "rows": args.rows, "train_rows": len(task.train), "valid_rows": len(task.valid),
        "trials": args.trials, "space": SPACE, "start_with": START, "tolerance": TOLERANCE, "summary": summary,
        "runs": results, "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": library_versions()})
    for w, r in results.items():
        print(f"{w} worker(s): to {target:.4f} in {to_target[w] or float('nan'):.0f} s, total {r['seconds']:.0f} s, "
              f"trials {trial_line(r['trials'])}")
    print(f"two workers: {summary['two_workers_speedup_total']:.2f}x the total, "
          f"{summary['two_workers_speedup_to_target'] or float('nan'):.2f}x to the target")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
