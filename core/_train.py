"""The training loop: a classification head on a pooled backbone, the top k blocks unfrozen,
with the frozen part computed once and cached.

When the bottom L-k blocks are frozen, the hidden states entering block L-k never change, so
they are computed once per split (`FeatureCache`) and each step runs only the top k blocks and
the head. k = 0 trains the head on cached pooled features; k = L is full fine-tuning (embeddings
included) and needs no cache. Frozen modules stay in eval mode (no dropout), so cached and
uncached training follow the same computation and, with the same seed, the same losses.

The loop itself: AdamW (no weight decay on biases and norms), linear warm-up then linear or
cosine decay, layer-wise learning-rate decay, gradient clipping, early stopping on validation
accuracy with the best epoch restored, autocast (bf16, else fp16 with loss scaling) on CUDA.
BatchNorm stays in inference mode unless asked (`core._batchnorm`); small data gets enough steps (`core._steps`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ._backbone import Backbone, freeze_top_k
from ._batchnorm import batchnorms
from ._batches import augment_pixels, length_grouped_batches
from ._cache import FeatureCache, default_cache_dir
from ._device import autocast, autocast_dtype, release_memory, resolve_device
from ._errors import InputError
from ._model import Classifier
from ._stop import check_stop

SCHEDULES = ("linear", "cosine")
CACHE_MODES = ("memory", "disk", "off")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BATCHNORM_MODES = ("frozen", "train")
MIN_BATCHNORM_ROWS = 8  # a batch smaller than this (an epoch's remainder) never updates running statistics
class TrainingError(RuntimeError):
    """Training broke down (e.g. the loss became NaN); the message says where."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        unfrozen_layers: k, blocks trained counted from the top; 0 = head only, L = all (embeddings too).
        kept_layers: d, the model keeps its first d blocks and drops the rest (`Backbone.keep_first`);
            k counts from the top of the kept ones. None = every block.
        learning_rate: peak learning rate of the top block (AdamW).
        head_lr_multiplier: the head's learning rate is learning_rate times this (a fresh head
            needs a larger step than pretrained blocks).
        layer_lr_decay: block at depth d below the top gets learning_rate * layer_lr_decay**d
            (1.0 = same rate everywhere).
        weight_decay: AdamW weight decay, not applied to biases and norm weights.
        warmup_ratio: share of all steps spent warming up linearly from 0, in [0, 1).
        schedule: decay after warm-up: "linear" (to 0) or "cosine".
        batch_size: examples per step.
        epochs: maximum passes over the training split.
        patience: stop after this many epochs without a better validation accuracy (0 = never).
        max_length: truncation length in tokens.
        max_grad_norm: gradient clipping norm (0 = off).
        head_dropout: dropout before the head.
        seed: seeds the head's initialisation, dropout and batch order.
        cache: where cached frozen-layer features live: "memory", "disk" (cache_dir) or "off".
        cache_dir: folder of the disk cache (default: ~/.cache/finetune-advisor).
        device: "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:N" or "mps".
        precision: "auto" (bf16/fp16 autocast on CUDA, fp32 elsewhere), "fp32", "bf16" or "fp16".
        augment: images only: each training image is flipped left-right at random and cropped at a
            random offset from its copy padded by 1/8 of its side, anew every step (`augment_pixels`).
            The frozen part then sees new pixels each time, so nothing is cached.
        group_by_length: texts only: each training batch holds texts of similar length, so it is
            padded less (`length_grouped_batches`); the batches still come in a seeded random order.
        batchnorm: "frozen" (BatchNorm in inference mode: statistics kept, scale and shift trained) or
            "train" (statistics re-estimated from batches of >= MIN_BATCHNORM_ROWS rows); core._batchnorm.
    """

    unfrozen_layers: int = 2
    kept_layers: int | None = None
    learning_rate: float = 5e-5
    head_lr_multiplier: float = 20.0
    layer_lr_decay: float = 0.9
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    batch_size: int = 16
    epochs: int = 3
    patience: int = 2
    max_length: int = 128
    max_grad_norm: float = 1.0
    head_dropout: float = 0.1
    seed: int = 0
    cache: str = "memory"
    cache_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"
    augment: bool = False
    group_by_length: bool = False
    batchnorm: str = "frozen"

    def __post_init__(self):
        checks = [
            (self.unfrozen_layers >= 0, f"unfrozen_layers {self.unfrozen_layers} must be >= 0."),
            (self.kept_layers is None or self.kept_layers >= 1, f"kept_layers {self.kept_layers} must be >= 1."),
            (self.learning_rate > 0, f"learning_rate {self.learning_rate} must be > 0 (e.g. 5e-5)."),
            (self.head_lr_multiplier > 0, f"head_lr_multiplier {self.head_lr_multiplier} must be > 0."),
            (0 < self.layer_lr_decay <= 1, f"layer_lr_decay {self.layer_lr_decay} must be in (0, 1]."),
            (self.weight_decay >= 0, f"weight_decay {self.weight_decay} must be >= 0."),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio {self.warmup_ratio} must be in [0, 1)."),
            (self.schedule in SCHEDULES, f"schedule '{self.schedule}' must be one of {', '.join(SCHEDULES)}."),
            (self.batch_size >= 1, f"batch_size {self.batch_size} must be >= 1."),
            (self.epochs >= 1, f"epochs {self.epochs} must be >= 1."),
            (self.patience >= 0, f"patience {self.patience} must be >= 0 (0 = no early stopping)."),
            (self.max_length >= 8, f"max_length {self.max_length} must be >= 8 tokens."),
            (self.max_grad_norm >= 0, f"max_grad_norm {self.max_grad_norm} must be >= 0 (0 = off)."),
            (0 <= self.head_dropout < 1, f"head_dropout {self.head_dropout} must be in [0, 1)."),
            (self.cache in CACHE_MODES, f"cache '{self.cache}' must be one of {', '.join(CACHE_MODES)}."),
            (self.precision in PRECISIONS, f"precision '{self.precision}' must be one of {', '.join(PRECISIONS)}."),
            (self.batchnorm in BATCHNORM_MODES, f"batchnorm '{self.batchnorm}' must be one of {', '.join(BATCHNORM_MODES)}."),
        ]
        InputError.check(checks)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    """What a training run produced: the model (best epoch restored) and how it got there."""

    model: Classifier
    history: list[EpochRecord]
    best_epoch: int
    best_valid_accuracy: float
    step_losses: list[float]
    cache_seconds: float
    cached: bool
    device: str
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def epoch_seconds(self) -> float:
        """Mean wall time of one epoch (training + validation), cache building excluded."""
        return float(np.mean([h.seconds for h in self.history]))


# --------------------------------------------------------------------------- training


def train(backbone: Backbone, task, config: TrainConfig = TrainConfig(), *, cache: FeatureCache | None = None,
          on_epoch: Callable[[float, float], None] | None = None, head_init=None, first_rung: float = 1.0,
          progress: bool = True) -> TrainResult:
    """Fine-tune the top `config.unfrozen_layers` blocks and a head on `task.train`.

    Args:
        backbone: the pretrained encoder; it is copied, never changed, so it can serve many runs.
        task: a TaskData (train and valid splits are used).
        config: the hyperparameters.
        cache: features shared between runs (e.g. the trials of a search); None = a fresh one
            per call, kept in memory or on disk as `config.cache` says.
        on_epoch: called after each epoch with (epoch, validation accuracy); an exception it
            raises (e.g. optuna.TrialPruned) stops training and propagates.
        head_init: (weight [num_labels, hidden], bias [num_labels]) to start the head from, e.g. a
            linear probe fitted on the pooled frozen features (LP-FT: Kumar et al., "Fine-Tuning
            can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022);
            None = a random head.
        first_rung: below 1, `on_epoch` is also called once inside the first epoch, after this
            share of its steps, with the share as the epoch (e.g. 1/3): a pruner can stop a poor
            run after a third of the data (successive halving on data size for the first rung).
            That check is not an epoch: it is not in the history and never restored as the best.
        progress: show a progress bar.

    Returns:
        The trained classifier with its best epoch restored, and the history.

    Raises:
        InputError: unfrozen_layers beyond the model's depth, or a bad device.
        TrainingError: the loss became NaN or infinite.
    """
    if config.kept_layers is not None:
        backbone = backbone.keep_first(config.kept_layers)
    data = _prepare(backbone, task, config, cache, progress)
    model = _build_model(backbone, task, config, head_init)
    frozen = freeze_top_k(model.encoder, backbone.arch, config.unfrozen_layers)
    model.to(data.device)
    fit = _Fit(model, frozen, data, task, config)
    history, best, stopped_early = [], (-1.0, 0, None), False
    context = model.starting_at(data.start) if data.cached and config.unfrozen_layers > 0 else contextlib.nullcontext()
    bar = tqdm(total=fit.steps_per_epoch * config.epochs, desc=f"training k={config.unfrozen_layers}", unit="step",
               disable=not progress, leave=False)
    rung_steps = max(1, round(first_rung * fit.steps_per_epoch))
    check = (rung_steps, lambda accuracy: on_epoch(first_rung, accuracy)) if (
        on_epoch is not None and rung_steps < fit.steps_per_epoch) else None
    try:
        with context:
            for epoch in range(1, config.epochs + 1):
                record = fit.epoch(epoch, bar, check if epoch == 1 else None)
                history.append(record)
                if record.valid_accuracy > best[0]:
                    best = (record.valid_accuracy, epoch, _trainable_state(model))
                if on_epoch is not None:
                    on_epoch(epoch, record.valid_accuracy)
                if config.patience and epoch - best[1] >= config.patience:
                    stopped_early = epoch < config.epochs
                    break
    finally:
        bar.close()
        fit.close()
        release_memory()
    _restore(model, best[2])
    return TrainResult(model, history, best[1], best[0], fit.step_losses, data.cache_seconds, data.cached,
                       str(data.device), stopped_early, data.notes)


@dataclass
class _Prepared:
    """What a run trains on: tokenized splits, the frozen part's cached output (or None), where."""

    device: object
    amp: object
    start: int  # the first block that trains (= number of frozen blocks)
    cached: bool
    encoded: dict
    features: dict | None
    cache_seconds: float
    notes: list


