"""finetune-advisor: is fine-tuning this pretrained model on my labelled data worth its cost, and how?

The Python API, the same four stages as the command line::

    from finetune_advisor import (AdvisorConfig, DataConfig, ExportConfig, Predictor, SearchConfig,
                                  advise, export, load_backbone, load_task, search)

    task = load_task("demo:bbc-news", DataConfig(max_rows=300))
    backbone = load_backbone("demo:minilm")
    advice = advise(backbone, task, AdvisorConfig(max_length=64), run_dir="runs/bbc")
    print(advice.decision, advice.probe.accuracy)
    result = search(backbone, task, "runs/bbc", SearchConfig(trials=4), advice=advice)
    exported = export("runs/bbc/best_model", "runs/bbc/export", task)
    Predictor("runs/bbc/export").predict(["Shares fell sharply"])

Every record a run directory holds reads into its type: `AdviceRecord.read("runs/bbc").probe.accuracy`.

The stages live in subpackages (`finetune_advisor.core`, `.advisor`, `.search`, `.export`,
`.dashboard`, `.pipeline`). Note that `finetune_advisor.search` and `finetune_advisor.export` are
the functions; import the stage packages' own names with `from finetune_advisor.search import …`.
Importing this package does not import torch.
"""

from __future__ import annotations

# The stage packages first: importing a subpackage binds its name here, and the functions of the
# same name (`search`, `export`) below must come after it.
from . import export as _export_stage, search as _search_stage  # noqa: F401
from .advisor import AdvisorConfig, advise
from .core import (AdviceRecord, DataConfig, ExportRecord, InputError, RunRecord, SearchRecord, TaskData,
                   TrialRecord, load_task)
from .export import Predictor, PredictorError
from .search import SearchConfig, search

__version__ = "0.1.0"


def export(source, out, task, config=None, **kwargs) -> ExportRecord:
    """Export `source` (a run's best_model/ folder) to the deploy folder `out`: ONNX checked
    against PyTorch, int8 when its accuracy passes the gate, latencies (see `finetune_advisor.export`).

    Args:
        source: folder of the trained model (RUN/best_model).
        out: the deploy folder to write (replaced only if this tool wrote it).
        task: the task whose validation rows check accuracy (`load_task`).
        config: an `ExportConfig` (default: ExportConfig()).
        **kwargs: `progress`: called with each line of progress (default print).

    Returns:
        The export record, also written to `out`/export.json.
    """
    from .export._export import ExportConfig, export as run_export

    return run_export(source, out, task, config or ExportConfig(), **kwargs)


def __getattr__(name):  # torch-importing names load on first use
    if name == "ExportConfig":
        from .export._export import ExportConfig
        return ExportConfig
    if name in ("load_backbone", "Backbone"):
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'finetune_advisor' has no attribute '{name}'")


__all__ = ["advise", "search", "export", "Predictor", "PredictorError", "load_task", "load_backbone", "Backbone",
           "AdvisorConfig", "SearchConfig", "ExportConfig", "DataConfig", "TaskData", "InputError", "AdviceRecord",
           "SearchRecord", "TrialRecord", "ExportRecord", "RunRecord"]
