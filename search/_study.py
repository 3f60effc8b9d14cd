"""The Optuna storage and study: opening them, checking that a resumed study is the same search,
and counting finished trials.

A study remembers what it searches (space, metric, model, data fingerprint) in its user
attributes; a command that would add trials of another search to it is refused. Storage is an
RDBStorage with a heartbeat: a trial whose process died (kill -9, a lost machine) goes stale after
`grace` seconds and is failed and queued again with the same parameters the next time any worker
starts a trial (optuna's RetryHeartbeatStaleTrialCallback).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from ..core import FAIL_REASON, InputError, mask_url, sqlite_url
from ._config import RETRY_OF

METRIC = "accuracy"
DIRECTION = "maximize"
RETRIES = 3  # a trial killed more often than this is not queued again
STORAGE_ENV = "FINETUNE_ADVISOR_STORAGE"  # a storage URL kept out of command lines and run.json


def storage_url(storage: str | None, run_dir: Path) -> str:
    """The storage URL: the user's, else $FINETUNE_ADVISOR_STORAGE, else sqlite:///RUN/study.db.

    A PostgreSQL URL may leave its password out: the driver (libpq) then reads $PGPASSWORD or
    ~/.pgpass, so the password is never on a command line or in a record.

    Raises:
        InputError: $FINETUNE_ADVISOR_STORAGE is not a URL this search can use (named as the variable).
    """
    if storage:
        return storage
    if os.environ.get(STORAGE_ENV):
        _parse(os.environ[STORAGE_ENV], flag=f"${STORAGE_ENV}")
        return os.environ[STORAGE_ENV]
    return sqlite_url(run_dir)


_EXAMPLE = "sqlite:///path/study.db or postgresql://user@host:5432/dbname"


def _parse(url: str, flag: str = "--storage"):
    """The SQLAlchemy URL, or InputError for something that is not one, or for an in-memory
    database (lost when the process ends: no resume, no second worker)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise InputError(f"{flag} '{mask_url(url)}' is not a database URL. Use {_EXAMPLE}.") from None
    if parsed.drivername.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise InputError(f"{flag} '{mask_url(url)}' is an in-memory database: the study would be lost when the search "
                         "ends, so it could neither resume nor serve a second worker. Give a file, e.g. "
                         "sqlite:///runs/x/study.db, or leave the storage out (RUN/study.db).")
    return parsed


def _sqlite_file(parsed, url: str) -> Path | None:
    """The SQLite database file of `parsed` after checking its folder can hold it (nothing is
    created); None for another database or an in-memory one."""
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    from ..core import check_writable

    db = Path(parsed.database)
    if db.is_dir():
        raise InputError(f"--storage '{mask_url(url)}': '{db}' is a folder; name a database file, e.g. {db / 'study.db'}.")
    check_writable(db.parent, flag=f"--storage '{mask_url(url)}': the folder")
    if db.exists():
        _check_sqlite_file(db)
    return db


def _check_sqlite_file(db: Path) -> None:
    """InputError naming `db` when it is not an SQLite database (random bytes, cut short) or cannot
    be written (read-only, immutable), before any work."""
    import sqlite3

    try:
        with open(db, "ab"):  # an immutable or read-only file refuses this, for root too
            pass
    except OSError as e:
        raise InputError(f"the study '{db}' cannot be written ({e.strerror or e}). Make it writable, or "
                         "give another --out or --storage.") from None
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            connection.execute("PRAGMA quick_check").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        raise InputError(f"the study '{db}' is not a readable SQLite database ({e}): it is damaged or cut "
                         f"short. Move '{db}' away (its trials are lost) and run again, or give another --out or --storage.") from None


def check_storage(url: str, *, heartbeat: int = 30) -> None:
    """Fail early (InputError) on a storage the search could not use: a malformed URL, a folder
    that cannot hold the SQLite file (checked without creating it), a database server that cannot
    be reached or has no driver."""
    parsed = _parse(url)
    if not parsed.drivername.startswith("sqlite"):
        open_storage(url, heartbeat=heartbeat)
    else:
        _sqlite_file(parsed, url)


