"""JSON objects as nested dataclasses: the machinery under the run directory's records.

A `Part` is a dataclass whose fields name the keys of one JSON object. `Part.from_json` builds it
from parsed JSON, field by field from the type hints: a field typed as another Part, a list of
them or a dict of them is built the same way, so `AdviceRecord.read(run).probe.accuracy` is an
attribute read all the way down. A required key that is missing, or a value of the wrong kind,
raises InputError naming the file and the key's path (`advice.json: probe.accuracy ...`). Keys a
newer version wrote are kept in `extra` and written back, so an older reader neither breaks on
nor drops them; keys of earlier versions are mapped onto today's fields by `RENAMED`.

Nothing here imports anything heavy: the dashboard reads records through it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._errors import InputError

_NUMBER = (int, float)


@dataclass
class Part:
    """One JSON object; subclasses list its keys as fields (required ones have no default)."""

    RENAMED: ClassVar[dict[str, str]] = {}  # key written by an earlier version -> today's field
    extra: dict = field(default_factory=dict, kw_only=True)  # keys a newer version wrote

    @classmethod
    def from_json(cls, data: Any, *, where: str = "") -> "Part":
        """The part from parsed JSON; InputError naming `where` and the key when it cannot be one."""
        if not isinstance(data, dict):
            raise InputError(f"{where or cls.__name__} must be a JSON object, not {_kind(data)}.")
        data = {cls.RENAMED.get(k, k): v for k, v in data.items()}
        hints = _hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.name != "extra"]
        missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise InputError(f"{where.rstrip(':') or cls.__name__} lacks the entr{'y' if len(missing) == 1 else 'ies'} "
                             f"{', '.join(repr(k) for k in missing)}: it was written by another version or edited.")
        values = {f.name: _build(hints[f.name], data[f.name], _join(where, f.name)) for f in fields if f.name in data}
        names = {f.name for f in fields}
        return cls(**values, extra={k: v for k, v in data.items() if k not in names})

    def to_json(self) -> dict:
        """The object as written: its fields in order, then the keys of `extra`."""
        data = {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**data, **{k: v for k, v in self.extra.items() if k not in data}}

    def unknown_keys(self, where: str = "") -> list[str]:
        """The paths of every key held in `extra`, here and in nested parts (what a newer version wrote)."""
        found = [_join(where, k) for k in self.extra]
        for f in dataclasses.fields(self):
            found += _unknown(getattr(self, f.name), _join(where, f.name))
        return found


def _build(hint: Any, value: Any, where: str) -> Any:
    """`value` as the type `hint` says: Parts built, containers walked, leaves checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, Part):
        return hint.from_json(value, where=where)
    if origin is list or hint is list:
        _expect(isinstance(value, list), where, "a list", value)
        return [_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or hint is dict:
        _expect(isinstance(value, dict), where, "an object", value)
        return {k: _build(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else value
    if hint is float:
        _expect(isinstance(value, _NUMBER) and not isinstance(value, bool), where, "a number", value)
        return float(value)
    if hint is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), where, "a whole number", value)
    elif hint in (str, bool):
        _expect(isinstance(value, hint), where, "a string" if hint is str else "true or false", value)
    return value


def _dump(value: Any) -> Any:
    if isinstance(value, Part):
        return value.to_json()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _unknown(value: Any, where: str) -> list[str]:
    if isinstance(value, Part):
        return value.unknown_keys(where)
    if isinstance(value, list):
        return [k for i, v in enumerate(value) for k in _unknown(v, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [k for key, v in value.items() for k in _unknown(v, f"{where}.{key}")]
    return []


def _expect(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        raise InputError(f"{where} must be {what}, not {_kind(value)}: the file was written by another version "
                         "or edited.")


def _kind(value: Any) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__} ({str(value)[:40]!r})"


def _join(where: str, key: str) -> str:
    """The path of `key` inside `where`: "advice.json: probe.accuracy"."""
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}" if where else key


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
