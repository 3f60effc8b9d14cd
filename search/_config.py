"""The search's settings (`SearchConfig`) and the names its trials carry in the study."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..core import DEFAULT_TRIALS, MIN_EXAMPLES, InputError

PRUNERS = ("hyperband", "median", "none")
CACHES = ("auto", "memory", "disk", "off")
INTERRUPTED = "interrupted"  # user attribute of a trial stopped by Ctrl-C / SIGINT
RETRY_OF = "retry_of"  # user attribute of a trial queued again after an interrupt
PRUNED_REASON = "pruned_reason"  # user attribute of a trial pruned before training (over the latency budget)
HEAD_STARTS = ("probe", "random")
CLOSED_FORM = "closed-form logistic regression"  # the `method` of a head fitted without trials


@dataclass(frozen=True)
class SearchConfig:
    """A search.

    Attributes:
        trials: total finished trials wanted in the study (a re-run resumes up to it).
        timeout: stop starting trials after this many seconds (per worker); None = no limit.
        storage: an Optuna storage URL; None = sqlite:///RUN/study.db.
        study: the study's name in the storage.
        pruner: "hyperband", "median" or "none"; epochs are the resource.
        first_rung: the share of the first epoch's steps after which a trial first reports its
            validation accuracy to the pruner: successive halving on data size for the first rung
            (Li et al., "Hyperband", JMLR 2018, take training rows as the resource as well as
            iterations). 1/n for a whole n (the pruner's steps are 1/n epoch); 1 = epochs only.
        workers: worker processes on this machine (on several GPUs, one GPU each in turn).
        space: {parameter: "LO:HI" | "A,B" | "V"} on top of the defaults (see search._space).
        use_advice: narrow unfrozen_layers to RUN/advice.json's suggestion and try it first.
        seed: TPE's seed (worker i uses seed + i) and every trial's training seed.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        cache: frozen-feature cache: "auto" (the inputs of blocks in memory for one worker, on
            disk for several; pooled features on disk, where the advisor left those of its sample),
            "memory", "disk" or "off" (no cache, nothing shared).
        cache_dir: folder of the disk cache (default ~/.cache/finetune-advisor).
        cache_gb: the most GiB of frozen features a worker holds in memory; beyond it the least
            recently used k's features are dropped and read from disk or computed again when a
            later trial needs them, so memory stays flat however many k's the search visits.
        cache_disk_gb: the most GiB the disk cache folder may hold; least recently used files
            are removed beyond it.
        heartbeat: seconds between a running trial's heartbeats; a trial silent for 5 heartbeats
            is taken as killed and run again.
        patience: epochs without improvement before a trial stops early.
        min_examples: small data: the default epoch range grows until its top sees this many
            training examples (core.epochs_for), and early stopping and pruning count epochs in
            passes of a quarter of it (core.epoch_scale); 0 = plain epochs.
        head_search: when unfrozen_layers is fixed at 0 (a head-only advice, or the user's
            space), search the head's hyperparameters with trials; by default the head is
            fitted once, in closed form (logistic regression on all frozen features, C by
            cross-validation), which is what those trials approach.
        head_start: where every trial's head starts: "probe" (default) is the closed-form head on
            the frozen model's pooled features of all training rows (LP-FT: Kumar et al.,
            "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution",
            ICLR 2022), fitted once per max_length; "random" a freshly initialised head.
        start_with: configurations tried first, in order, before TPE's own (each a {parameter:
            value} dict, e.g. a known-good baseline); missing parameters take TrainConfig's
            defaults and values are moved inside the space. Queued only into a new study.
        group_by_length: each trial's training batches hold texts of similar length (padded
            less: 1.7x faster per epoch on short BBC sentences, accuracy within seed noise,
            benchmarks/results/train_buckets.json); False = random batches.
        latency: time each trial's shape (kept blocks, input length; fp32 and int8) with
            onnxruntime on this machine, once per shape (search._latency), so search.json carries
            the front of accuracy against latency; False = no timing, no front.
        latency_budget_ms: the deployed model's budget in milliseconds per batch of
            `latency_batch` requests: the best model is the most accurate trial that fits, and
            kept_layers is searched (ceil(L/3):L) unless the space fixes it. None = no budget.
        latency_batch: the batch size the budget is for (1: per request).
    """

    trials: int = DEFAULT_TRIALS
    timeout: float | None = None
    storage: str | None = None
    study: str = "search"
    pruner: str = "hyperband"
    first_rung: float = 1 / 3
    workers: int = 1
    space: dict = field(default_factory=dict)
    use_advice: bool = True
    seed: int = 0
    device: str = "auto"
    cache: str = "auto"
    cache_dir: str | None = None
    cache_gb: float = 2.0
    cache_disk_gb: float = 10.0
    heartbeat: int = 30
    patience: int = 2
    min_examples: int = MIN_EXAMPLES
    head_search: bool = False
    head_start: str = "probe"
    start_with: tuple = ()
    group_by_length: bool = True
    latency: bool = True
    latency_budget_ms: float | None = None
    latency_batch: int = 1

    @property
    def budget(self):
        """The latency budget (`search._latency.Budget`)."""
        from ._latency import Budget

        return Budget(self.latency_budget_ms, self.latency_batch)

    @property
    def steps_per_epoch(self) -> int:
        """The pruner's steps per epoch: 1 / first_rung."""
        return round(1 / self.first_rung)

    def __post_init__(self):
        InputError.check([
            (self.seed >= 0, f"--seed {self.seed} must be >= 0 (a whole number, e.g. 0)."),
            (self.trials >= 1, f"--trials {self.trials} must be >= 1."),
            (self.timeout is None or self.timeout > 0, f"--timeout {self.timeout} must be > 0 seconds."),
            (self.pruner in PRUNERS, f"--pruner '{self.pruner}' must be one of {', '.join(PRUNERS)}."),
            (0 < self.first_rung <= 1 and abs(self.first_rung * round(1 / self.first_rung) - 1) < 1e-6,
             f"--first-rung {self.first_rung:g} must be 1/n for a whole n >= 1, e.g. 1/3 (or 1: epochs only)."),
            (self.workers >= 1, f"--workers {self.workers} must be >= 1."),
            (self.cache in CACHES, f"--cache '{self.cache}' must be one of {', '.join(CACHES)}."),
            (self.heartbeat >= 1, f"--heartbeat {self.heartbeat} must be >= 1 second."),
            (self.min_examples >= 0, f"min_examples {self.min_examples} must be >= 0 (0 = plain epochs)."),
            (self.cache_gb > 0, f"--cache-gb {self.cache_gb} must be > 0."),
            (self.cache_disk_gb > 0, f"--cache-disk-gb {self.cache_disk_gb} must be > 0."),
            (bool(self.study.strip()), "--study must not be empty."),
            (self.latency_budget_ms is None or self.latency_budget_ms > 0,
             f"--latency-budget-ms {self.latency_budget_ms} must be > 0 milliseconds."),
            (self.latency_batch >= 1, f"--latency-batch {self.latency_batch} must be >= 1."),
            (self.latency or self.latency_budget_ms is None,
             "--latency-budget-ms needs the trials timed: drop --no-latency."),
            (self.head_start in HEAD_STARTS,
             f"--head-start '{self.head_start}' must be one of {', '.join(HEAD_STARTS)}."),
        ])
        if self.start_with:
            from ..core import TrainConfig  # torch: only when there is something to check

            known = {f.name for f in fields(TrainConfig)}
            unknown = sorted({k for params in self.start_with for k in params} - known)
            InputError.check([(not unknown, f"start_with names unknown parameters: {', '.join(unknown)} "
                                            f"(known: {', '.join(sorted(known))}).")])