def _prepare(backbone: Backbone, task, config: TrainConfig, cache: FeatureCache | None, progress: bool) -> _Prepared:
    """Check k against the model, choose device and precision, and compute (or fetch) the inputs and
    the frozen part's output for both splits."""
    n_blocks, k = backbone.num_blocks, config.unfrozen_layers
    if k > n_blocks:
        raise InputError(f"unfrozen_layers {k} is out of range: {backbone.name} has {n_blocks} blocks, so use 0..{n_blocks}.")
    device = resolve_device(config.device)
    amp = _amp_dtype(config.precision, device)
    notes = []
    if config.augment and backbone.modality != "image":
        raise InputError("augment (flips and crops) works on images; this is a text model, so leave it off.")
    cached = config.cache != "off" and k < n_blocks
    if cached and config.augment:
        cached = False
        notes.append("augment: every step sees new pixels, so training ran without the frozen-layer cache.")
    if cached and 0 < k and not backbone.arch.can_cache_inner(backbone.model):
        cached = False
        notes.append(f"{backbone.arch.family}: this model cannot be run from a middle block, so training "
                     "ran without the frozen-layer cache.")
    if cache is None:
        cache = FeatureCache((config.cache_dir or default_cache_dir()) if config.cache == "disk" else None)
    if backbone.device != device:  # the frozen part runs where training runs
        backbone.model.to(device)
    t0 = time.perf_counter()
    encoded = {s: cache.encoded(backbone, getattr(task, s), config.max_length) for s in ("train", "valid")}
    features = {s: cache.features(backbone, getattr(task, s), start=n_blocks - k, max_length=config.max_length,
                                  progress=progress) for s in ("train", "valid")} if cached else None
    return _Prepared(device, amp, n_blocks - k, cached, encoded, features, time.perf_counter() - t0, notes)


