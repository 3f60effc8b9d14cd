"""Importing the light parts must not pull in torch (the dashboard reads run directories without it)."""

import subprocess
import sys


def test_import_core_and_pipeline_do_not_import_torch():
    code = "import sys, finetune_advisor; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
