"""Files the stages write: JSON records and folders, atomically; secrets masked; library versions.

Every JSON record is written atomically: to a temporary file in the same folder, flushed to disk,
then renamed over the target, so a reader (the dashboard, a resumed search) never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from ._errors import InputError, first_line

# Libraries whose versions go into run.json, read from package metadata (no import needed).
_VERSIONED = ("finetune-advisor", "torch", "transformers", "tokenizers", "scikit-learn", "numpy",
              "optuna", "onnxruntime")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, record: Any) -> Path:
    """Write `record` as indented JSON to `path` atomically (temp file in the same folder + rename),
    readable as a plain write would leave it (the umask's mode, not the temp file's 0600), so a
    deploy folder copied to a server whose service runs as another user can read its labels.

    Dataclasses are converted with `dataclasses.asdict`; paths become strings.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(record), indent=2, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(target: str | Path, *, marker: str, flag: str = "--out"):
    """Build a folder beside `target` and swap it in only when the block succeeds.

    Yields a temporary folder in the same parent; on success it replaces `target` (rename away,
    rename in), on any error it is removed and `target` stays as it was, so no reader ever sees
    a half-written folder. Temporary folders left by a killed process (`.NAME.PID.tmp`) are
    removed first.

    Args:
        target: the folder to (re)place.
        marker: the file that only this tool writes inside such a folder (e.g. "export.json");
            an existing `target` without it is someone else's and is never replaced.
        flag: how the user named `target`, for the error message.

    Raises:
        InputError: `target` is a file, or a non-empty folder this tool did not write.
    """
    target = Path(target)
    check_replaceable(target, marker=marker, flag=flag)
    clean_stale_temp(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    old = target.parent / f".{target.name}.{os.getpid()}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o777 & ~_umask())
    try:
        yield tmp
        check_replaceable(target, marker=marker, flag=flag)  # still ours after the work
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable(target: str | Path, *, marker: str, flag: str = "--out") -> None:
    """Raise InputError unless `target` is absent, an empty folder, or a folder holding `marker`
    (one this tool wrote), and its parent can be written."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InputError(f"{flag} '{target}' is a file, not a folder. Give a new folder's path, or remove the file.")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise InputError(f"{flag} '{target}' is a folder that finetune-advisor did not write (it has no {marker}), "
                         "so it is left untouched. Give a new or empty folder, or remove this one yourself.")
    check_writable(target, flag=flag)


def check_writable(path: str | Path, *, flag: str = "--out") -> None:
    """Raise InputError unless the folder `path` exists and can be written, or can be created.

    The nearest existing ancestor is tried by creating (and removing) a temporary file in it, so
    read-only folders and file systems (including /proc) are found before any work is done.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} '{path}' is a file, not a folder. Give a folder's path.")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{flag} '{path}': '{probe}' is a file, so no folder can be made below it. Give another path.")
    try:
        fd, name = tempfile.mkstemp(prefix=".finetune-advisor-probe.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise InputError(f"{flag} '{path}' cannot be written ({e.strerror or e} in '{probe}'). "
                         "Give a folder you can write to.") from None


def clean_stale_temp(target: str | Path) -> list[Path]:
    """Remove `.NAME.PID.tmp` / `.old` folders beside `target` left by processes that no longer run
    (a kill -9 during a save); those of live processes are another worker's work in progress."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.(tmp|old)$")
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def read_json(path: str | Path, *, expect: type | None = dict) -> Any:
    """Read a JSON record written by `write_json_atomic`.

    Raises:
        InputError: the file cannot be read, is not JSON, or (with `expect`) holds another type;
            the message names the file.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"'{path}' does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"'{path}' is not a readable JSON record ({first_line(e)}). "
                         "Remove it and run the command that writes it again.") from None
    if expect is not None and not isinstance(value, expect):
        raise InputError(f"'{path}' holds a JSON {type(value).__name__}, not the {expect.__name__} this "
                         "tool writes. Remove it and run the command that writes it again.")
    return value


# Query parameters of a database URL that carry a secret.
_SECRET_KEYS = ("password", "passwd", "pwd", "sslpassword", "secret", "token")
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"]+)")


def mask_url(url: str) -> str:
    """`url` with its password hidden, in the user part and in query parameters (`?password=`)."""
    masked = re.sub(r"(?<=://)([^/@\s:]*):([^/@\s]*)@", lambda m: f"{m.group(1)}:***@", url)
    keys = "|".join(_SECRET_KEYS)
    return re.sub(rf"(?i)(?<=[?&;])({keys})=[^&;\s]*", lambda m: f"{m.group(1)}=***", masked)


def mask_secrets(value: Any) -> Any:
    """`value` (strings, lists, dicts) with every URL password masked (see `mask_url`)."""
    if isinstance(value, str):
        return _URL.sub(lambda m: mask_url(m.group(1)), value) if "://" in value else value
    if isinstance(value, dict):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
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


def default_cache_dir() -> Path:
    """$FINETUNE_ADVISOR_CACHE, else ~/.cache/finetune-advisor."""
    return Path(os.environ.get("FINETUNE_ADVISOR_CACHE", "~/.cache/finetune-advisor")).expanduser()
