"""The flags that say how to read a dataset, shared by every command that takes data, and the
DataConfig they make."""

from __future__ import annotations

from pathlib import Path

import argparse


def add_data_arguments(parser: argparse.ArgumentParser, *, positional: bool = False, required: bool = True,
                       data_help: str = "CSV/TSV/JSONL/Parquet file, an image folder DIR/<label>/<image>, "
                                        "demo:bbc-news or demo:fashion-mnist") -> None:
    """The flags that say how to read a dataset (shared by every command that takes data)."""
    if positional:
        parser.add_argument("data", metavar="D", help=data_help)
    else:
        parser.add_argument("--data", metavar="D", required=required, help=data_help)
    g = parser.add_argument_group("data")
    g.add_argument("--text-column", metavar="C", help="text column (default: text, sentence, content, review, …)")
    g.add_argument("--text-pair-column", metavar="C", help="second text column, for sentence-pair tasks")
    g.add_argument("--label-column", metavar="C", help="label column (default: label, labels, category, target, class, …)")
    g.add_argument("--image-column", metavar="C",
                   help="column of image paths (relative to the file's folder): an image task from a table")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="drop images that cannot be read (and say how many) instead of stopping")
    g.add_argument("--valid", metavar="FILE",
                   help="validation file (default: split 10%% off, stratified; more, up to 25%%, to reach 200 rows)")
    g.add_argument("--test", metavar="FILE", help="test file (default: split 10%% off unless --valid is given)")
    g.add_argument("--max-rows", type=int, metavar="N", help="use a stratified sample of about N rows")
    g.add_argument("--seed", type=int, default=0, help="seed of the split and sample (default: 0)")


def absolute(source: str | None) -> str | None:
    """A data file or folder as an absolute path (a demo's name as it is), for run.json: export, a
    resume and the dashboard then find the data from whatever folder they start in."""
    if not source or source.startswith("demo:"):
        return source
    return str(Path(source).expanduser().absolute())


def data_config(args):
    from ..core import DataConfig

    return DataConfig(text_column=args.text_column, label_column=args.label_column,
                      text_pair_column=args.text_pair_column, valid=absolute(args.valid), test=absolute(args.test),
                      max_rows=args.max_rows, seed=args.seed, image_column=args.image_column,
                      skip_bad_images=args.skip_bad_images)


def print_notes(task, backbone, model: str) -> None:
    """On stderr: what reading the data warned of, and what loading the model changed in it."""
    import sys

    for warning in task.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for change in backbone.changes:
        print(f"note: {model}: {change}", file=sys.stderr)
