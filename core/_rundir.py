"""The run directory: the only channel between the stages (see DESIGN.md, "Run directory contract").

Every JSON record is written atomically: to a temporary file in the same folder, flushed to disk,
then renamed over the target, so a reader (the dashboard, a resumed search) never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

# Libraries whose versions go into run.json, read from package metadata (no import needed).
_VERSIONED = ("finetune-advisor", "torch", "transformers", "tokenizers", "scikit-learn", "numpy",
              "optuna", "onnxruntime")


def write_json_atomic(path: str | Path, record: Any) -> Path:
    """Write `record` as indented JSON to `path` atomically (temp file in the same folder + rename).

    Dataclasses are converted with `dataclasses.asdict`; paths become strings.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(record), indent=2, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(target: str | Path):
    """Build a folder beside `target` and swap it in only when the block succeeds.

    Yields a temporary folder in the same parent; on success it replaces `target` (rename away,
    rename in), on any error it is removed and `target` stays as it was, so no reader ever sees
    a half-written folder.
    """
    target = Path(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    old = target.parent / f".{target.name}.{os.getpid()}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    """Read a JSON record written by `write_json_atomic`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide a run's results (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class RunDir:
    """A run directory: RUN/run.json, advice.json, search.json, best_model/, export/.

    Args:
        path: the folder; created (with parents) on first write, not on construction, so a
            command that fails its input checks leaves nothing behind.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    def write(self, name: str, record: Any) -> Path:
        """Write the JSON record `name` (e.g. "advice.json") atomically."""
        return write_json_atomic(self.path / name, record)

    def read(self, name: str) -> Any:
        return read_json(self.path / name)

    def write_run_record(self, *, command: str, configs: dict[str, Any],
                         data_fingerprint: str | None = None) -> Path:
        """Write run.json: what was asked (command line, configs), on what data, with which libraries.

        A later command in the same run directory (advise, then search) adds its own entry under
        "commands" instead of overwriting the earlier one.
        """
        entry = {"command": command, "argv": sys.argv[1:], "configs": configs,
                 "data_fingerprint": data_fingerprint,
                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        record = self.read("run.json") if self.exists("run.json") else {"commands": []}
        record["commands"].append(_jsonable(entry))
        record["data_fingerprint"] = data_fingerprint or record.get("data_fingerprint")
        record["versions"] = library_versions()
        return self.write("run.json", record)
