"""What the search takes from the advice: space overrides and a first trial."""

from __future__ import annotations

from dataclasses import asdict

from ..core import ADVICE_FILE, AdviceRecord, RunDir
from ._config import SearchConfig
from ._space import SearchSpace


def _advice(run_dir: RunDir, task, backbone, config: SearchConfig, advice: AdviceRecord | None = None):
    """Space overrides and a first trial from the advice (`advice`, else RUN/advice.json), with
    notes saying what was taken.

    This is the one reader of the advice: head-only fixes unfrozen_layers at 0 (and the layer
    decay, which then has nothing to act on); fine-tune narrows it to the suggested range and
    tries its middle first; zero-shot and change-model are searched only because the user asked.
    The user's own --space values always win.
    """
    overrides = dict(config.space)
    if not config.use_advice or (advice is None and not run_dir.exists(ADVICE_FILE)):
        return overrides, None, []
    advice = advice or AdviceRecord.read(run_dir.file(ADVICE_FILE))
    if advice.data_fingerprint not in (None, task.fingerprint):
        return overrides, None, ["advice.json was made on other data; not using it"]
    notes = []
    if advice.decision in ("zero-shot", "change-model"):
        notes.append(f"the advice was '{advice.decision}' ({advice.reasons[0] if advice.reasons else ''}); "
                     "searching anyway, as asked")
    if "unfrozen_layers" in overrides:
        return overrides, None, notes
    if advice.decision == "head-only":
        overrides["unfrozen_layers"] = "0"
        overrides.setdefault("layer_lr_decay", "1")
        notes.append("from advice.json (head-only): unfrozen_layers fixed at 0, a head on frozen features")
        return overrides, None, notes
    suggested = advice.suggested_layers
    if not suggested:
        return overrides, None, notes
    lo, hi = suggested[0], min(suggested[1], backbone.num_blocks)
    overrides["unfrozen_layers"] = f"{lo}:{hi}"
    first = {"unfrozen_layers": min(hi, lo + 1)}
    notes.append(f"from advice.json: unfrozen_layers narrowed to {lo}..{hi}; the first trial tries "
                 f"k={first['unfrozen_layers']} with the default hyperparameters")
    return overrides, first, notes


def _clip(first: dict, space: SearchSpace) -> dict:
    """The default TrainConfig values (with `first` on top) moved inside the space's searched ranges."""
    from ..core import TrainConfig

    defaults = {**asdict(TrainConfig()), **first}
    params = {}
    for p in space.params:
        if p.fixed is not None:
            continue
        value = defaults[p.name]
        if value is None:  # kept_layers: None is every block, the top of its range
            value = max(p.values)
        if p.choices is not None:
            numeric = all(isinstance(c, (int, float)) for c in p.choices)
            params[p.name] = min(p.choices, key=lambda c: abs(c - value)) if numeric else p.choices[0]
        else:
            params[p.name] = min(max(value, p.low), p.high)
    return params
