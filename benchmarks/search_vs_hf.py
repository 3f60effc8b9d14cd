"""Benchmark: this project's search, and its advise-then-search path, against
`transformers.Trainer.hyperparameter_search(backend="optuna")`, side by side in one run.

demo:minilm on 800 examples of demo:bbc-news (80/10/10 split, max length 128), the same trial
budget (12), the same space (unfrozen_layers 0..6, learning rate 1e-5..3e-4 log, batch size
16/32, epochs 1..3, weight decay 0..0.1), the same 4 start-up configurations queued first on every
side (START), then TPE (seed 0, 4 start-up trials) on each. The same objective on both sides:
the best epoch's validation accuracy of a trial (the Trainer's compute_objective keeps the best
epoch so far, which is also what its pruner sees). Each side prunes as its users get it: this
project with its default (Hyperband, a trial's first report after a third of epoch 1, then
one per epoch), the Trainer with Optuna's default pruner
(MedianPruner). The training recipe is the same: mean pooling + linear head (the Trainer trains
this project's Classifier, since transformers' own heads cannot mean-pool), AdamW, linear decay,
no warm-up, one learning rate for head and blocks, gradient clipping at 1.

Three runs: (a) `search` alone on the full space; (b) `advise`, then `search` on what the advice
leaves open (the advisor's seconds counted; a head-only advice fits the head in closed form);
(hf) the Trainer. For each, the time until a trial first reaches within 0.005 of the best
accuracy that either side of the comparison found (elapsed from the run's start to that trial's
end), and the total. summary.speedup_to_target = {"search": hf / (a), "advise+search": hf / (b)}
(None when a side never reaches the target); when only the Trainer never reaches it,
summary.speedup_to_target_at_least bounds the ratio from below with the Trainer's whole run in
its place (it had not reached the target when its budget ended); summary.speedup_to_hf_best, the
same ratio of the times to the Trainer's own best accuracy.

Peak RSS per trial comes from a thread sampling /proc/self/status every 0.1 s, split by the
trials' start and end times. Needs `pip install accelerate` (the Trainer requires it).
Writes benchmarks/results/search_vs_hf.json and prints a table.

    python benchmarks/search_vs_hf.py [--rows 800] [--trials 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path


from finetune_advisor.core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_vs_hf.json"
SPACE = {"learning_rate": "1e-5:3e-4", "batch_size": "16,32", "epochs": "1:3", "weight_decay": "0:0.1",
         "unfrozen_layers": "0:6",
         # fixed, to match the Trainer's recipe
         "head_lr_multiplier": "1", "layer_lr_decay": "1", "warmup_ratio": "0", "max_length": "128", "patience": "0"}
START = ({"unfrozen_layers": 1, "learning_rate": 5e-5, "batch_size": 16, "epochs": 2, "weight_decay": 0.05},
         {"unfrozen_layers": 3, "learning_rate": 1e-4, "batch_size": 32, "epochs": 3, "weight_decay": 0.0},
         {"unfrozen_layers": 6, "learning_rate": 3e-5, "batch_size": 16, "epochs": 1, "weight_decay": 0.1},
         {"unfrozen_layers": 0, "learning_rate": 2e-4, "batch_size": 32, "epochs": 3, "weight_decay": 0.01})
TOLERANCE = 0.005


class RssSampler:
    """Resident set size of this process, sampled every `interval` seconds in a thread."""

    def __init__(self, interval: float = 0.1):
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), rss_bytes()))
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int | None:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return max(values) if values else None


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def per_trial(study, sampler: RssSampler, t0: float) -> list[dict]:
    """A study's finished trials in the order they ended, with seconds from the run's start to their
    end and their score: the best whole epoch's accuracy (a report inside epoch 1, where the
    pruner's steps are fractions of an epoch, is no epoch: a trial stopped there has no score), or
    the value of a trial without reports."""
    from finetune_advisor.core import epoch_reports, steps_per_epoch

    per_epoch = steps_per_epoch(study)
    rows = []
    for t in sorted((t for t in study.get_trials(deepcopy=False) if t.datetime_complete),
                    key=lambda t: t.datetime_complete):
        start, end = t.datetime_start.timestamp(), t.datetime_complete.timestamp()
        peak = sampler.peak_between(start, end)
        epochs = epoch_reports(t.intermediate_values, per_epoch)
        score = max(epochs.values(), default=None) if t.intermediate_values else t.value
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "score": score,
                     "params": t.params, "seconds": end - start, "ended_at_s": end - t0,
                     "epochs_run": len(epochs), "peak_rss_mb": None if peak is None else peak / 2**20})
    return rows


def trial_line(rows: list[dict]) -> str:
    """#number k=.. state score @end for each trial, for the printed table."""
    return ", ".join(f"#{t['number']} k={t['params'].get('unfrozen_layers', '-')} {t['state'][0]} "
                     f"{'-' if t['score'] is None else format(t['score'], '.3f')} @{t['ended_at_s']:.0f}s" for t in rows)


