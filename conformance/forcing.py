"""Forced draws: the labelled-draw wrapper (`composite`) through which a covering example or a program
pool entry forces labels, the covering examples' `data` (Cover) and the context that holds what is
forced (the regimes are in regimes.py)."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools

from hypothesis import HealthCheck, Phase, example, find, settings
from hypothesis import strategies as st
from hypothesis.internal.escalation import current_pytest_item

from . import clock
from .regimes import COVER_PROGRAMS, COVERS, POOL, PROGRAM_LABEL, VALUE_LABELS, Entry

# --- covering examples: each regime at least once per property, whatever the random draws do -------

_FORCED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("forced", default=None)
# the value kinds a property asked `case` for (None: all of VALUE_KINDS)
_KINDS: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("kinds", default=None)
_SIMPLEST = settings(
    database=None,
    derandomize=True,
    max_examples=1,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)

_POOLED: contextvars.ContextVar[bool] = contextvars.ContextVar("pooled", default=False)


@contextlib.contextmanager
def programs(*, pooled: bool):
    """Draw configurations from the program pool (`pooled`: the adapter compiles a program per
    configuration and shape) or freely, within the block."""
    token = _POOLED.set(pooled)
    try:
        yield
    finally:
        _POOLED.reset(token)


def _cover_labels(regime: str) -> dict:
    """What a cover forces: its regime's labels, or for a compiled framework (pooled) the configuration
    of its pool entry with the regime's value labels."""
    if not _POOLED.get():
        return COVERS[regime]
    values = {k: v for k, v in COVERS[regime].items() if k in VALUE_LABELS}
    return Entry({**POOL[COVER_PROGRAMS[regime]], **values})


def _fitted(strategy, value):
    """(True, what `strategy` draws for a forced `value`) where that is cheap to tell (sampled_from:
    the value itself; integers: the nearest in range; permutations: a permutation of its values), or
    (False, None) where it cannot draw it."""
    inner = getattr(strategy, "wrapped_strategy", strategy)
    if hasattr(inner, "elements"):
        found = any(value == element and type(value) is type(element) for element in inner.elements)
        return found, value if found else None
    if hasattr(inner, "start") and hasattr(inner, "end"):
        return isinstance(value, int), min(max(value, inner.start), inner.end)
    if hasattr(inner, "values"):  # permutations
        found = sorted(value) == sorted(inner.values)
        return found, value if found else None
    return True, value


_FIRST: dict = {}


def _first(strategy):
    """The simplest value of a primitive strategy (cached by what it draws)."""
    key = _identity(strategy)
    if key not in _FIRST:
        with current_pytest_item.with_value(None):
            _FIRST[key] = find(strategy, _anything, settings=_SIMPLEST)
    return copy.deepcopy(_FIRST[key])


class Cover:
    """The `data` of one covering example: each draw is the strategy's simplest example with the
    regime's labels forced (deterministic and cached, so a cover costs one call of the property)."""

    def __init__(self, regime: str):
        self.regime = regime

    def __repr__(self) -> str:
        return f"Cover({self.regime!r})"

    def draw(self, strategy, label=None):
        with clock.timed("draw"):
            key = f"{self.regime} (pooled)" if _POOLED.get() else self.regime
            return copy.deepcopy(_simplest(strategy, key, _cover_labels(self.regime)))


_SIMPLE: dict = {}


def _anything(_) -> bool:
    """find()'s condition: a named function, not a lambda - hypothesis describes a lambda by parsing its
    source with `ast`, and a Ctrl-C arriving inside that parse surfaces as a SystemError, not an
    interrupt (seen: "AST constructor recursion depth mismatch")."""
    return True


def _identity(strategy):
    """A cache key naming what `strategy` draws: a builder and its arguments (a declaration by identity,
    as adapters are loaded once) - repr() of a strategy with a declaration costs milliseconds."""
    function = getattr(strategy, "function", None)
    if function is None:
        return repr(strategy)
    parts = (*strategy._LazyStrategy__args, *sorted(strategy._LazyStrategy__kwargs.items()))
    plain = (str, int, float, tuple, type(None))
    return (function, tuple(p if isinstance(p, plain) else id(p) for p in parts))


def _simplest(strategy, regime: str, forced: dict):
    """The strategy's first (simplest) example under the `forced` labels (of `regime`), once per
    strategy."""
    key = (_identity(strategy), regime)
    if key not in _SIMPLE:
        token = _FORCED.set(forced)
        try:
            # outside the running pytest item: find() stops by raising, and hypothesis formats that
            # through the item's failure report (pytest parsing source with ast, slow, and a Ctrl-C in
            # that parse surfaced as SystemError instead of an interrupt)
            with current_pytest_item.with_value(None):
                _SIMPLE[key] = find(strategy, _anything, settings=_SIMPLEST)
        finally:
            _FORCED.reset(token)
    return _SIMPLE[key]


def covering(test):
    """Run `test` (a @given(data=st.data()) property) on every regime of COVERS before its random
    draws: the quick profile then reaches each regime in every property, norm and dtype."""
    for regime in reversed(COVERS):
        test = example(data=Cover(regime))(test)
    return test


def composite(builder):
    """st.composite whose labelled draws a covering example or a pool entry can force (COVERS, PROGRAMS).
    `draw(inner, name=...)` names a configuration draw for the pool only: hypothesis sees it unlabelled,
    so naming it leaves the random draws as they were."""

    @st.composite
    @functools.wraps(builder)
    def strategy(draw, *args, **kwargs):
        forced = _FORCED.get() or {}
        pooled = _POOLED.get()

        def drawing(inner, label=None, name=None):
            key = label or name
            if key in forced:
                if not isinstance(forced, Entry):
                    return forced[key]
                fits, value = _fitted(inner, forced[key])
                if fits:
                    return value
            if pooled and key is not None and key not in VALUE_LABELS and key != PROGRAM_LABEL:
                return _first(inner)
            return draw(inner, label=label)

        with clock.timed("draw"):
            return builder(drawing, *args, **kwargs)

    return strategy