def _build_model(backbone: Backbone, task, config: TrainConfig, head_init) -> Classifier:
    """A private copy of the backbone under a seeded head (from `head_init` when given)."""
    torch.manual_seed(config.seed)
    model = Classifier(backbone, task.num_labels, dropout=config.head_dropout, model=copy.deepcopy(backbone.model))
    model.labels, model.max_length = list(task.labels), min(config.max_length, backbone.max_positions)
    if head_init is not None:
        set_head(model.head, *head_init)
    return model


class _Fit:
    """The optimisation of one run: optimizer, schedule, one epoch, evaluation."""

    def __init__(self, model: Classifier, frozen: list, data: _Prepared, task, config: TrainConfig):
        self.model, self.frozen, self.data, self.task, self.config = model, frozen, data, task, config
        self.optimizer = _optimizer(model, config, config.unfrozen_layers)
        self.steps_per_epoch = math.ceil(len(task.train) / config.batch_size)
        self.scheduler = _scheduler(self.optimizer, config, self.steps_per_epoch * config.epochs)
        self.scaler = torch.amp.GradScaler("cuda") if data.amp == torch.float16 else None
        self.labels = {s: torch.as_tensor(getattr(task, s).labels) for s in ("train", "valid")}
        self.step_losses: list[float] = []
        self.generator = torch.Generator().manual_seed(config.seed)  # the augmentation's draws
        self.batchnorms = [m for m in batchnorms(model) if all(m is not f for f in frozen)]

    def logits(self, split: str, idx):
        """Logits of rows `idx`: from cached pooled features (k = 0), cached hidden states entering
        the first trained block, or the inputs themselves."""
        d, model = self.data, self.model
        if d.cached and self.config.unfrozen_layers == 0:
            return model.from_pooled(d.features[split][idx].to(d.device))
        batch = d.encoded[split].batch(idx, d.device)
        if self.config.augment and split == "train":
            batch["pixel_values"] = augment_pixels(batch["pixel_values"], self.generator)
        if d.cached:
            injected = torch.nn.utils.rnn.pad_sequence([d.features[split][i] for i in idx], batch_first=True)
            if injected.dim() == 4:  # a CNN's feature maps, in the model's NHWC layout
                injected = injected.contiguous(memory_format=torch.channels_last)
            model.injected = injected.to(d.device)
        with autocast(d.device, d.amp):
            return model(**batch)

    def train_mode(self, rows: int | None = None) -> None:
        """Training mode; no dropout in what is frozen; BatchNorm updates only under "train" from `rows` >= 8."""
        self.model.train()
        for module in self.frozen:
            module.eval()
        update = self.config.batchnorm == "train" and (rows is None or rows >= MIN_BATCHNORM_ROWS)
        for module in self.batchnorms:
            module.train(update)

    def epoch(self, epoch: int, bar, check=None) -> EpochRecord:
        """One pass over the training rows (seeded order), then the validation accuracy.
        check: (steps, callback): after that many steps, callback(validation accuracy then)."""
        config, device = self.config, self.data.device
        t0 = time.perf_counter()
        self.train_mode()
        losses = []
        for step, idx in enumerate(self.batches(epoch), 1):
            if self.batchnorms:  # BatchNorm's mode may differ batch by batch (a small remainder)
                self.train_mode(len(idx))
            loss = torch.nn.functional.cross_entropy(self.logits("train", idx).float(),
                                                     self.labels["train"][idx].to(device))
            if not torch.isfinite(loss):
                raise TrainingError(f"the loss became {loss.item()} at epoch {epoch}, step {step} "
                                    f"(learning rate {config.learning_rate}). Lower the learning rate.")
            self.optimizer.zero_grad(set_to_none=True)
            _backward_step(loss, self.model, self.optimizer, self.scaler, config.max_grad_norm)
            self.scheduler.step()
            self.step_losses.append(loss.item())
            losses.append(self.step_losses[-1])
            bar.update(1)
            check_stop()  # Ctrl-C / SIGTERM asked for a stop: here, between two batches
            if check is not None and len(losses) == check[0]:
                check[1](self.evaluate())
                self.train_mode()
        accuracy = self.evaluate()
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", valid_acc=f"{accuracy:.3f}")
        return EpochRecord(epoch, float(np.mean(losses)), accuracy, time.perf_counter() - t0)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The training rows' batches of one epoch, in a seeded random order; grouped by length
        (`config.group_by_length`) where blocks train on text, whose batches pad to their longest
        text (a head alone reads pooled features of one size; images have one size; texts that
        all reach max_length pad nothing either way and keep the random batches)."""
        config = self.config
        rng = np.random.default_rng(config.seed + epoch)
        order = rng.permutation(len(self.task.train))
        lengths = getattr(self.data.encoded["train"], "lengths", None)
        if config.group_by_length and lengths is not None and config.unfrozen_layers > 0 and np.ptp(lengths) > 0:
            return length_grouped_batches(order, lengths, config.batch_size, rng)
        return [order[s:s + config.batch_size] for s in range(0, len(order), config.batch_size)]

    def evaluate(self) -> float:
        """Accuracy on the validation split, in batches of similar length (least padding)."""
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for idx in self.data.encoded["valid"].sorted_batches(self.config.batch_size * 2):
                correct += (self.logits("valid", idx).argmax(-1).cpu() == self.labels["valid"][idx]).sum().item()
        return correct / len(self.task.valid)

    def close(self) -> None:
        """Drop the optimizer state and the injected features (memory for the next run)."""
        del self.optimizer, self.scheduler
        self.model.injected = None


def _restore(model: Classifier, best_state) -> None:
    """Put back the best epoch's trainable weights; the model ends frozen, in eval mode."""
    for param, value in best_state or ():  # by object, not name: names shift while the block list is cut
        param.data.copy_(value)
    model.requires_grad_(False)
    model.eval()