def time_to(rows: list[dict], target: float) -> float | None:
    """Seconds from the run's start until a trial first scored >= target; None when none did."""
    return next((r["ended_at_s"] for r in rows if r["score"] is not None and r["score"] >= target - 1e-12), None)


def run_ours(task, trials: int, folder: Path, sampler: RssSampler, *, advise_first: bool,
             first_rung: float = 1 / 3) -> dict:
    import optuna

    from finetune_advisor.advisor import AdvisorConfig, advise
    from finetune_advisor.search import SearchConfig, search

    t0 = time.time()
    backbone = load_backbone("demo:minilm")
    space = dict(SPACE)
    advice = None
    if advise_first:  # the advice decides unfrozen_layers: the user leaves it open
        space.pop("unfrozen_layers")
        advice = advise(backbone, task, AdvisorConfig(), progress=False, run_dir=folder)
    advise_seconds = time.time() - t0
    config = SearchConfig(trials=trials, space=space, seed=0, start_with=START, first_rung=first_rung)
    record = search(backbone, task, folder, config, progress=False, log=lambda s: None)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{folder / 'study.db'}")
    return {"seconds": time.time() - t0, "advise_seconds": advise_seconds if advise_first else None,
            "decision": advice.decision if advice else None, "first_rung": first_rung,
            "trials": per_trial(study, sampler, t0),
            "best_value": record.best["value"], "best_params": record.best["params"]}


