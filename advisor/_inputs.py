"""The advisor's optional files (label descriptions, reference and unlabeled data), every problem
reported at once, before any model work."""

from __future__ import annotations

import json
from pathlib import Path

from ..core import InputError, TaskData
from . import _signals
from ._config import AdvisorConfig

REFERENCE_FILE = Path(__file__).with_name("reference.txt")
_SHIFT_ROWS = 300  # rows per side for MMD and the proxy A-distance; images read for --reference / --unlabeled


def read_inputs(task: TaskData, config: AdvisorConfig) -> dict:
    """Read the optional files, checking them all before any model work.

    Raises:
        InputError: a missing or empty file, bad JSON, or label descriptions that miss labels.
    """
    if task.modality == "image":
        return _read_image_inputs(task, config)
    problems, out = [], {"descriptions": None, "unlabeled": None}

    def lines(flag, path):
        p = Path(path)
        if not p.is_file():
            problems.append(f"{flag} file '{path}' does not exist.")
            return None
        rows = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if not rows:
            problems.append(f"{flag} file '{path}' is empty: give one text per line.")
        return rows

    out["reference"] = lines("--reference", config.reference or REFERENCE_FILE)
    if config.unlabeled:
        out["unlabeled"] = lines("--unlabeled", config.unlabeled)
    out["descriptions"] = _read_descriptions(config.label_descriptions, task, problems)
    if problems:
        raise InputError(problems)
    return out


def _read_descriptions(given: str | None, task: TaskData, problems: list[str]) -> dict | None:
    """--label-descriptions: a JSON object {label: sentence} naming every label (None when not given)."""
    if not given:
        return None
    path = Path(given)
    if not path.is_file():
        problems.append(f"--label-descriptions file '{path}' does not exist.")
        return None
    try:
        descriptions = {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError) as e:
        problems.append(f"--label-descriptions '{path}' is not a JSON object {{label: sentence}}: {e}.")
        return None
    missing = [label for label in task.labels if label not in descriptions]
    if missing:
        example = (_signals.IMAGE_TEXT_TEMPLATE if task.modality == "image" else _signals.EMBEDDING_TEMPLATE)
        problems.append(f"--label-descriptions '{path}' has no sentence for label(s) "
                        f"{', '.join(map(repr, missing))}. Add them, e.g. "
                        f"\"{missing[0]}\": \"{example.format(missing[0])}\"")
    return descriptions


def _read_image_inputs(task: TaskData, config: AdvisorConfig) -> dict:
    """--reference and --unlabeled for an image task: a folder of images (searched recursively) or a
    file listing image paths, one a line (relative to the file's folder); the first
    `_SHIFT_ROWS` are used and must decode. --label-descriptions as for text (the prompts of an
    image-text model's zero-shot)."""
    from ..core._images import IMAGE_SUFFIXES, image_problems, unreadable_message

    problems, out = [], {"descriptions": None, "reference": None, "unlabeled": None}
    out["descriptions"] = _read_descriptions(config.label_descriptions, task, problems)
    for key, flag in (("reference", "--reference"), ("unlabeled", "--unlabeled")):
        given = getattr(config, key)
        if not given:
            continue
        path = Path(given)
        if path.is_dir():
            paths = sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths = [str((path.parent / line.strip()).resolve()) for line in
                     path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        else:
            problems.append(f"{flag} '{given}' does not exist: give a folder of images or a file of image paths.")
            continue
        paths = paths[:_SHIFT_ROWS]
        if not paths:
            problems.append(f"{flag} '{given}' holds no images ({', '.join(IMAGE_SUFFIXES)}).")
            continue
        found = image_problems(paths)
        if any(found):
            problems.append(f"{flag} '{given}': {unreadable_message(found)}.")
        out[key] = paths
    if problems:
        raise InputError(problems)
    return out
