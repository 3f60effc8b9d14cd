"""The run directory: the only channel between the stages (RUN/run.json, advice.json, study.db,
search.json, best_model/, export/; each record's type is in core/_records.py)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._errors import InputError
from ._files import check_writable, jsonable, library_versions, mask_secrets, read_json, write_json_atomic
from ._records import RUN_FILE, RunCommand, RunData, RunRecord


class RunDir:
    """A run directory: RUN/run.json, advice.json, search.json, best_model/, export/.

    Args:
        path: the folder; created (with parents) on first write, not on construction, so a
            command that fails its input checks leaves nothing behind.
    """

    def __init__(self, path: str | Path):
        if not str(path).strip():
            raise InputError("--out is empty: give the run directory's path, e.g. runs/demo.")
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
        """The JSON record `name`; InputError naming the file when it is not one."""
        return read_json(self.path / name)

    def check(self, flag: str = "--out") -> None:
        """Fail early (InputError) when the folder cannot be written or its run.json is broken, so
        a command finds out before its work, not after."""
        check_writable(self.path, flag=flag)
        self.run_record()

    def run_record(self) -> RunRecord:
        """run.json as written so far (an empty record when there is none)."""
        if not self.exists(RUN_FILE):
            return RunRecord()
        try:
            return RunRecord.read(self.file(RUN_FILE))
        except InputError as e:
            raise InputError(f"{e} Remove '{self.file(RUN_FILE)}' (it only records what was run) and run "
                             "again.") from None

    def write_run_record(self, *, command: str, configs: dict[str, Any], data_fingerprint: str | None = None,
                         data_source: str | None = None, data_config: Any = None,
                         model_changes: list[str] = ()) -> Path:
        """Write run.json: what was asked (command line, configs), on what data, with which libraries.

        A later command in the same run directory (advise, then search) adds its own entry under
        "commands" instead of overwriting the earlier one. With `data_source`, the data the run
        uses (source, how it was read, fingerprint) is recorded for later stages: `load_task`.
        `model_changes` says what loading changed in the model (`Backbone.changes`, e.g. a BatchNorm
        momentum put in PyTorch's convention).
        """
        record = self.run_record()
        record.commands.append(RunCommand(
            command=command, argv=mask_secrets(sys.argv[1:]), configs=mask_secrets(jsonable(configs)),
            data_fingerprint=data_fingerprint, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model_changes=list(model_changes)))
        record.data_fingerprint = data_fingerprint or record.data_fingerprint
        if data_source is not None:
            record.data = RunData(source=data_source, config=jsonable(data_config), fingerprint=data_fingerprint)
        record.versions = library_versions()
        return record.write(self.file(RUN_FILE))

    def load_task(self):
        """The TaskData this run was made on (see `data_used`).

        Raises:
            InputError: run.json does not say, or the data changed since (its fingerprint differs).
        """
        from ._data import DataConfig, load_task

        used = self.run_record().data_used()
        if used is None:
            raise InputError(f"'{self.file(RUN_FILE)}' does not say which data this run used: give --data D.")
        source, fingerprint = used.source, used.fingerprint
        try:
            config = DataConfig(**used.config)
        except TypeError:
            raise InputError(f"'{self.file(RUN_FILE)}' records the data's settings in a form this version does "
                             "not know: give --data D.") from None
        task = load_task(source, config)
        if fingerprint and task.fingerprint != fingerprint:
            raise InputError(f"the run's data '{source}' changed since it was used here (its fingerprint differs): "
                             "give --data D to say which data you mean.")
        return task
