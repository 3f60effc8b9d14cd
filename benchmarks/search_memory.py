"""Benchmark: does a search's memory stay flat across trials?

The real `search()` on demo:minilm and 500 demo:bbc-news rows, 15 trials of one epoch with the
number of unfrozen blocks drawn from 1..5 (every new k adds its frozen features to the cache),
run twice side by side in fresh processes: with a small in-memory cache budget (`cache_gb` 0.25,
so older k's features are evicted and recomputed) and with the budget far above what the run
needs (the cache keeps every k, as an unbounded cache would). For each trial: the resident set
size when it starts (what earlier trials left behind) and its peak (a thread samples
/proc/self/status every 0.1 s), and the bytes the cache holds. Flat means: the start RSS stops
growing once the search has visited the k's, and a trial's peak does not grow from one trial
with the same k to a later one.

    python benchmarks/search_memory.py     # writes benchmarks/results/search_memory.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


RESULTS = Path(__file__).resolve().parent / "results" / "search_memory.json"
ROWS, TRIALS = 500, 15
SPACE = {"unfrozen_layers": "1:5", "epochs": "1", "batch_size": "16", "max_length": "128", "patience": "0",
         "learning_rate": "1e-5:1e-4"}
BUDGETS = {"budget 0.25 GiB": 0.25, "budget far above need (64 GiB)": 64.0}


def child(cache_gb: float) -> None:
    """One search in this process; prints its trials as one JSON line."""
    import optuna
    from search_vs_hf import RssSampler, rss_bytes

    from finetune_advisor import core
    from finetune_advisor.core import DataConfig, load_backbone, load_task
    from finetune_advisor.search import SearchConfig, search

    caches = []

    class Recording(core.FeatureCache):  # the search makes its cache from core at run time
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            caches.append(self)

    class Sampler(RssSampler):  # also samples the bytes the cache holds
        def __init__(self):
            super().__init__()
            self.cache_samples = []

        def _run(self, interval):
            while not self._stop.is_set():
                try:
                    self.cache_samples.append((time.time(), caches[0].bytes_held if caches else 0))
                except RuntimeError:  # the cache changed while it was being summed; next sample
                    pass
                self.samples.append((time.time(), rss_bytes()))
                self._stop.wait(interval)

    core.FeatureCache = Recording
    task = load_task("demo:bbc-news", DataConfig(max_rows=ROWS, seed=0))
    backbone = load_backbone("demo:minilm")
    with tempfile.TemporaryDirectory() as tmp:
        with Sampler() as sampler:
            search(backbone, task, Path(tmp), SearchConfig(trials=TRIALS, space=SPACE, pruner="none", seed=0,
                                                           cache_gb=cache_gb, use_advice=False),
                   progress=False, log=lambda s: None)
        study = optuna.load_study(study_name="search", storage=f"sqlite:///{Path(tmp) / 'study.db'}")
        rows = []
        for t in study.get_trials(deepcopy=False):
            start, end = t.datetime_start.timestamp(), t.datetime_complete.timestamp()
            rows.append({"number": t.number, "k": t.params["unfrozen_layers"], "state": t.state.name,
                         "peak_rss_mb": (sampler.peak_between(start, end) or 0) / 2**20,
                         "start_rss_mb": _last_before(sampler.samples, start) / 2**20,
                         "cache_mb": _last_before(sampler.cache_samples, end) / 2**20})
    print(json.dumps(rows))


def _last_before(samples, t):
    return max(((s, v) for s, v in samples if s <= t), default=(0, 0))[1]


def main() -> None:
    from finetune_advisor.core import library_versions, write_json_atomic

    results = {}
    for name, gb in BUDGETS.items():
        out = subprocess.run([sys.executable, __file__, "--child", str(gb)], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent)
        trials = json.loads(out.stdout.strip().splitlines()[-1])
        half = trials[len(trials) // 2:]
        growth = half[-1]["start_rss_mb"] - half[0]["start_rss_mb"]
        same_k = {}  # k -> peaks of the trials with that k, in order
        for t in trials:
            same_k.setdefault(t["k"], []).append(t["peak_rss_mb"])
        peak_drift = {k: p[-1] - p[0] for k, p in sorted(same_k.items()) if len(p) > 1}
        results[name] = {"cache_gb": gb, "trials": trials, "second_half_start_rss_growth_mb": growth,
                         "peak_drift_same_k_mb": peak_drift,
                         "max_peak_rss_mb": max(t["peak_rss_mb"] for t in trials),
                         "max_cache_mb": max(t["cache_mb"] for t in trials)}
        print(f"{name}:\n  k per trial          {[t['k'] for t in trials]}")
        print(f"  RSS at trial start   {[round(t['start_rss_mb']) for t in trials]} MB")
        print(f"  peak RSS in trial    {[round(t['peak_rss_mb']) for t in trials]} MB")
        print(f"  cache held at most {results[name]['max_cache_mb']:.0f} MB; start RSS over the second half "
              f"{growth:+.0f} MB; peak of the last trial with k minus the first, per k: "
              f"{ {k: round(v) for k, v in peak_drift.items()} } MB", flush=True)
    write_json_atomic(RESULTS, {"benchmark": "search_memory", "model": "demo:minilm", "rows": ROWS, "trials": TRIALS,
                                "space": SPACE, "runs": results, "versions": library_versions(),
                                "target": "memory flat across trials"})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]))
    else:
        main()
