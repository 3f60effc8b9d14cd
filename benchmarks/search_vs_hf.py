"""Benchmark: this project's search against `transformers.Trainer.hyperparameter_search(backend="optuna")`,
side by side in one run.

demo:minilm on 800 examples of demo:bbc-news (80/10/10 split, max length 128), the same trial
budget (12), the same space (unfrozen_layers 0..6, learning rate 1e-5..3e-4 log, batch size
16/32, epochs 1..3, weight decay 0..0.1), the same sampler (TPE, seed 0, 4 random start-up
trials, parameters suggested in the same order, so the start-up trials are the same
configurations) and no pruning on either side, so the difference is the engine: here the frozen
blocks are computed once per k and shared by every trial and epoch; the Trainer re-reads the
model for each trial (model_init) and runs every frozen block forward at every step.

The training recipe is the same on both sides: mean pooling + linear head (the Trainer trains
this project's Classifier, since transformers' own heads cannot mean-pool), AdamW, linear decay,
no warm-up, one learning rate for head and blocks, gradient clipping at 1, all epochs run.
Both report the best validation accuracy over trials; the Trainer's objective is the accuracy
after the last epoch, so ours is reported that way too ("final-epoch" column).

Peak RSS per trial comes from a thread sampling /proc/self/status every 0.1 s, split by the
trials' start and end times. Needs `pip install accelerate` (the Trainer requires it).
Writes benchmarks/results/search_vs_hf.json and prints a table.

    python benchmarks/search_vs_hf.py [--rows 800] [--trials 12]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_vs_hf.json"
SPACE = {"learning_rate": "1e-5:3e-4", "batch_size": "16,32", "epochs": "1:3", "weight_decay": "0:0.1",
         "unfrozen_layers": "0:6",
         # fixed, to match the Trainer's recipe
         "head_lr_multiplier": "1", "layer_lr_decay": "1", "warmup_ratio": "0", "max_length": "128", "patience": "0"}


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


def per_trial(trials, sampler: RssSampler) -> list[dict]:
    rows = []
    for t in trials:
        start, end = t.datetime_start.timestamp(), t.datetime_complete.timestamp()
        peak = sampler.peak_between(start, end)
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "seconds": end - start, "peak_rss_mb": None if peak is None else peak / 2**20,
                     "final_epoch_accuracy": (t.intermediate_values[max(t.intermediate_values)]
                                              if t.intermediate_values else t.value)})
    return rows


def run_ours(task, trials: int, folder: Path, sampler: RssSampler) -> dict:
    import optuna

    from search import SearchConfig, search

    t0 = time.perf_counter()
    backbone = load_backbone("demo:minilm")
    record = search(backbone, task, folder, SearchConfig(trials=trials, space=SPACE, pruner="none", seed=0),
                    progress=False, log=lambda s: None)
    seconds = time.perf_counter() - t0
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{folder / 'study.db'}")
    return {"seconds": seconds, "trials": per_trial(study.get_trials(deepcopy=False), sampler),
            "best_value": record["best"]["value"], "best_params": record["best"]["params"]}


def run_hf(task, trials: int, folder: Path, sampler: RssSampler) -> dict:
    import numpy as np
    import optuna
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.modeling_outputs import SequenceClassifierOutput

    from core import Classifier, freeze_top_k

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

    t0 = time.perf_counter()
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
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())})
    storage = f"sqlite:///{folder / 'hf.db'}"
    best = trainer.hyperparameter_search(
        hp_space=hp_space, backend="optuna", n_trials=trials, direction="maximize",
        compute_objective=lambda metrics: metrics["eval_accuracy"], storage=storage, study_name="hf",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=max(3, min(10, trials // 3))),
        pruner=optuna.pruners.NopPruner())
    seconds = time.perf_counter() - t0
    study = optuna.load_study(study_name="hf", storage=storage)
    return {"seconds": seconds, "trials": per_trial(study.get_trials(deepcopy=False), sampler),
            "best_value": best.objective, "best_params": best.hyperparameters}


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
    with tempfile.TemporaryDirectory() as tmp, RssSampler() as sampler:
        for name, run in (("finetune_advisor", run_ours), ("hf_trainer", run_hf)):
            folder = Path(tmp) / name
            folder.mkdir()
            results[name] = run(task, args.trials, folder, sampler)
            r = results[name]
            print(f"{name}: {r['seconds']:.0f} s, best {r['best_value']:.4f}", flush=True)
    ours, hf = results["finetune_advisor"], results["hf_trainer"]
    final = max(t["final_epoch_accuracy"] for t in ours["trials"])
    summary = {
        "speedup": hf["seconds"] / ours["seconds"],
        "best_accuracy": {"finetune_advisor": ours["best_value"], "finetune_advisor_final_epoch": final,
                          "hf_trainer": hf["best_value"]},
        "accuracy_difference_points": 100 * (final - hf["best_value"]),
        "peak_rss_mb_max": {n: max(t["peak_rss_mb"] or 0 for t in r["trials"]) for n, r in results.items()},
        "target": ">= 4x faster, accuracy not lower by more than 0.5 point",
    }
    record = {"benchmark": "search_vs_hf", "rows": args.rows, "train_rows": len(task.train),
              "valid_rows": len(task.valid), "trials": args.trials, "space": SPACE, "summary": summary,
              "runs": results, "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                            "cpus": __import__("os").cpu_count()},
              "versions": library_versions()}
    write_json_atomic(args.out, record)
    print(f"\nspeed-up {summary['speedup']:.2f}x; best accuracy ours {ours['best_value']:.4f} "
          f"(final epoch {final:.4f}) vs Trainer {hf['best_value']:.4f}")
    print(f"{'trial':>5}  {'k':>2}  {'ours s':>7}  {'ours MB':>8}  {'HF s':>7}  {'HF MB':>8}")
    for a, b in zip(ours["trials"], hf["trials"]):
        print(f"{a['number']:>5}  {a['params'].get('unfrozen_layers', ''):>2}  {a['seconds']:7.1f}  "
              f"{a['peak_rss_mb'] or 0:8.0f}  {b['seconds']:7.1f}  {b['peak_rss_mb'] or 0:8.0f}   "
              f"(HF k={b['params'].get('unfrozen_layers')})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
