"""The one error type that means "the user gave us something we cannot use".

Every stage raises `InputError` (or a subclass) for bad input; the command line turns it into
exit status 2 and prints its message alone, with no traceback. A check that can find several
problems collects them all and raises once, so the user fixes everything in one round.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(ValueError):
    """Bad input from the user. `problems` holds one sentence per problem found."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)

    @classmethod
    def check(cls, checks: Iterable[tuple[bool, str]]) -> None:
        """Raise one error listing the message of every (ok, message) pair whose ok is false."""
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise cls(problems)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), without a final period."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return f" Did you mean '{lowered[close[0]]}'?" if close else ""
