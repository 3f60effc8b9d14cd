"""`finetune-advisor`: the command line over the stages.

Each subcommand parses its flags, calls one plain function of a stage, and prints the result.
Bad input (core.InputError) prints one message and exits with status 2, before anything is written;
Ctrl-C (130) and SIGTERM (143) print one line on what was kept.
"""

from __future__ import annotations

import argparse
import sys

from ..core import InputError, Stopped, raise_on_sigterm

EXAMPLES = """\
examples:
  finetune-advisor run --out runs/demo                     the whole chain on the bundled demo
  finetune-advisor data demo:bbc-news                      check a dataset, see its splits and lengths
  finetune-advisor data reviews.csv --label-column stars   your own file, naming the label column
  finetune-advisor advise --model demo:minilm --data demo:bbc-news --out runs/bbc
                                                           is fine-tuning worth it? writes runs/bbc/advice.json
  finetune-advisor search --model demo:minilm --data demo:bbc-news --out runs/bbc --trials 12
                                                           search layers and hyperparameters; runs/bbc/best_model
  finetune-advisor export runs/bbc                         ONNX (+ int8), checked against PyTorch; runs/bbc/export
  finetune-advisor predict runs/bbc/export "Shares fell"   classify with onnxruntime only
  finetune-advisor dashboard runs/bbc                      see the advice, the study and the export

Data (D) is a CSV, TSV, JSONL or Parquet file with a text and a label column, or demo:bbc-news.
A model (M) is a Hugging Face model id, a local model folder, or demo:minilm.
"""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "texts", None) is not None and not any(x.startswith("-") for x in extra):
        args.texts += extra  # `predict EXPORT --variant F "text"`: texts after an option
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        with raise_on_sigterm():  # `timeout`, systemd, docker: stop as Ctrl-C does (the search: between batches)
            return args.run(args) or 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # one line: what stopped it, what was kept, how to go on
        stopped = e if isinstance(e, Stopped) else Stopped()
        print(f"{stopped.what}: {stopped.note or 'nothing half-written was left behind.'}", file=sys.stderr)
        return stopped.exit_status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune-advisor",
        description="Is fine-tuning this pretrained model on my labelled data worth its cost, and if so, how?",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    from . import (_advise_command, _dashboard_command, _data_command, _export_command, _run_command,
                   _search_command)

    _data_command.register(sub)
    _advise_command.register(sub)
    _search_command.register(sub)
    _export_command.register(sub)
    _dashboard_command.register(sub)
    _run_command.register(sub)
    return parser
