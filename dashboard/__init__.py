"""dashboard: a Streamlit app over run directories (advice, study, export, comparison).

`finetune-advisor dashboard RUN …` starts `dashboard/app.py`; `load_run` and friends read a run
directory without streamlit or torch.
"""

from pathlib import Path

from ._runs import RUNS_ENV, RunView, compare_rows, load_run, run_paths, trial_rows

APP = Path(__file__).with_name("app.py")

__all__ = ["APP", "RUNS_ENV", "RunView", "load_run", "run_paths", "trial_rows", "compare_rows"]
