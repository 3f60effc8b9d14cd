"""The search space: which TrainConfig fields the search varies, and over what.

Every parameter is written the same way on the command line (`--space NAME=VALUE`) and in a
space file (JSON `{"NAME": "VALUE"}`):

    "LO:HI"   a range (integers for integer fields; log scale for the learning rates)
    "A,B,C"   a choice among values
    "V"       a fixed value (not searched)

Defaults (L = the model's number of blocks; max_length choices stop at the first one that holds
95% of the training texts, and at the model's maximum):

    unfrozen_layers      0:L          blocks trained from the top of the kept ones (0 = head only)
    kept_layers          L            the model keeps its first d blocks and drops the rest; with a
                                      latency budget ceil(L/3):L (architectures that can drop blocks)
    learning_rate        1e-5:3e-4    log scale
    head_lr_multiplier   3:100        log scale
    layer_lr_decay       0.7:1.0
    batch_size           16,32
    epochs               1:4          Hyperband and the median pruner count epochs as resource; on
                                      small data both ends grow until the top sees MIN_EXAMPLES
                                      training examples (core.epochs_for): 280 rows search 3:12
    weight_decay         0:0.1
    warmup_ratio         0:0.2
    max_length           64,128,256   bounded by the data
    augment              false        images: true searches with flips and crops (uncached, slower);
                                      false,true lets the search decide
    batchnorm            frozen       models with BatchNorm: running statistics kept while training
                                      (TrainConfig.batchnorm); frozen,train from BATCHNORM_TRAIN_ROWS
                                      training rows, where re-estimating them can pay
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core import MIN_EXAMPLES, InputError, epochs_for

INT_FIELDS = ("unfrozen_layers", "kept_layers", "batch_size", "epochs", "max_length")
LOG_FIELDS = ("learning_rate", "head_lr_multiplier")
STR_FIELDS = ("schedule", "batchnorm")
FLOAT_FIELDS = ("learning_rate", "head_lr_multiplier", "layer_lr_decay", "weight_decay", "warmup_ratio",
                "head_dropout", "max_grad_norm")
BOOL_FIELDS = ("augment",)  # true/false; not in the default space: given with --space only
SEARCHABLE = INT_FIELDS + FLOAT_FIELDS + STR_FIELDS + BOOL_FIELDS + ("patience",)
BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

DEFAULTS = {
    "unfrozen_layers": None,  # 0:L, filled in from the model
    "learning_rate": "1e-5:3e-4",
    "head_lr_multiplier": "3:100",
    "layer_lr_decay": "0.7:1.0",
    "batch_size": "16,32",
    "epochs": "1:4",
    "weight_decay": "0:0.1",
    "warmup_ratio": "0:0.2",
    "max_length": "64,128,256",
}
LENGTH_COVERAGE = 0.95  # max_length choices stop at the first that holds this share of the texts
# BatchNorm statistics re-estimated on fewer rows than this are the noise of a few hundred batches
# of another domain; from here on the search may try them (ImageNet fine-tuning recipes train them)
BATCHNORM_TRAIN_ROWS = 10_000


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) parameter: a range [low, high], or a list of choices."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple | None = None

    @property
    def fixed(self):
        """The value when there is only one, else None."""
        if self.choices is not None:
            return self.choices[0] if len(self.choices) == 1 else None
        return self.low if self.low == self.high else None

    @property
    def values(self) -> tuple:
        """Every value an integer range or a choice can take (for checks on k and lengths)."""
        if self.choices is not None:
            return self.choices
        return tuple(range(int(self.low), int(self.high) + 1))

    def text(self) -> str:
        if self.choices is not None:
            return ",".join(str(c) for c in self.choices)
        return f"{self.low}:{self.high}" if self.fixed is None else str(self.low)

    def suggest(self, trial, at_most: int | None = None):
        """A value for `trial`; `at_most` caps an integer parameter (unfrozen_layers by the kept depth:
        the range's top is lowered for this trial, a choice or fixed value above it becomes it)."""
        if self.fixed is not None:
            return self.fixed if at_most is None else min(self.fixed, at_most)
        if self.choices is not None:
            choices = self.choices if at_most is None else tuple(dict.fromkeys(min(c, at_most) for c in self.choices))
            return choices[0] if len(choices) == 1 else trial.suggest_categorical(self.name, list(choices))
        if self.name in INT_FIELDS:
            high = int(self.high) if at_most is None else min(int(self.high), at_most)
            return trial.suggest_int(self.name, min(int(self.low), high), high)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def parse_param(name: str, text: str) -> Param:
    """Parse 'LO:HI', 'A,B,C' or 'V' for parameter `name` (see the module docstring)."""
    if name not in SEARCHABLE:
        raise InputError(f"'{name}' is not a searchable parameter. Use one of: {', '.join(SEARCHABLE)}.")
    text = str(text).strip()
    cast = (int if name in INT_FIELDS + ("patience",) else str if name in STR_FIELDS else
            _boolean if name in BOOL_FIELDS else float)

    def value(part: str):
        try:
            return cast(part.strip())
        except ValueError:
            kind = {int: "an integer", float: "a number", str: "a word", _boolean: "true or false"}[cast]
            raise InputError(f"space '{name}={text}': '{part.strip()}' is not {kind}. "
                             f"Write LO:HI for a range, A,B,C for a choice, or one value.") from None

    if ":" in text and cast not in (str, _boolean):
        low, high = (value(p) for p in text.split(":", 1))
        if low > high:
            raise InputError(f"space '{name}={text}': the range is empty (low {low} > high {high}). Write LO:HI.")
        if name in LOG_FIELDS and low <= 0:
            raise InputError(f"space '{name}={text}': {name} is searched on a log scale, so the low end must be > 0.")
        _check_values(name, text, (low, high))
        return Param(name, low, high, log=name in LOG_FIELDS)
    choices = tuple(dict.fromkeys(value(p) for p in text.split(",") if p.strip()))
    if not choices:
        raise InputError(f"space '{name}=': give a value, a range LO:HI or a choice A,B,C.")
    _check_values(name, text, choices)
    return Param(name, choices=choices)


def _boolean(text: str) -> bool:
    try:
        return BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError(text) from None


def _check_values(name: str, text: str, values) -> None:
    """Every value (a range's ends, each choice) must be one a training run accepts, so a bad
    space fails here, before a study is created and tied to it. The allowed ranges are
    TrainConfig's own checks."""
    from ..core import TrainConfig

    problems = []
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            problems.append(f"{name} {v} is not a finite number.")
            continue
        try:
            TrainConfig(**{name: v})
        except InputError as e:
            problems += e.problems
    if problems:
        raise InputError(f"space '{name}={text}': " + " ".join(dict.fromkeys(problems)))


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a search, by TrainConfig field name."""

    params: tuple[Param, ...]

    def __getitem__(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def get(self, name: str) -> Param | None:
        """The parameter `name`, or None when the space does not have it (kept_layers, augment)."""
        return next((p for p in self.params if p.name == name), None)

    def to_dict(self) -> dict[str, str]:
        """{name: 'LO:HI' | 'A,B' | 'V'}: what is stored with the study and in search.json."""
        return {p.name: p.text() for p in self.params}

    def suggest(self, trial) -> dict:
        """Values for one trial: sampled for searched parameters, the value itself for fixed ones.
        The kept depth comes first: unfrozen_layers counts from the top of the kept blocks, so it is
        drawn up to the depth drawn."""
        kept = self.get("kept_layers")
        depth = kept.suggest(trial) if kept is not None else None
        drawn = {} if kept is None else {"kept_layers": depth}
        return drawn | {p.name: p.suggest(trial, depth if p.name == "unfrozen_layers" else None)
                        for p in self.params if p.name != "kept_layers"}

    @classmethod
    def build(cls, overrides: dict[str, str], *, num_blocks: int, max_positions: int,
              text_lengths=None, shallower: bool = False, train_rows: int | None = None,
              min_examples: int = MIN_EXAMPLES, batchnorm: bool = False) -> "SearchSpace":
        """The default space, bounded by the model and data, with the user's overrides on top.

        Args:
            overrides: {name: text} from --space flags and a space file.
            num_blocks: the model's number of blocks (unfrozen_layers goes up to it).
            max_positions: the longest input the model takes.
            text_lengths: token counts of (a sample of) the training texts, to bound max_length.
            shallower: search kept_layers (ceil(L/3):L) unless the overrides say otherwise: a search
                under a latency budget, on a model that can drop its top blocks.
            train_rows: the training rows; on small data the default epochs grow until the range's top
                sees `min_examples` examples (`epochs_range`; 0 = never).
            batchnorm: the model has BatchNorm layers: `batchnorm` joins the space ("frozen", and
                "frozen,train" from BATCHNORM_TRAIN_ROWS training rows).

        Raises:
            InputError: a value outside what the model can do (k > L, a length beyond its maximum).
        """
        texts = {name: text for name, text in DEFAULTS.items() if text is not None}
        texts["unfrozen_layers"] = f"0:{num_blocks}"
        if shallower:
            texts["kept_layers"] = f"{math.ceil(num_blocks / 3)}:{num_blocks}"
        if train_rows is not None:
            texts["epochs"] = epochs_range(DEFAULTS["epochs"], train_rows, min_examples)
        if batchnorm:
            texts["batchnorm"] = "frozen,train" if (train_rows or 0) >= BATCHNORM_TRAIN_ROWS else "frozen"
        if text_lengths is not None and len(text_lengths) and "max_length" not in overrides:
            texts["max_length"] = _bounded_lengths(DEFAULTS["max_length"], text_lengths, max_positions)
        texts.update({name: str(text) for name, text in overrides.items()})
        params = tuple(parse_param(name, text) for name, text in texts.items())
        space = cls(params)
        k, lengths = space["unfrozen_layers"], space["max_length"]
        kept = space.get("kept_layers")
        InputError.check([
            (kept is None or (min(kept.values) >= 1 and max(kept.values) <= num_blocks),
             f"space 'kept_layers={kept and kept.text()}' is out of range: the model has {num_blocks} blocks, "
             f"so use values in 1:{num_blocks}."),
            (min(k.values) >= 0 and max(k.values) <= num_blocks,
             f"space 'unfrozen_layers={k.text()}' is out of range: the model has {num_blocks} blocks, "
             f"so use values in 0:{num_blocks}."),
            (max(lengths.values) <= max_positions and min(lengths.values) >= 8,
             f"space 'max_length={lengths.text()}' is out of range: the model takes 8 to {max_positions} tokens."),
        ])
        return space


def epochs_range(text: str, train_rows: int, min_examples: int = MIN_EXAMPLES) -> str:
    """The default epoch range 'LO:HI' scaled up on small data: the top becomes
    `core.epochs_for(HI, train_rows)` and the bottom grows by the same factor."""
    low, high = (int(x) for x in text.split(":"))
    top = epochs_for(high, train_rows, min_examples=min_examples)
    return f"{max(low, top * low // high)}:{top}"


def _bounded_lengths(text: str, lengths, max_positions: int) -> str:
    """The default length choices up to the first one that covers LENGTH_COVERAGE of the texts."""
    import numpy as np

    need = float(np.quantile(np.asarray(lengths), LENGTH_COVERAGE))
    choices = [c for c in (int(x) for x in text.split(",")) if c <= max_positions] or [max_positions]
    kept = []
    for c in choices:
        kept.append(c)
        if c >= need:
            break
    return ",".join(str(c) for c in kept)


def check_augment(param: Param | None, modality: str, model: str) -> None:
    """InputError when augmentation (flips and crops) is searched on a text task."""
    if param is not None and True in param.values and modality != "image":
        raise InputError(f"space 'augment={param.text()}': flips and crops are for images, and {model} is a text "
                         "model. Drop --space augment.")


def check_kept(space: SearchSpace, backbone) -> None:
    """InputError when the space drops blocks of a model that cannot run without its top ones."""
    kept = space.get("kept_layers")
    if kept is not None and min(kept.values) < backbone.num_blocks and backbone.arch.shallower is None:
        raise InputError(f"space 'kept_layers={kept.text()}': a {backbone.arch.family} model cannot drop its top "
                         "blocks (they are shared between depths). Drop "
                         "--space kept_layers; the budget then applies to the full depth.")
