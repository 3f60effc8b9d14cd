"""Benchmark: are the text suite's close calls right on rows the suite never scored?

A task's measured best choice in benchmarks/advisor_suite.py rests on its validation rows (65 to
450). Where the best choice beats the runner-up by less than the noise of those rows (a close
call, `advisor_suite.close_call`: 2 standard errors of a difference), the measured "best" is as
noisy as the advice it judges. For the suite's close calls whose source holds rows of every class
that the task does not, the same training rows are measured again by the same protocol
(`advisor_suite.measure`; the n-gram model too) on up to HELD_OUT_ROWS unseen rows of the same kind:
- topic, char-noise (the same articles with 30% of letters replaced, fresh noise): BBC articles
  outside the task's 600;
- few-shot: BBC articles outside its 40 training and 200 validation rows;
- sentence-topic: BBC sentences outside its 2,000;
- fortunes-imbalanced: quotations of its four fortunes topics outside its 260.
Every close call with such rows is measured, whether the advice agreed on the split or not, and
the held-out best choice is set beside the split's and the advice's. The suite's other close calls
have no rows to spare in some class: fortunes-topic (food: the suite takes all 183) and fortunes-de
(three of its five topics hold 120 or fewer quotations).
The suite's summary (benchmarks/advisor_suite.py `with_held_out`) judges these tasks' decisions by
the held-out best choice while their training rows are the same (the suite task's fingerprint).

    python benchmarks/advisor_holdout.py     # writes benchmarks/results/advisor_holdout.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from advisor_suite import (PROTOCOL, RESULTS, _write, bbc_articles, bbc_sentences, build_tasks,  # noqa: E402
                           close_call, fortune_entries, measure, measured_choice, ngram, noisy)

from finetune_advisor.core import DataConfig, library_versions, load_backbone, load_task, write_json_atomic  # noqa: E402
from finetune_advisor.core._data import noise_floor  # noqa: E402

OUT = RESULTS.with_name("advisor_holdout.json")
HELD_OUT_ROWS = 1000  # unseen rows a task is measured on (noise floor about 0.02 at 0.95, 0.04 at 0.7)
SPARE = ("topic", "char-noise", "few-shot", "sentence-topic", "fortunes-imbalanced")  # the tasks whose source has unseen rows of every class


def held_out(name: str, seen: set[str], rng) -> list[tuple[str, str]]:
    """Up to HELD_OUT_ROWS rows of task `name`'s kind whose source text the task does not hold."""
    if name == "fortunes-imbalanced":
        pool = [(text, topic) for topic in ("computers", "politics", "sports", "medicine")
                for text in fortune_entries(topic) if text not in seen]
    elif name == "sentence-topic":
        pool = [row for row in bbc_sentences(bbc_articles()) if row[0] not in seen]
    else:
        pool = [row for row in bbc_articles() if row[0] not in seen]
    pool = [pool[i] for i in rng.permutation(len(pool))[:HELD_OUT_ROWS]]
    return [(noisy(text, rng), y) for text, y in pool] if name == "char-noise" else pool


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", help="measure only these close calls; the others keep their last rows")
    args = parser.parse_args(argv)
    suite = {row["task"]: row for row in json.loads(RESULTS.read_text())["tasks"]}
    close = [name for name, row in suite.items() if close_call(row)]
    print(f"close calls: {', '.join(close)}; without unseen rows: {', '.join(set(close) - set(SPARE)) or 'none'}")
    backbone = load_backbone("demo:minilm")
    kept = json.loads(OUT.read_text())["tasks"] if OUT.is_file() and args.tasks else []
    results = [row for row in kept if row["task"] not in args.tasks] if args.tasks else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tasks = build_tasks(folder)
        topic = load_task(*tasks["topic"])
        for name in (name for name in close if name in SPARE and (not args.tasks or name in args.tasks)):
            task = load_task(*tasks[name])
            # char-noise's rows are topic's articles, noised: its unseen rows are the articles topic lacks
            source = topic if name == "char-noise" else task
            seen = set(source.train.texts) | set(source.valid.texts)
            rows = held_out(name, seen, np.random.default_rng(3))
            train = [(text, task.labels[y]) for text, y in zip(task.train.texts, task.train.labels)]
            unseen = load_task(_write(folder / f"{name}-train.csv", train),
                               DataConfig(valid=_write(folder / f"{name}-held-out.csv", rows)))
            t0 = time.perf_counter()
            measured = measure(backbone, unseen, say(name), PROTOCOL)
            results.append(judge(suite[name], task.fingerprint, len(unseen.valid), measured, ngram(backbone, unseen),
                                 time.perf_counter() - t0))
            write_json_atomic(OUT, {"benchmark": "advisor_holdout", "model": "demo:minilm", "protocol": PROTOCOL,
                                    "held_out": HELD_OUT_ROWS, "tasks": results, "versions": library_versions()})
    report(results, OUT)


def say(name: str):
    return lambda msg: print(f"  {name}: {msg}", file=sys.stderr, flush=True)


def judge(row: dict, fingerprint: str, rows: int, measured: dict, other: float, seconds: float) -> dict:
    """A close call's record: the suite's row (advice, split) beside what `measure` gave on `rows`
    unseen rows and the model without pretraining's accuracy there (`other`); `fingerprint` is the
    suite task's key in its cached ground truth (`advisor_suite.with_held_out` matches on it)."""
    head = measured["0"]["accuracy"]
    tuned = {int(k): m["accuracy"] for k, m in measured.items() if int(k) > 0}
    best_k = max(tuned, key=tuned.get)
    choice = measured_choice(row["zero_shot"], head, tuned[best_k], other, row["advice"]["chance_accuracy"])
    print(f"{row['task']:<20} advised {row['decision']:<12} split {row['measured_choice']:<12} held-out {choice:<12} "
          f"head {head:.3f} fine-tune {tuned[best_k]:.3f} (k={best_k}) other model {other:.3f} on {rows} rows",
          flush=True)
    return {"task": row["task"], "fingerprint": fingerprint, "held_out_rows": rows,
            "advised": row["decision"], "split_choice": row["measured_choice"], "held_out_choice": choice,
            "advice_agrees": {"split": row["decision"] == row["measured_choice"], "held_out": row["decision"] == choice},
            "split": {"valid_rows": row["valid_rows"], "head": row["measured_head"],
                      "fine_tune": row["measured_fine_tune"], "ngram": row["measured_ngram"]},
            "held_out": {"head": head, "fine_tune": tuned[best_k], "best_k": best_k, "ngram": other,
                         "noise_floor": noise_floor(rows, max(head, tuned[best_k], other)), "measured": measured},
            "seconds": seconds}


def report(results: list[dict], out: Path) -> None:
    agree = {key: sum(r["advice_agrees"][key] for r in results) for key in ("split", "held_out")}
    print(f"advice agrees with the split's best choice on {agree['split']} of {len(results)}, "
          f"with the held-out best choice on {agree['held_out']} of {len(results)}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