def run_hf(task, trials: int, folder: Path, sampler: RssSampler) -> dict:
    import numpy as np
    import optuna
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
    from transformers.modeling_outputs import SequenceClassifierOutput

    from finetune_advisor.core import Classifier, freeze_top_k

    class Wrapped(torch.nn.Module):
        """The project's Classifier (mean pooling + linear head) with the loss the Trainer expects."""

        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            logits = self.classifier(input_ids, attention_mask, token_type_ids)
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    def model_init(trial=None):
        # transformers 5 builds the model before it applies hp_space: suggest everything here, in
        # hp_space's order (a repeated suggest returns the same value)
        k = hp_space(trial) and trial.params["unfrozen_layers"] if trial is not None else 2
        backbone = load_backbone("demo:minilm")  # read again for every trial, as model_init does
        torch.manual_seed(0)
        classifier = Classifier(backbone, task.num_labels, dropout=0.1)
        freeze_top_k(classifier.encoder, backbone.arch, k)
        return Wrapped(classifier)

    def hp_space(trial):
        params = {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-4, log=True),
                  "per_device_train_batch_size": trial.suggest_categorical("batch_size", [16, 32]),
                  "num_train_epochs": trial.suggest_int("epochs", 1, 3),
                  "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1)}
        trial.suggest_int("unfrozen_layers", 0, 6)  # read by model_init
        return params

    class BestEpoch(TrainerCallback):
        """The objective is the trial's best epoch so far (as ours); reset when a trial starts."""

        best = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            BestEpoch.best = 0.0

    def best_epoch(metrics):
        BestEpoch.best = max(BestEpoch.best, metrics["eval_accuracy"])
        return BestEpoch.best

    t0 = time.time()
    tokenizer = load_backbone("demo:minilm").tokenizer

    def dataset(split):
        enc = tokenizer(split.texts, truncation=True, max_length=128)
        return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "token_type_ids": enc["token_type_ids"][i], "labels": int(split.labels[i])} for i in range(len(split))]

    args = TrainingArguments(output_dir=str(folder / "hf"), eval_strategy="epoch", save_strategy="no",
                             report_to="none", disable_tqdm=True, logging_strategy="no", use_cpu=True, seed=0,
                             warmup_steps=0, max_grad_norm=1.0, per_device_eval_batch_size=64)
    trainer = Trainer(model_init=model_init, args=args, train_dataset=dataset(task.train),
                      eval_dataset=dataset(task.valid), data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())},
                      callbacks=[BestEpoch()])
    storage = f"sqlite:///{folder / 'hf.db'}"
    queued = optuna.create_study(storage=storage, study_name="hf", direction="maximize")
    for params in START:
        queued.enqueue_trial(params)
    best = trainer.hyperparameter_search(
        hp_space=hp_space, backend="optuna", n_trials=trials, direction="maximize",
        compute_objective=best_epoch, storage=storage, study_name="hf", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=max(3, min(10, trials // 3))),
        pruner=optuna.pruners.MedianPruner())
    study = optuna.load_study(study_name="hf", storage=storage)
    return {"seconds": time.time() - t0, "trials": per_trial(study, sampler, t0),
            "best_value": best.objective, "best_params": best.hyperparameters}


def _seconds(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task("demo:bbc-news", DataConfig(max_rows=args.rows, seed=0))
    results = {}
    runs = (("search", lambda *a: run_ours(*a, advise_first=False)),
            ("advise+search", lambda *a: run_ours(*a, advise_first=True)), ("hf_trainer", run_hf))
    with tempfile.TemporaryDirectory() as tmp, RssSampler() as sampler:
        for name, run in runs:
            folder = Path(tmp) / name.replace("+", "_")
            folder.mkdir()
            os.environ["FINETUNE_ADVISOR_CACHE"] = str(folder / "cache")  # each run starts cold, from its own cache
            results[name] = run(task, args.trials, folder, sampler)
            r = results[name]
            print(f"{name}: {r['seconds']:.0f} s, best {r['best_value']:.4f}", flush=True)
    hf = results["hf_trainer"]
    comparisons = {}
    for name in ("search", "advise+search"):
        ours = results[name]
        best = max(t["score"] for t in ours["trials"] + hf["trials"] if t["score"] is not None)
        target = best - TOLERANCE
        t_ours, t_hf = time_to(ours["trials"], target), time_to(hf["trials"], target)
        comparisons[name] = {
            "target": target, "time_to_target_s": {"ours": t_ours, "hf": t_hf},
            "total_s": {"ours": ours["seconds"], "hf": hf["seconds"]},
            # a side that never reached the target: None (the other side's ratio is then unbounded)
            "speedup_to_target": t_hf / t_ours if t_ours and t_hf else None,
            # the Trainer never reached it: its whole run is a lower bound of its time to the target
            "speedup_to_target_at_least": hf["seconds"] / t_ours if t_ours and not t_hf else None,
            "reached": {"ours": t_ours is not None, "hf": t_hf is not None}}
        # when the Trainer never reaches the target: how much sooner ours reaches the Trainer's own best
        hf_best = max(t["score"] for t in hf["trials"] if t["score"] is not None)
        t_ours_hf, t_hf_best = time_to(ours["trials"], hf_best), time_to(hf["trials"], hf_best)
        comparisons[name]["speedup_to_hf_best"] = t_hf_best / t_ours_hf if t_ours_hf else None
    summary = {
        "speedup_to_target": {n: c["speedup_to_target"] for n, c in comparisons.items()},
        "speedup_to_target_at_least": {n: c["speedup_to_target_at_least"] for n, c in comparisons.items()},
        "speedup_to_hf_best": {n: c["speedup_to_hf_best"] for n, c in comparisons.items()},
        "speedup_total": {n: hf["seconds"] / results[n]["seconds"] for n in comparisons},
        "best_accuracy": {"ours": results["search"]["best_value"],
                          "ours_advise+search": results["advise+search"]["best_value"], "hf": hf["best_value"]},
        "advice": results["advise+search"]["decision"],
        "advise_seconds": results["advise+search"]["advise_seconds"],
        "peak_rss_mb_max": {n: max(t["peak_rss_mb"] or 0 for t in r["trials"]) for n, r in results.items()},
        "targets": "speedup_to_target: advise+search >= 4, search >= 1.5; our best accuracy >= HF's",
    }
    record = {"benchmark": "search_vs_hf", "rows": args.rows, "train_rows": len(task.train),
              "valid_rows": len(task.valid), "trials": args.trials, "space": SPACE, "start_with": START,
              "tolerance": TOLERANCE, "summary": summary, "comparisons": comparisons, "runs": results,
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count()},
              "versions": library_versions()}
    write_json_atomic(args.out, record)
    for name, c in comparisons.items():
        t = c["time_to_target_s"]
        ratio = f"{c['speedup_to_target']:.2f}x" if c["speedup_to_target"] is not None else (
            f">= {c['speedup_to_target_at_least']:.2f}x" if c["speedup_to_target_at_least"] else "n/a")
        print(f"{name:>14} vs Trainer: to {c['target']:.4f}: ours {_seconds(t['ours'])}, Trainer {_seconds(t['hf'])} "
              f"({ratio}); totals {c['total_s']['ours']:.0f} s vs {c['total_s']['hf']:.0f} s")
    for name, r in results.items():
        print(f"{name}: {trial_line(r['trials'])}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
