"""Benchmark: are the text suite's close calls right on rows the suite never scored?

A task's measured best choice in benchmarks/advisor_suite.py rests on its validation rows (120 to
450). Where the best choice beats the runner-up by less than the noise of those rows (2 standard
errors of a difference, `core._data.noise_floor`), the measured "best" is as noisy as the advice
it judges. For the suite's close calls whose source holds rows the task does not, the same
training rows are measured again by the same protocol (`advisor_suite.measure`; the n-gram model
too) on up to HELD_OUT unseen rows of the same kind:
- topic, char-noise (the same articles with 30% of letters replaced, fresh noise): BBC articles
  outside the task's 600;
- few-shot: BBC articles outside its 40 training and 200 validation rows;
- sentence-topic: BBC sentences outside its 2,000.
Every close call with such rows is measured, whether the advice agreed on the split or not, and
the held-out best choice is set beside the split's and the advice's. fortunes-de, the suite's other
close call, has no rows left over (the suite takes every quotation of its topics up to 120).
The suite's summary (benchmarks/advisor_suite.py `with_held_out`) judges these tasks' decisions by
the held-out best choice while their training rows are the same (the suite task's fingerprint).

    python benchmarks/advisor_holdout.py     # writes benchmarks/results/advisor_holdout.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from advisor_suite import (PROTOCOL, RESULTS, _write, bbc_articles, bbc_sentences, build_tasks,  # noqa: E402
                           measure, measured_choice, ngram, noisy)

from finetune_advisor.core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402
from finetune_advisor.core._data import noise_floor  # noqa: E402

OUT = RESULTS.with_name("advisor_holdout.json")
HELD_OUT = 1000  # unseen rows a task is measured on (noise floor about 0.02 at 0.95, 0.04 at 0.7)
TASKS = ("topic", "char-noise", "few-shot", "sentence-topic")


def held_out(name: str, seen: set[str], rng) -> list[tuple[str, str]]:
    """Up to HELD_OUT rows of task `name`'s kind whose source text the task does not hold."""
    articles = bbc_articles()
    if name == "sentence-topic":
        pool = [row for row in bbc_sentences(articles) if row[0] not in seen]
    else:
        pool = [row for row in articles if row[0] not in seen]
    pool = [pool[i] for i in rng.permutation(len(pool))[:HELD_OUT]]
    return [(noisy(text, rng), y) for text, y in pool] if name == "char-noise" else pool


def main() -> None:
    suite = {row["task"]: row for row in json.loads(RESULTS.read_text())["tasks"]}
    backbone = load_backbone("demo:minilm")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tasks = build_tasks(folder)
        topic = load_task(*tasks["topic"])
        for name in TASKS:
            task = load_task(*tasks[name])
            # char-noise's rows are topic's articles, noised: its unseen rows are the articles topic lacks
            source = topic if name == "char-noise" else task
            seen = set(source.train.texts) | set(source.valid.texts)
            rows = held_out(name, seen, np.random.default_rng(3))
            train = [(text, task.labels[y]) for text, y in zip(task.train.texts, task.train.labels)]
            unseen = load_task(_write(folder / f"{name}-train.csv", train),
                               DataConfig(valid=_write(folder / f"{name}-held-out.csv", rows)))
            t0 = time.perf_counter()
            measured = measure(backbone, unseen, lambda msg, name=name: print(f"  {name}: {msg}", file=sys.stderr,
                                                                            flush=True), PROTOCOL)
            other = ngram(backbone, unseen)
            row = suite[name]
            head = measured["0"]["accuracy"]
            tuned = {int(k): m["accuracy"] for k, m in measured.items() if int(k) > 0}
            best_k = max(tuned, key=tuned.get)
            choice = measured_choice(row["zero_shot"], head, tuned[best_k], other, row["advice"]["chance_accuracy"])
            best = max(head, tuned[best_k], other)
            results.append({
                "task": name, "fingerprint": task.fingerprint,  # the suite's task: its cached ground truth's key
                "train_rows": len(unseen.train), "held_out_rows": len(unseen.valid),
                "advised": row["decision"], "split_choice": row["measured_choice"], "held_out_choice": choice,
                "advice_agrees": {"split": row["decision"] == row["measured_choice"], "held_out": row["decision"] == choice},
                "split": {"valid_rows": row["valid_rows"], "head": row["measured_head"],
                          "fine_tune": row["measured_fine_tune"], "ngram": row["measured_ngram"],
                          "noise_floor": noise_floor(row["valid_rows"], row["measured_fine_tune"])},
                "held_out": {"head": head, "fine_tune": tuned[best_k], "best_k": best_k, "ngram": other,
                             "noise_floor": noise_floor(len(unseen.valid), best), "measured": measured},
                "seconds": time.perf_counter() - t0})
            print(f"{name:<16} advised {row['decision']:<12} split {row['measured_choice']:<12} held-out {choice:<12} "
                  f"head {head:.3f} fine-tune {tuned[best_k]:.3f} (k={best_k}) n-gram {other:.3f} "
                  f"on {len(unseen.valid)} rows", flush=True)
            write_json_atomic(OUT, {"benchmark": "advisor_holdout", "model": "demo:minilm", "protocol": PROTOCOL,
                                    "held_out": HELD_OUT, "tasks": results, "versions": library_versions()})
    agree = {key: sum(r["advice_agrees"][key] for r in results) for key in ("split", "held_out")}
    print(f"advice agrees with the split's best choice on {agree['split']} of {len(results)}, "
          f"with the held-out best choice on {agree['held_out']} of {len(results)}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
