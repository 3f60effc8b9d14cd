"""pipeline: the `finetune-advisor` command line. Thin: parse, call a plain function, print."""

from .cli import main

__all__ = ["main"]
