"""The run directory's records as types, typed down to their nested parts.

`RunRecord` (run.json), `AdviceRecord` (advice.json), `SearchRecord` (search.json),
`TrialRecord` (best_model/trial.json) and `ExportRecord` (export/export.json, in core._export_record). Each record is the
one way its file is written and read: the stage that owns it builds it, writes it atomically and
returns it; every other reader (a later stage, the CLI's summaries, the Predictor, the
dashboard) reads it through `read` and then reads attributes: `AdviceRecord.read(run).probe.accuracy`.
Keys a newer version wrote are kept in each part's `extra`; keys an earlier version wrote under
another name (`probe.ngram_accuracy`, now `probe.baseline_accuracy`) are read into today's field.

This module imports neither torch nor any other heavy library: the dashboard uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ._errors import InputError
from ._files import read_json, write_json_atomic
from ._typed import Part

# The run directory's files.
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
class _Record(Part):
    """A whole file: read from and written to a path."""

    FILE: ClassVar[str] = ""

    @classmethod
    def from_json(cls, data: Any, *, source: str = "", where: str = "") -> "_Record":
        """The record from parsed JSON; InputError naming the file and the key when it is not one."""
        place = source or where or cls.FILE
        if not isinstance(data, dict):
            raise InputError(f"{place} holds a JSON {type(data).__name__}, not the object this tool writes.")
        record = super().from_json(data, where=f"{place}:")
        record.check(place)
        return record

    def check(self, where: str) -> None:
        """Raise InputError when a value cannot be what this tool writes (subclasses add checks)."""

    @classmethod
    def read(cls, path: str | Path) -> "_Record":
        """Read the record file at `path` (the file, or the folder holding it)."""
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


# --------------------------------------------------------------------------- run.json


@dataclass
class RunData(Part):
    """The data a run was made on: where it is (absolute), how it was read, its fingerprint."""

    source: str
    config: dict
    fingerprint: str | None = None


@dataclass
class RunCommand(Part):
    """One command run in the directory."""

    command: str
    argv: list = field(default_factory=list)
    configs: dict = field(default_factory=dict)  # each stage's config as written (dataclass -> JSON)
    data_fingerprint: str | None = None
    started: str | None = None  # ISO time, UTC
    model_changes: list[str] = field(default_factory=list)  # what loading changed in the model (Backbone.changes)


@dataclass
class RunRecord(_Record):
    """run.json: what was asked in this directory, on what data, with which libraries."""

    FILE: ClassVar[str] = RUN_FILE
    commands: list[RunCommand] = field(default_factory=list)
    data_fingerprint: str | None = None
    data: RunData | None = None
    versions: dict[str, str | None] = field(default_factory=dict)

    def data_used(self) -> RunData | None:
        """The data this run was made on; for run.json of earlier versions, from its commands' configs."""
        if self.data is not None:
            return self.data
        for command in reversed(self.commands):
            source = command.configs.get("data_source")
            if isinstance(source, str) and isinstance(command.configs.get("data"), dict):
                return RunData(source=source, config=command.configs["data"], fingerprint=self.data_fingerprint)
        return None


# --------------------------------------------------------------------------- advice.json


@dataclass
class ZeroShot(Part):
    """The base model with no training: its own head, NLI, label embeddings or image-text prompts."""

    method: str | None = None  # None: no zero-shot applies to this model and data
    accuracy: float | None = None
    descriptions: str | None = None  # "file", "template" or None
    accuracy_se: float | None = None  # binomial standard error on the validation rows


@dataclass
class Probe(Part):
    """Frozen features: a linear probe (the head-only model), kNN, transferability, and a baseline
    without pretraining (text: character n-grams + a linear SVM)."""

    RENAMED: ClassVar[dict[str, str]] = {"ngram_accuracy": "baseline_accuracy", "ngram_method": "baseline_method",
                                         "ngram_p_value": "baseline_p_value", "ngram_C": "baseline_C"}
    accuracy: float
    knn_accuracy: float | None = None
    logme: float | None = None
    h_score: float | None = None
    features: str | None = None
    C: float | None = None
    accuracy_last_layer: float | None = None
    accuracy_layer_average: float | None = None
    learning_curve: dict[str, float] = field(default_factory=dict)  # {fraction of training rows: accuracy}
    train_rows: int | None = None
    valid_rows: int | None = None
    baseline_accuracy: float | None = None
    baseline_method: str | None = None
    baseline_p_value: float | None = None  # McNemar: the baseline beats the probe on the same rows
    baseline_C: float | None = None
    accuracy_se: float | None = None  # binomial standard errors on the validation rows (all on the same rows)
    knn_accuracy_se: float | None = None
    baseline_accuracy_se: float | None = None
    scored_rows: int | None = None  # rows the accuracies above were measured on (all rows when cross-validated)
    cv_folds: int | None = None  # a small validation sample: accuracies cross-validated over every sampled row


@dataclass
class ShiftSample(Part):
    """Distance between the training features and another sample (unlabeled production data)."""

    rows: int
    mmd2: float
    mmd_p_value: float
    pad: float
    unk_rate: float | None = None
    fertility: float | None = None


@dataclass
class ImageStats(Part):
    """Pixel statistics of a sample of images."""

    images: int
    width: list[int]  # [min, median, max]
    height: list[int]
    modes: dict[str, int]
    grayscale_share: float
    mean: list[float]
    std: list[float]


