"""`finetune-advisor data D`: validate a dataset and print its summary."""

from __future__ import annotations

import argparse

import numpy as np


def register(sub) -> None:
    from ._data_args import add_data_arguments

    p = sub.add_parser(
        "data", help="validate a dataset and summarise it (the first thing to run on your own file)",
        description="Read and validate a labelled dataset, then print rows per split, classes and their "
                    "counts, and token lengths under the model's tokenizer (images: sizes and colour modes). Every problem is reported at "
                    "once; exit status 2 means the data cannot be used as it is.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  finetune-advisor data reviews.csv --text-column body --label-column stars\n"
               "  finetune-advisor data photos/                 (photos/<label>/<image>)\n"
               "  finetune-advisor data demo:fashion-mnist")
    add_data_arguments(p, positional=True)
    p.add_argument("--model", metavar="M", default="demo:minilm",
                   help="model whose tokenizer measures the lengths (default: demo:minilm)")
    p.add_argument("--max-length", type=int, default=128, metavar="T",
                   help="length in tokens to report truncation against (default: 128)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..core import load_task

    from ._data_args import data_config

    task = load_task(args.data, data_config(args))
    if task.modality == "image":
        print(format_summary(task, None, args.max_length))
        return 0
    lengths = token_lengths(args.model, task.train.texts, task.train.pairs)
    print(format_summary(task, lengths, args.max_length))
    return 0


def token_lengths(model: str, texts, pairs=None) -> np.ndarray:
    """Token count of each text (with special tokens) under `model`'s tokenizer."""
    from ..core import load_tokenizer

    tokenizer = load_tokenizer(model)
    enc = tokenizer(list(texts), list(pairs) if pairs else None, truncation=False, verbose=False)
    return np.array([len(ids) for ids in enc["input_ids"]])


def format_summary(task, lengths: np.ndarray | None, max_length: int) -> str:
    """Rows per split and class; then token lengths (text) or image sizes and modes (images)."""
    splits = task.splits()
    if task.modality == "image" and task.label_column == "folder":
        columns = "image folders (one per class)"
    elif task.modality == "image":
        columns = f"image column '{task.text_column}', label column '{task.label_column}'"
    else:
        pair = f" + pair column '{task.text_pair_column}'" if task.text_pair_column else ""
        columns = f"text column '{task.text_column}'{pair}, label column '{task.label_column}'"
    lines = [f"{task.source}: {sum(len(s) for s in splits)} rows, {task.num_labels} classes; {columns}",
             f"fingerprint {task.fingerprint}", ""]
    width = max(len(label) for label in task.labels + ["class"])
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{s.name:>7}" for s in splits))
    counts = [task.class_counts(s) for s in splits]
    for label in task.labels:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c[label]:>7}" for c in counts))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{len(s):>7}" for s in splits))
    if task.modality == "image":
        from ..core._images import image_stats

        st = image_stats(task.train.texts, limit=1000)
        modes = ", ".join(f"{m} {n}" for m, n in sorted(st["modes"].items(), key=lambda kv: -kv[1]))
        lines += ["", f"train images (first {st['images']}): width {st['width'][0]}-{st['width'][2]} px "
                      f"(median {st['width'][1]}), height {st['height'][0]}-{st['height'][2]} px (median "
                      f"{st['height'][1]}); modes: {modes}; mean pixel (R, G, B) "
                      f"{', '.join(f'{v:.2f}' for v in st['mean'])}"]
        lines += [f"warning: {w}" for w in task.warnings]
        return "\n".join(lines)
    p50, p95 = np.percentile(lengths, [50, 95])
    truncated = float(np.mean(lengths > max_length))
    lines += ["", f"train token lengths: median {p50:.0f}, 95th percentile {p95:.0f}, max {lengths.max()}; "
                  f"{truncated:.0%} longer than {max_length} tokens"]
    lines += [f"warning: {w}" for w in task.warnings]
    return "\n".join(lines)
