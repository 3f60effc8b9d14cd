"""Reading run directories for the dashboard: the JSON records, the Optuna study, what is missing.

Nothing here imports torch or streamlit; the study is opened read-only (no table creation, no
migration), so a search that is still running is read, never locked or changed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import (ADVICE_FILE, EXPORT_DIR, EXPORT_FILE, FAIL_REASON, SEARCH_FILE, STUDY_FILE, AdviceRecord,
                  ExportRecord, InputError, SearchRecord, epoch_reports, sqlite_url, steps_per_epoch)

RUNS_ENV = "FINETUNE_ADVISOR_RUNS"  # run directories for the app, os.pathsep-separated

# What each stage writes, its record type, and the command that makes it.
STAGES = {
    "advice": (ADVICE_FILE, AdviceRecord, "finetune-advisor advise --model M --data D --out {run}"),
    "search": (SEARCH_FILE, SearchRecord, "finetune-advisor search --model M --data D --out {run}"),
    "export": (f"{EXPORT_DIR}/{EXPORT_FILE}", ExportRecord, "finetune-advisor export {run}"),
}


@dataclass
class RunView:
    """One run directory as the dashboard sees it."""

    path: Path
    records: dict[str, Any] = field(default_factory=dict)  # stage -> its record type, for the stages that wrote one
    problems: list[str] = field(default_factory=list)  # about the whole run, said plainly
    broken: dict[str, str] = field(default_factory=dict)  # stage -> why its record cannot be used

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def advice(self) -> AdviceRecord | None:
        return self.records.get("advice")

    @property
    def search(self) -> SearchRecord | None:
        return self.records.get("search")

    @property
    def export(self) -> ExportRecord | None:
        return self.records.get("export")

    def missing(self, stage: str) -> str:
        """What is missing for `stage`, and the command that makes it."""
        return f"No {STAGES[stage][0]} in {self.path} yet. Make it with: {self.command(stage)}"

    def command(self, stage: str) -> str:
        """The command that writes `stage`'s record."""
        return STAGES[stage][2].format(run=self.path)

    def file(self, stage: str) -> Path:
        return self.path / STAGES[stage][0]

    def storage_url(self) -> str | None:
        """The study's storage: RUN/study.db, else search.json's URL when it carries no hidden password."""
        if (self.path / STUDY_FILE).exists():
            return sqlite_url(self.path)
        url = self.search.storage if self.search else None
        return url if url and "***" not in url else None

    def study(self):
        """The Optuna study, opened read-only; None when there is none (yet)."""
        url = self.storage_url()
        if url is None:
            return None
        import optuna

        storage = optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
        names = optuna.get_all_study_names(storage)
        name = self.search.study_name if self.search else ("search" if "search" in names else (names or [None])[0])
        if name not in names:
            return None
        return optuna.load_study(study_name=name, storage=storage)


def load_run(path: str | Path) -> RunView:
    """Read what a run directory holds; a missing folder or file is not an error, a broken one is said."""
    view = RunView(Path(path))
    if not view.path.is_dir():
        view.problems.append(f"{view.path} does not exist (yet). Start with: "
                             f"finetune-advisor advise --model M --data D --out {view.path}")
        return view
    for stage, (file, record_type, _) in STAGES.items():
        target = view.path / file
        if not target.exists():
            continue
        try:
            record = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            view.broken[stage] = f"{target} cannot be read ({e}). Make it again with: {view.command(stage)}"
            continue
        try:  # the record's own checks: the contract's keys, the types the pages draw from
            view.records[stage] = record_type.from_json(record, source=str(target))
        except InputError as e:
            view.broken[stage] = f"{e} Make it again with: {view.command(stage)}"
    return view


def run_paths(argv: list[str]) -> list[Path]:
    """Run directories from the command line, else from $FINETUNE_ADVISOR_RUNS."""
    given = [a for a in argv if a and not a.startswith("-")]
    if not given and os.environ.get(RUNS_ENV):
        given = [p for p in os.environ[RUNS_ENV].split(os.pathsep) if p]
    return [Path(p) for p in given]


def fixed_params(study) -> dict:
    """The parameters the study's space fixes to one value (not in any trial's params), e.g.
    unfrozen_layers=0 for a head-only search; from the space stored with the study ("V", where a
    range is "LO:HI" and a choice "A,B"). Read here, not by search.parse_param, whose value
    checks load torch."""
    fixed = {}
    for name, text in (study.user_attrs.get("space") or {}).items():
        text = str(text).strip()
        if text and ":" not in text and "," not in text:
            fixed[name] = _number(text)
    return fixed


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def trial_rows(study) -> list[dict]:
    """One row per trial for the table: number, state, accuracy, seconds, parameters (fixed ones
    included), how the head was fitted, fail reason."""
    fixed = fixed_params(study)
    per_epoch = steps_per_epoch(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"trial": t.number, "state": t.state.name, "accuracy": t.value,
               "epochs run": len(epoch_reports(t.intermediate_values, per_epoch)), "seconds": t.user_attrs.get("seconds")}
        row.update({**fixed, **t.params})
        if "method" in t.user_attrs:
            row["method"] = t.user_attrs["method"]
        if FAIL_REASON in t.user_attrs:
            row["fail reason"] = t.user_attrs[FAIL_REASON]
        rows.append(row)
    return rows


