"""The search space: which TrainConfig fields the search varies, and over what.

Every parameter is written the same way on the command line (`--space NAME=VALUE`) and in a
space file (JSON `{"NAME": "VALUE"}`):

    "LO:HI"   a range (integers for integer fields; log scale for the learning rates)
    "A,B,C"   a choice among values
    "V"       a fixed value (not searched)

Defaults (L = the model's number of blocks; max_length choices stop at the first one that holds
95% of the training texts, and at the model's maximum):

    unfrozen_layers      0:L          blocks trained from the top (0 = head only)
    learning_rate        1e-5:3e-4    log scale
    head_lr_multiplier   3:100        log scale
    layer_lr_decay       0.7:1.0
    batch_size           16,32
    epochs               1:4          Hyperband and the median pruner count epochs as resource
    weight_decay         0:0.1
    warmup_ratio         0:0.2
    max_length           64,128,256   bounded by the data
    augment              false        images: true searches with flips and crops (uncached, slower);
                                      false,true lets the search decide
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core import InputError

INT_FIELDS = ("unfrozen_layers", "batch_size", "epochs", "max_length")
LOG_FIELDS = ("learning_rate", "head_lr_multiplier")
STR_FIELDS = ("schedule",)
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

    def suggest(self, trial):
        if self.fixed is not None:
            return self.fixed
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.name in INT_FIELDS:
            return trial.suggest_int(self.name, int(self.low), int(self.high))
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

    def to_dict(self) -> dict[str, str]:
        """{name: 'LO:HI' | 'A,B' | 'V'}: what is stored with the study and in search.json."""
        return {p.name: p.text() for p in self.params}

    def suggest(self, trial) -> dict:
        """Values for one trial: sampled for searched parameters, the value itself for fixed ones."""
        return {p.name: p.suggest(trial) for p in self.params}

    @classmethod
    def build(cls, overrides: dict[str, str], *, num_blocks: int, max_positions: int,
              text_lengths=None) -> "SearchSpace":
        """The default space, bounded by the model and data, with the user's overrides on top.

        Args:
            overrides: {name: text} from --space flags and a space file.
            num_blocks: the model's number of blocks (unfrozen_layers goes up to it).
            max_positions: the longest input the model takes.
            text_lengths: token counts of (a sample of) the training texts, to bound max_length.

        Raises:
            InputError: a value outside what the model can do (k > L, a length beyond its maximum).
        """
        texts = {name: text for name, text in DEFAULTS.items() if text is not None}
        texts["unfrozen_layers"] = f"0:{num_blocks}"
        if text_lengths is not None and len(text_lengths) and "max_length" not in overrides:
            texts["max_length"] = _bounded_lengths(DEFAULTS["max_length"], text_lengths, max_positions)
        texts.update({name: str(text) for name, text in overrides.items()})
        params = tuple(parse_param(name, text) for name, text in texts.items())
        space = cls(params)
        k, lengths = space["unfrozen_layers"], space["max_length"]
        InputError.check([
            (min(k.values) >= 0 and max(k.values) <= num_blocks,
             f"space 'unfrozen_layers={k.text()}' is out of range: the model has {num_blocks} blocks, "
             f"so use values in 0:{num_blocks}."),
            (max(lengths.values) <= max_positions and min(lengths.values) >= 8,
             f"space 'max_length={lengths.text()}' is out of range: the model takes 8 to {max_positions} tokens."),
        ])
        return space


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
