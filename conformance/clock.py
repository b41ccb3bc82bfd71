"""Where a cell's time goes: seconds per phase, summed over its examples (the result record's `time`).

The phases are the suite's own work around each framework call - drawing the example, the float64
reference, the tolerance budget, judging a failure against the known divergences - the framework
call itself, and (with isolation) the round trip to the adapter's child beyond the child's own time.
Only the outermost phase counts where phases nest (the budget runs the reference), so the phases and
`engine` (hypothesis' own work and the rest: the cell's wall time less the phases) sum to the whole.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from contextlib import contextmanager

PHASES = ("draw", "framework", "ipc", "reference", "budget", "judge")

_spent: Counter = Counter()
_depth = 0


@contextmanager
def timed(phase: str):
    """Count the block's wall time to `phase`, unless an enclosing phase already counts it."""
    global _depth
    if _depth:
        yield
        return
    _depth, started = 1, time.perf_counter()
    try:
        yield
    finally:
        _depth = 0
        _spent[phase] += time.perf_counter() - started


def move(seconds: float, source: str, destination: str) -> None:
    """Re-attribute `seconds` already counted to `source` (an isolated call's round trip beyond the
    child's own time: framework -> ipc)."""
    seconds = min(max(seconds, 0.0), _spent[source])
    _spent[source] -= seconds
    _spent[destination] += seconds


def take(total: float) -> dict:
    """The phases since the last take, with `engine` = `total` (the cell's wall time) less their sum."""
    global _depth
    spent = {phase: round(_spent[phase], 4) for phase in PHASES}
    spent["engine"] = round(max(total - sum(_spent.values()), 0.0), 4)
    _spent.clear()
    _depth = 0
    return spent


def phase(name: str):
    """Decorator: the function's calls count to phase `name`."""

    def decorate(function):
        @functools.wraps(function)
        def timed_call(*args, **kwargs):
            with timed(name):
                return function(*args, **kwargs)

        return timed_call

    return decorate