def epoch_axis(fig, per_epoch: int):
    """optuna's intermediate-values figure with its x axis in epochs rather than pruner steps."""
    for trace in fig.data:
        if trace.x is not None:
            trace.x = [x / per_epoch for x in trace.x]
    fig.update_xaxes(title="epoch")
    return fig


def layer_points(trials, fixed_k=None) -> dict[str, list[tuple]]:
    """{state: [(k, accuracy, trial number)]} for complete and pruned trials (a pruned one at its
    last epoch). A search whose space fixes k (head-only: 0) has no k in its trials' params:
    `fixed_k` places them."""
    points = {}
    for t in trials:
        k = t.params.get("unfrozen_layers", fixed_k)
        if t.state.name not in ("COMPLETE", "PRUNED") or k is None:
            continue
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        points.setdefault(t.state.name, []).append((k, value, t.number))
    return points


def front_rows(complete, batch: int = 1) -> tuple[list[dict], list[dict]]:
    """(the front, every timed point) of finished trials' accuracy against latency at `batch`
    (search._latency.front over the trials' `latency_ms` user attributes)."""
    from finetune_advisor.search._latency import LATENCY_ATTR, front, latency_row, points

    rows = [latency_row(t, t.params) for t in complete if t.user_attrs.get(LATENCY_ATTR)]
    return front(rows, batch), points(rows, batch)


def table(rows: list[dict]):
    """Rows as a pandas table whose empty cells read "–", not "None"."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    return frame.astype(object).where(frame.notna(), "–")


@dataclass
class Errors:
    """Where the exported model is wrong on the run's validation split."""

    labels: list[str]
    per_class: list[dict]  # label, precision, recall, f1, support
    confusion: list[list[int]]  # rows: true label, columns: predicted label (labels' order)
    mistakes: list[dict]  # the most confident wrong predictions first
    accuracy: float
    variant: str


def validation_errors(view: RunView, worst: int = 20) -> Errors:
    """Per-class precision and recall, the confusion matrix and the most confident mistakes of the
    recommended exported model on the validation split of the data the run used (RUN/run.json).
    Runs on onnxruntime (export.Predictor), so the dashboard stays free of torch.

    Raises:
        InputError: no usable export, or the run's data cannot be read again (the message says why).
    """
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from ..core import RunDir
    from ..export import Predictor, PredictorError

    task = RunDir(view.path).load_task()
    try:
        predictor = Predictor(view.path / EXPORT_DIR)  # a missing export is said by the Predictor
    except PredictorError as e:
        raise InputError(str(e)) from None
    valid = task.valid
    probs = predictor.predict_proba(valid.texts, valid.pairs)
    labels = list(predictor.labels)
    gold = np.array([labels.index(task.labels[i]) for i in valid.labels])
    pred = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, labels=range(len(labels)),
                                                                     zero_division=0)
    per_class = [{"label": lab, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                 for lab, p, r, f, n in zip(labels, precision, recall, f1, support)]
    wrong = np.flatnonzero(pred != gold)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:worst]
    if valid.modality == "image":  # a thumbnail to look at, and the file to open
        from ..core._images import thumbnail_uri

        shown = [{"image": thumbnail_uri(valid.texts[i]), "file": valid.texts[i]} for i in wrong]
    else:
        shown = [{"text": valid.texts[i][:400] + ("…" if len(valid.texts[i]) > 400 else "")} for i in wrong]
    mistakes = [{**what, "true": labels[gold[i]], "predicted": labels[pred[i]],
                 "p(predicted)": float(probs[i, pred[i]]), "p(true)": float(probs[i, gold[i]])}
                for what, i in zip(shown, wrong)]
    return Errors(labels=labels, per_class=per_class,
                  confusion=confusion_matrix(gold, pred, labels=range(len(labels))).tolist(),
                  mistakes=mistakes, accuracy=float((pred == gold).mean()), variant=predictor.variant)


def compare_rows(runs: list[RunView]) -> list[dict]:
    """One row per run with the numbers worth comparing."""
    rows = []
    for r in runs:
        a, s, e = r.advice, r.search, r.export
        best = s.best if s else None
        rows.append({
            "run": str(r.path), "decision": a.decision if a else None,
            "zero-shot": a.zero_shot.accuracy if a else None, "probe": a.probe.accuracy if a else None,
            "expected fine-tuned": a.expected.fine_tune_accuracy if a else None,
            "search best": best.value if best else None,
            "best k": best.params.get("unfrozen_layers") if best else None,
            "trials": s.n_trials.complete + s.n_trials.pruned + s.n_trials.fail + s.n_trials.running
            + s.n_trials.waiting if s else None,
            "export": e.recommended if e else None, "speed-up": e.speedup_over_torch.get(e.recommended) if e else None,
        })
    return rows
