"""transformers' progress bars and logs, silenced for a moment (`quiet_transformers`)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_transformers(*, logs: bool = False):
    """No progress bars from transformers (e.g. "Writing model shards") for a moment; with `logs`,
    no warnings either (the caller reports what matters)."""
    from transformers.utils import logging as hf_logging

    was_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if logs:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