def open_storage(url: str, *, heartbeat: int = 30):
    """An RDBStorage for `url` with heartbeats and retry of killed trials.

    Raises:
        InputError: a malformed URL, a database driver that is not installed, a server that
            cannot be reached.
    """
    import optuna
    import sqlalchemy.exc

    parsed = _parse(url)
    db = _sqlite_file(parsed, url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = {"connect_args": {"timeout": 60}} if parsed.drivername.startswith("sqlite") else {
        "pool_pre_ping": True}
    attempts = 3 if db is not None else 1  # two processes creating one SQLite file's tables at once: one waits
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=5 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES))
        except (sqlalchemy.exc.NoSuchModuleError, ImportError):
            hint = " Install the PostgreSQL driver: pip install 'finetune-advisor[postgres]'." \
                if parsed.drivername.startswith("postgres") else ""
            raise InputError(f"--storage '{mask_url(url)}': no database driver for '{parsed.drivername}' is "
                             f"installed.{hint} Use {_EXAMPLE}.") from None
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.IntegrityError) as e:
            if attempt + 1 < attempts:  # SQLite: the other process made the tables (or their version row) first
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = str(getattr(e, "orig", e)).strip().splitlines()[0]
            raise InputError(f"--storage '{mask_url(url)}' cannot be reached: {reason}. "
                             "Check host, port, database name and password, and that the server is running.") from None


def open_study(storage, name: str, *, identity: dict, sampler=None, pruner=None):
    """Create the study, or load it when it exists and searches the same thing.

    Args:
        identity: what makes two searches the same (space, metric, model, data fingerprint);
            stored in the study's user attributes on creation and compared on every load.

    Raises:
        InputError: the study exists with another direction or another identity.
    """
    import optuna

    existing = {s.study_name: s for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        summary = existing[name]
        direction = [d.name.lower() for d in summary.directions]
        if direction != [DIRECTION]:
            raise InputError(f"study '{name}' already exists in this storage with direction "
                             f"{'/'.join(direction)}; this search maximizes {METRIC}. "
                             "Give another --study name (or another --out).")
        stored = {k: summary.user_attrs.get(k) for k in identity}
        differ = [f"{k}: stored {stored[k]!r}, now {identity[k]!r}" for k in identity if stored[k] != identity[k]]
        if differ:
            raise InputError(f"study '{name}' already exists and searches something else ("
                             + "; ".join(differ) + "). Resume it with the same settings, or give another --study "
                             "name (or another --out).")
    study = optuna.create_study(storage=storage, study_name=name, direction=DIRECTION, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if name not in existing:
        for key, value in identity.items():
            study.set_user_attr(key, value)
    return study


def check_same_search(url: str, name: str, **identity) -> None:
    """Before any work: InputError when the study `name` already exists in `url` and was made for
    other values of `identity` (e.g. data_fingerprint, model), so `run` refuses before it advises
    instead of after (nothing written). A storage or study that does not exist yet passes."""
    parsed = _parse(url)
    db = _sqlite_file(parsed, url)
    if parsed.drivername.startswith("sqlite") and (db is None or not db.exists()):
        return
    import optuna

    summaries = optuna.study.get_all_study_summaries(open_storage(url), include_best_trial=False)
    stored = next((s.user_attrs for s in summaries if s.study_name == name), None)
    if stored is None:
        return
    differ = [key for key, value in identity.items() if key in stored and stored[key] != value]
    if differ:
        raise InputError(f"study '{name}' in {mask_url(url)} searched other {' and '.join(d.replace('_', ' ') for d in differ)} "
                         f"than this run's, so its trials and best model are not for this one. Give another --out "
                         "(or --study), or the data and model it searched.")


def requeue_dead_trials(study) -> list[str]:
    """Fail the trials left RUNNING by a process of this machine that no longer runs (killed with
    SIGKILL, or by the out-of-memory killer), and queue each again with its parameters, so a resume
    retries them now rather than after the heartbeat's grace period. Returns a note per trial."""
    import socket

    from optuna.trial import TrialState

    from ..core import pid_alive

    host, notes = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or pid == os.getpid() or pid_alive(pid):
            continue
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # optuna has no public call for this
        study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number})
        notes.append(f"trial {t.number} was left running by process {pid}, which has ended: failed, and queued "
                     "again with its parameters")
    return notes


def finished(trials) -> list:
    """Trials that count towards --trials: complete, pruned, or failed by themselves (a raised
    error, a NaN loss, out of memory). A killed trial does not count: it is run again."""
    from optuna.trial import TrialState

    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and FAIL_REASON in t.user_attrs)]


def make_pruner(name: str, max_steps: int, *, min_steps: int = 1):
    """'hyperband' (default), 'median' or 'none', with the trial's reports as the resource: one
    step per `SearchConfig.steps_per_epoch`-th of an epoch, `max_steps` in the longest trial (at
    3 steps per epoch and 4 epochs, Hyperband's rungs fall at 1/3, 1 and 3 epochs), and no trial
    judged before `min_steps` (small data: `core.epoch_scale` epochs, past the dip of fine-tuning
    from the probe's head)."""
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, min_steps), max_resource=max(1, max_steps, min_steps),
                                              reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(0, min_steps - 1))
    return optuna.pruners.NopPruner()