@dataclass
class Shift(Part):
    """How far the data is from the model's world."""

    unk_rate: float | None
    fertility: float | None
    mmd2: float | None
    mmd_p_value: float | None
    pad: float | None
    effective_rank: float | None = None
    hidden_size: int | None = None
    reference: str | None = None
    reference_rows: int | None = None
    unlabeled: ShiftSample | None = None
    images: ImageStats | None = None
    model_input: list[int] | None = None  # images: the model's input size [h, w]
    size_ratio: float | None = None
    grayscale_share: float | None = None
    normalisation_gap: float | None = None
    contrast_ratio: float | None = None


@dataclass
class Expected(Part):
    """The forecast of fine-tuned accuracy from the pilot (empty when no pilot could run)."""

    fine_tune_accuracy: float | None = None
    uncertainty: float | None = None  # half-width of the interval
    interval: str | None = None
    gain_over_probe: float | None = None
    raw_fine_tune_accuracy: float | None = None
    pilot_accuracy: dict[str, float] = field(default_factory=dict)  # {k: accuracy}
    pilot_probe_accuracy: float | None = None
    pilot_rows: int | None = None
    pilot_method: str | None = None
    error_exponent: float | None = None
    calibration: dict = field(default_factory=dict)
    suggested_unfrozen_layers: list[int] | None = None


@dataclass
class SearchCost(Part):
    """The search whose cost is estimated."""

    trials: int
    epochs: int
    unfrozen_layers: list[int]


@dataclass
class Cost(Part):
    """Measured seconds of training, per epoch and k, and of the estimated search."""

    search_seconds: float | None
    per_epoch_seconds: dict[str, float]
    device: str
    cache_seconds: dict[str, float] = field(default_factory=dict)
    search: SearchCost | None = None
    search_cost: float | None = None


@dataclass
class Thresholds(Part):
    """The numbers the decision rule compared against."""

    near_chance: float | None = None
    near_chance_floor: float | None = None
    max_unk_rate: float | None = None
    min_gain: float | None = None
    target_accuracy: float | None = None
    budget_seconds: float | None = None


@dataclass
class AdviceRecord(_Record):
    """advice.json: the decision, its reasons and the numbers behind them (written by `advise`)."""

    FILE: ClassVar[str] = ADVICE_FILE
    decision: str
    reasons: list[str]
    zero_shot: ZeroShot
    probe: Probe
    shift: Shift
    expected: Expected
    cost: Cost
    advisor_seconds: float
    chance_accuracy: float | None = None
    thresholds: Thresholds | None = None
    data_fingerprint: str | None = None
    skipped: list[str] = field(default_factory=list)
    model: str | None = None
    num_blocks: int | None = None
    config: dict = field(default_factory=dict)  # the AdvisorConfig
    step_seconds: dict[str, float] = field(default_factory=dict)

    def check(self, where: str) -> None:
        if self.decision not in DECISIONS:
            raise InputError(f"{where}: decision {self.decision!r} is not one of {', '.join(DECISIONS)}")

    @property
    def suggested_layers(self) -> tuple[int, int] | None:
        """(lo, hi): the range of top blocks the advice suggests to fine-tune, if any."""
        pair = self.expected.suggested_unfrozen_layers
        return (int(pair[0]), int(pair[1])) if pair else None


# --------------------------------------------------------------------------- search.json, trial.json


@dataclass
class TrialCounts(Part):
    complete: int
    pruned: int
    fail: int
    running: int = 0
    waiting: int = 0


@dataclass
class BestTrial(Part):
    number: int
    value: float
    params: dict  # every hyperparameter of the configuration, the space's fixed ones too


@dataclass
class TrialRow(Part):
    """One trial of the study."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    params: dict
    seconds: float | None = None
    intermediate: dict[str, float] = field(default_factory=dict)  # {epoch ("0.3333", "1"): accuracy}
    fail_reason: str | None = None
    retry_of: int | None = None
    interrupted: bool = False
    latency_ms: dict[str, dict[str, float]] | None = None  # {variant: {"batch_B": ms}} of its shape (search._latency)
    pruned_reason: str | None = None  # pruned before training: over the latency budget


@dataclass
class FrontPoint(Part):
    """A (trial, variant) on the front of validation accuracy against latency (search._latency.front).
    An int8 point carries its trial's fp32 validation accuracy: export measures int8's own."""

    number: int
    variant: str
    accuracy: float
    latency_ms: float  # at the search's latency batch
    kept_layers: int | None = None
    max_length: int | None = None
    latency_ms_batch_1: float | None = None
    latency_ms_batch_32: float | None = None


@dataclass
class TrialRecord(_Record):
    """best_model/trial.json: which trial of which study the saved best model is."""

    FILE: ClassVar[str] = BEST_TRIAL_FILE
    study: str
    number: int
    value: float
    params: dict


@dataclass
class SearchRecord(_Record):
    """search.json: the study's trials, the best one and where the best model is (written by `search`)."""

    FILE: ClassVar[str] = SEARCH_FILE
    study_name: str
    storage: str
    direction: str
    metric: str
    n_trials: TrialCounts
    best: BestTrial | None
    trials: list[TrialRow]
    finished: int = 0
    target_trials: int | None = None
    best_model: TrialRecord | None = None
    space: dict = field(default_factory=dict)  # {name: "LO:HI" | "A,B" | "V"}
    pruner: str | None = None
    first_rung: float | None = None  # the share of epoch 1 after which trials first report
    head_start: str | None = None
    sampler: str | None = None
    workers: int | None = None
    seconds: float | None = None
    front: list[FrontPoint] = field(default_factory=list)  # accuracy against latency, fastest first
    latency_budget_ms: float | None = None
    latency_batch: int | None = None
    latency_machine: str | None = None


def sqlite_url(run_dir: str | Path) -> str:
    """The default study storage of a run directory: sqlite:///RUN/study.db (absolute)."""
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"
