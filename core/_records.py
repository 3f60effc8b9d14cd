"""The run directory's records as types: `AdviceRecord`, `SearchRecord`, `ExportRecord`.

Each record is the one way its file is written and read. The stage that owns a record builds it,
writes it (atomically) and returns it; every other reader (a later stage, the dashboard) reads it
through `read`, which checks the keys of DESIGN.md's contract and keeps keys added later (by a
newer version) in `extra`, so that an older reader neither breaks nor drops them. Nested values
stay plain JSON (dicts and lists): their keys are listed in README's "What each output file holds".

This module imports neither torch nor any other heavy library: the dashboard uses it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ._errors import InputError
from ._rundir import read_json, write_json_atomic

# The run directory's files (DESIGN.md, "Run directory contract").
RUN_FILE = "run.json"
ADVICE_FILE = "advice.json"
SEARCH_FILE = "search.json"
STUDY_FILE = "study.db"
BEST_MODEL_DIR = "best_model"
BEST_TRIAL_FILE = "trial.json"
EXPORT_DIR = "export"
EXPORT_FILE = "export.json"

FAIL_REASON = "fail_reason"  # a trial's user attribute: why it failed by itself (not killed)
STEPS_PER_EPOCH = "pruner_steps_per_epoch"  # a study's user attribute: trial.report's steps per epoch
DEFAULT_TRIALS = 20  # the search's trials: what `search` and `run` do and what the advisor's cost assumes
DECISIONS = ("zero-shot", "head-only", "fine-tune", "change-model")


def steps_per_epoch(study) -> int:
    """The pruner's steps per epoch of a search's study: 3 when trials first report after a third
    of epoch 1 (`search --first-rung 1/3`), 1 for studies written before there was a first rung."""
    return study.user_attrs.get(STEPS_PER_EPOCH, 1)


def epoch_reports(intermediate_values: dict, per_epoch: int) -> dict[int, float]:
    """{epoch: accuracy} of a trial's reports at whole epochs (a first rung's report is none)."""
    return {step // per_epoch: v for step, v in intermediate_values.items() if step % per_epoch == 0}


@dataclass
class _Record:
    """Shared reading and writing; subclasses list the contract's keys as fields."""

    FILE: ClassVar[str] = ""
    extra: dict = field(default_factory=dict, kw_only=True)  # keys this version does not know

    @classmethod
    def from_json(cls, data: Any, *, source: str = "") -> "_Record":
        """The record from parsed JSON; InputError naming the file and the missing key when it is
        not one. Unknown keys are kept in `extra`."""
        where = source or cls.FILE
        if not isinstance(data, dict):
            raise InputError(f"{where} holds a JSON {type(data).__name__}, not the object this tool writes.")
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        required = [f.name for f in dataclasses.fields(cls) if f.name != "extra"
                    and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise InputError(f"{where} lacks the entr{'y' if len(missing) == 1 else 'ies'} "
                             f"{', '.join(repr(k) for k in missing)}: it was written by another version or edited.")
        record = cls(**{k: data[k] for k in names if k in data},
                     extra={k: v for k, v in data.items() if k not in names})
        record.check(where)
        return record

    def check(self, where: str) -> None:
        """Raise InputError when a value cannot be what this tool writes (subclasses add checks)."""

    def to_json(self) -> dict:
        """The record as written: its fields (contract keys first), then the extra keys."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**data, **{k: v for k, v in self.extra.items() if k not in data}}

    @classmethod
    def read(cls, path: str | Path) -> "_Record":
        """Read the record file at `path` (the file, or the run directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / cls.FILE
        return cls.from_json(read_json(path, expect=None), source=str(path))

    def write(self, path: str | Path) -> Path:
        """Write atomically to `path` (the file, or the folder it goes in)."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / self.FILE
        return write_json_atomic(path, self.to_json())


def _need(checks: list[tuple[bool, str]], where: str) -> None:
    problems = [f"{where}: {message}" for ok, message in checks if not ok]
    if problems:
        raise InputError(problems)


@dataclass
class AdviceRecord(_Record):
    """advice.json: the decision, its reasons and the numbers behind them (written by `advise`)."""

    FILE: ClassVar[str] = ADVICE_FILE
    decision: str
    reasons: list
    zero_shot: dict
    probe: dict
    shift: dict
    expected: dict
    cost: dict
    advisor_seconds: float
    chance_accuracy: float | None = None
    thresholds: dict = field(default_factory=dict)  # the rule's thresholds (advisor.decide)
    data_fingerprint: str | None = None
    skipped: list = field(default_factory=list)

    def check(self, where: str) -> None:
        _need([(self.decision in DECISIONS, f"decision {self.decision!r} is not one of {', '.join(DECISIONS)}"),
               (isinstance(self.reasons, list), "reasons must be a list of sentences"),
               *[(isinstance(getattr(self, k), dict), f"'{k}' must be an object")
                 for k in ("zero_shot", "probe", "shift", "expected", "cost", "thresholds")]], where)

    @property
    def suggested_layers(self) -> tuple[int, int] | None:
        """(lo, hi): the range of top blocks the advice suggests to fine-tune, if any."""
        pair = self.expected.get("suggested_unfrozen_layers")
        return (int(pair[0]), int(pair[1])) if pair else None


@dataclass
class SearchRecord(_Record):
    """search.json: the study's trials, the best one and where the best model is (written by `search`)."""

    FILE: ClassVar[str] = SEARCH_FILE
    study_name: str
    storage: str
    direction: str
    metric: str
    n_trials: dict
    best: dict | None
    trials: list
    finished: int = 0
    target_trials: int | None = None
    best_model: dict | None = None
    space: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        _need([(isinstance(self.n_trials, dict), "'n_trials' must be an object"),
               (isinstance(self.trials, list) and all(isinstance(t, dict) for t in self.trials),
                "'trials' must be a list of objects"),
               (self.best is None or isinstance(self.best, dict), "'best' must be an object or null")], where)


@dataclass
class ExportRecord(_Record):
    """export/export.json: each ONNX variant's checks, accuracy and latency (written by `export`)."""

    FILE: ClassVar[str] = EXPORT_FILE
    source: str
    opset: int
    variants: list
    torch_latency_ms: dict
    recommended: str
    torch_accuracy: float | None = None
    sequence_length: int | None = None
    speedup_over_torch: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        _need([(isinstance(self.variants, list) and all(isinstance(v, dict) and "file" in v for v in self.variants),
                "'variants' must be a list of objects with a 'file'"),
               (isinstance(self.torch_latency_ms, dict), "'torch_latency_ms' must be an object"),
               (isinstance(self.recommended, str), "'recommended' must be a file name")], where)


def sqlite_url(run_dir: str | Path) -> str:
    """The default study storage of a run directory: sqlite:///RUN/study.db (absolute)."""
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"