def set_head(head: torch.nn.Linear, weight, bias) -> None:
    """Copy (weight [num_labels, hidden], bias [num_labels]) into a linear head."""
    weight, bias = torch.as_tensor(np.asarray(weight, np.float32)), torch.as_tensor(np.asarray(bias, np.float32))
    if weight.shape != head.weight.shape or bias.shape != head.bias.shape:
        raise ValueError(f"head_init has shapes {tuple(weight.shape)} and {tuple(bias.shape)}; this head needs "
                         f"{tuple(head.weight.shape)} and {tuple(head.bias.shape)}.")
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)


def _amp_dtype(precision: str, device):
    if precision == "auto":
        return autocast_dtype(device)
    if precision in ("bf16", "fp16") and device.type != "cuda":
        raise InputError(f"precision '{precision}' needs a CUDA device; this run is on {device.type}. Use fp32 or auto.")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _optimizer(model, config: TrainConfig, k: int):
    """AdamW with layer-wise learning-rate decay and no weight decay on 1-d parameters."""
    blocks = model.arch.block_list(model.encoder)
    n = len(blocks)
    groups = [(list(model.head.parameters()), config.learning_rate * config.head_lr_multiplier)]
    for depth, block in enumerate(reversed(blocks[n - k:])):
        groups.append((list(block.parameters()), config.learning_rate * config.layer_lr_decay ** depth))
    if k == n:  # full fine-tuning: everything outside the blocks, at the bottom rate
        in_blocks = {id(p) for b in blocks for p in b.parameters()}
        rest = [p for p in model.encoder.parameters() if id(p) not in in_blocks]
        groups.append((rest, config.learning_rate * config.layer_lr_decay ** n))
    param_groups = []
    for params, lr in groups:
        params = [p for p in params if p.requires_grad]
        param_groups.append({"params": [p for p in params if p.ndim >= 2], "lr": lr,
                             "weight_decay": config.weight_decay})
        param_groups.append({"params": [p for p in params if p.ndim < 2], "lr": lr, "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in param_groups if g["params"]])


def _scheduler(optimizer, config: TrainConfig, total_steps: int):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = get_linear_schedule_with_warmup if config.schedule == "linear" else get_cosine_schedule_with_warmup
    return make(optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps), num_training_steps=total_steps)


def _backward_step(loss, model, optimizer, scaler, max_grad_norm: float) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _trainable_state(model) -> list:
    return [(p, p.detach().cpu().clone()) for p in model.parameters() if p.requires_grad]


