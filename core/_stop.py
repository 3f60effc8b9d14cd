"""Stopping cleanly on Ctrl-C (SIGINT) or SIGTERM (`timeout`, systemd, docker, Kubernetes).

Inside `stop_on_signals()` a signal only records that a stop was asked for; the work checks
(`check_stop`) where it can stop cleanly: training between two batches, the search between two
trials. Nothing is raised from the signal handler itself, since an exception raised there lands
wherever Python happens to be: in a garbage-collection callback (sqlalchemy's) it is printed as
"Exception ignored …" with a traceback and dropped, and while optuna records a finished trial it
breaks the study. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_asked: list[int] = []  # the signals received since stop_on_signals() was entered
_installed = [False]  # the handlers are in place (a nested stop_on_signals() block keeps them)


class Stopped(KeyboardInterrupt):
    """The work stopped because of a signal; `exit_status` is the shell's 128 + its number, `note`
    what was kept and how to go on (the command line prints both on one line)."""

    def __init__(self, signum: int = signal.SIGINT, note: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.note = signum, note

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def what(self) -> str:
        return "interrupted (Ctrl-C)" if self.signum == signal.SIGINT else f"stopped ({signal.Signals(self.signum).name})"


def check_stop() -> None:
    """Raise Stopped when a stop was asked for: call it where the work can stop cleanly."""
    if _asked:
        raise Stopped(_asked[0])


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM ask for a stop (see `check_stop`) instead of raising; a second one raises
    Stopped at once. Only the main thread can install handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread() or _installed[0]:
        yield
        return

    def handler(signum, frame):
        _asked.append(signum)
        if len(_asked) > 1:
            raise Stopped(_asked[0])

    _asked.clear()
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    _installed[0] = True
    try:
        yield
    finally:
        _installed[0] = False
        for s, h in previous.items():
            signal.signal(s, h)
        _asked.clear()


@contextlib.contextmanager
def raise_on_sigterm():
    """Inside the block SIGTERM raises Stopped as Ctrl-C raises KeyboardInterrupt, so a terminated
    command unwinds (its temporary files and folders are removed) instead of dying where it stands."""
    def handler(signum, frame):
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
