"""Adapters: each framework implementation behind the protocol of `base.Adapter`.

One folder per framework family (torch/, tensorflow/, keras/, jax/, onnx/, paddle/, mlx/), each with
its declarations (sources pinned), runtime, adapters, their cost and the family's known divergences
(`known.py`). Every adapter, built-in or not, is found the same way: an entry point of the group
`normconf.adapters` (the built-in ones are declared in normconf's own pyproject.toml), so listing them
imports no framework; an adapter's module is imported only when it is used, and its framework only
when it runs. Plug-ins (your own implementations, `plugin.py`) are named by their entry point or by
where they live - "path/file.py[:obj]" or "module:obj".
"""

from __future__ import annotations

import os
from functools import lru_cache

from .base import NORMS, Adapter, Convention, NormDeclaration, Outcome, Unsupported


class UnknownAdapter(KeyError):
    """An adapter name the registry does not hold."""


ISOLATE = (
    "NORMCONF_ISOLATE"  # set (to the per-call timeout in seconds, or "on"): every call in a child process
)
DISTRIBUTION = "normconf"  # the distribution whose entry points are the built-in adapters


@lru_cache(maxsize=None)
def get(name: str) -> Adapter:
    """The adapter called `name` (its framework is not imported until it runs), or the plug-in it names;
    with NORMCONF_ISOLATE set, a proxy running its calls in a child process (crash and hang isolation)."""
    from . import _isolated

    adapter = load(name)
    setting = os.environ.get(ISOLATE, "")
    if not setting or _isolated.in_child():
        return adapter
    return _isolated.IsolatedAdapter(adapter, None if setting == "on" else float(setting))


@lru_cache(maxsize=None)
def load(name: str) -> Adapter:
    """The adapter itself, never a proxy (its declarations, cost and family are read from it)."""
    from . import plugin

    if name in plugin.entry_points():
        return plugin.load_entry_point(name)
    if plugin.is_spec(name):
        return plugin.load(name)
    raise UnknownAdapter(
        f"unknown adapter {name!r}; known: {', '.join(names())} "
        "(or a plug-in: path/file.py[:obj], module:obj)"
    )


@lru_cache(maxsize=None)
def built_in() -> tuple[str, ...]:
    """The adapters normconf ships (its own entry points), sorted by name (cached: reading each entry
    point's distribution metadata costs milliseconds, and the harness asks on every raised call)."""
    from . import plugin

    return tuple(
        sorted(name for name, point in plugin.entry_points().items() if _distribution(point) == DISTRIBUTION)
    )


def accumulation(name: str, norm: str, dtype: str) -> str:
    """The dtype adapter `name` declares its statistics of `norm` in for a `dtype` input (`dtype`
    itself where it declares none, or where the registry holds no such adapter: a test's stand-in)."""
    try:
        declaration = load(name).declarations.get(norm)
    except Exception:
        return dtype
    return declaration.accumulation.get(dtype, dtype) if declaration is not None else dtype


def names() -> list[str]:
    """The built-in adapters, then the installed plug-ins' entry points (sorted)."""
    from . import plugin

    ours = built_in()
    return [*ours, *sorted(set(plugin.entry_points()) - set(ours))]


def cost(name: str) -> float:
    """The adapter's relative cost of a quick-profile run (Adapter.cost; 1 where it says nothing)."""
    try:
        return float(load(name).cost)
    except (UnknownAdapter, ImportError):
        return 1.0


def _distribution(point) -> str | None:
    dist = getattr(point, "dist", None)
    return None if dist is None else (dist.metadata["Name"] or "").lower()


__all__ = [
    "NORMS",
    "accumulation",
    "Adapter",
    "Convention",
    "NormDeclaration",
    "Outcome",
    "Unsupported",
    "UnknownAdapter",
    "built_in",
    "cost",
    "get",
    "load",
    "names",
]


@lru_cache(maxsize=None)
def known_divergences() -> tuple:
    """Every family's known divergences: the `KNOWN` of each family folder's known.py, the families in
    name order - what the registry hands the suite (conformance/divergences.py), which never looks for
    them itself."""
    import importlib
    import importlib.util
    import pkgutil

    entries: list = []
    for family in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg):
        module = f"{__name__}.{family}.known"
        if importlib.util.find_spec(module) is not None:
            entries += importlib.import_module(module).KNOWN
    return tuple(entries)
