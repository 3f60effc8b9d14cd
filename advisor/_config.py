"""The advisor's settings (`AdvisorConfig`): thresholds, optional files, sample sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ..core import DEFAULT_TRIALS, InputError


@dataclass(frozen=True)
class AdvisorConfig:
    """What the advisor measures and how it decides.

    Attributes:
        min_gain: smallest accuracy gain (absolute, 0..1) that makes training or fine-tuning worth it.
        target_accuracy: stop at the cheapest option that reaches this validation accuracy (None = off).
        budget_seconds: the most the search may cost; above it the advice is head-only (None = no limit).
        gpu_hourly_cost: price of one hour of the device, to turn the cost into money (None = not shown).
        max_unk_rate: unknown-token rate above which the model cannot read the data (change-model).
        label_descriptions: JSON file {label: sentence} for zero-shot (default "This text is about {label}.",
            for an image-text model "a photo of a {label}.").
        reference: text file, one example a line, of the model's world (default: the bundled general English).
        unlabeled: text file, one example a line, of production data, compared with the training data.
        max_length: truncation length in tokens.
        sample_rows: training rows used for the probes (stratified sample).
        valid_rows: validation rows used for every accuracy.
        pilot_rows: training rows of the pilot fine-tuning.
        pilot_epochs: epochs of each pilot run.
        search_trials: trials of the search whose cost is estimated.
        search_epochs: epochs per trial of that search.
        batch_size: training batch size, for the pilot and the cost.
        device: "auto", "cpu", "cuda" or "mps".
        seed: seed of the samples and the pilot.
        cache_dir: folder of the feature cache the search reads (default $FINETUNE_ADVISOR_CACHE or
            ~/.cache/finetune-advisor): the pooled features of the sample are kept there, so a
            head fitted afterwards embeds only the other rows; "" keeps nothing.
    """

    min_gain: float = 0.01
    target_accuracy: float | None = None
    budget_seconds: float | None = None
    gpu_hourly_cost: float | None = None
    max_unk_rate: float = 0.05
    label_descriptions: str | None = None
    reference: str | None = None
    unlabeled: str | None = None
    max_length: int = 128
    sample_rows: int = 500
    valid_rows: int = 300
    pilot_rows: int = 200
    pilot_epochs: int = 3
    search_trials: int = DEFAULT_TRIALS
    search_epochs: int = 3
    batch_size: int = 16
    device: str = "auto"
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self):
        checks = [
            (self.seed >= 0, f"--seed {self.seed} must be >= 0 (a whole number, e.g. 0)."),
            (0 <= self.min_gain < 1, f"--min-gain {self.min_gain} must be in [0, 1) (absolute accuracy, e.g. 0.01)."),
            (self.target_accuracy is None or 0 < self.target_accuracy <= 1,
             f"--target-accuracy {self.target_accuracy} must be in (0, 1]."),
            (self.budget_seconds is None or self.budget_seconds > 0, f"--budget-seconds {self.budget_seconds} must be > 0."),
            (self.gpu_hourly_cost is None or self.gpu_hourly_cost >= 0,
             f"--gpu-hourly-cost {self.gpu_hourly_cost} must be >= 0."),
            (self.sample_rows >= 10, f"sample_rows {self.sample_rows} must be >= 10."),
            (self.valid_rows >= 10, f"valid_rows {self.valid_rows} must be >= 10."),
            (self.pilot_rows >= 10, f"pilot_rows {self.pilot_rows} must be >= 10."),
            (self.pilot_epochs >= 1, f"pilot_epochs {self.pilot_epochs} must be >= 1."),
            (self.max_length >= 8, f"--max-length {self.max_length} must be >= 8."),
        ]
        InputError.check(checks)
