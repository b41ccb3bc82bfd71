"""Framework-alone repro scripts: the framework's own calls with literal inputs, and no normconf, for
a bug report upstream (spec NUM.N7).

An adapter writes one by re-running the example while `recorded_calls` wraps the framework entry
points it uses (functions and layer classes) and its own call helper: the recorded arguments are
what the script spells out, so the script cannot drift from what the adapter really ran. Every
script binds `y` (and `grads`, `state` where there are some) and prints them with `show`, as
float64 lists that a test can compare with the adapter's own outcome.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

HEADER = ("import numpy as np", "nan, inf = float('nan'), float('inf')")


class Call(NamedTuple):
    name: str
    args: tuple
    kwargs: dict
    result: Any


def recorded_calls(targets, run: Callable[[], Any]) -> list[Call]:
    """The calls `run()` makes to `targets` ((namespace, attribute name) pairs: module functions,
    layer classes, an adapter's helper), in order, with their results. The originals are restored after."""
    calls, originals = [], [(namespace, name, getattr(namespace, name)) for namespace, name in targets]

    def recording(name, original):
        def call(*args, **kwargs):
            result = original(*args, **kwargs)
            calls.append(Call(name, args, kwargs, result))
            return result

        return call

    try:
        for namespace, name, original in originals:
            setattr(namespace, name, recording(name, original))
        run()
    finally:
        for namespace, name, original in originals:
            setattr(namespace, name, original)
    return calls


def only(calls: list[Call], *names: str) -> Call | None:
    """The single recorded call to one of `names` (None when there are none or several: no repro)."""
    found = [c for c in calls if c.name in names]
    return found[0] if len(found) == 1 else None


def values(array) -> str:
    """A float64 literal list of `array` (the script rounds it to the run's dtype itself)."""
    return repr(np.asarray(array, dtype=np.float64).tolist())


class Source(str):
    """Source text standing for an argument that has no literal (`nnx.Rngs(0)`)."""


def plain(value) -> str:
    """Python source for a plain argument (numbers, strings, tuples, lists, dicts, None, Source)."""
    if isinstance(value, Source):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return f"np.array({values(value)})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(map(plain, value))
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{plain(k)}: {plain(v)}" for k, v in value.items()) + "}"
    text = repr(value)
    if text.startswith("<"):
        raise ValueError(f"no literal for {text}")
    return text


def arguments(args, kwargs) -> str:
    return ", ".join([*map(plain, args), *(f"{key}={plain(value)}" for key, value in kwargs.items())])


def function_call(function: str, call: Call, tensor, backward: str | None) -> list[str]:
    """A recorded function call written out: each tensor argument a named literal (`tensor(value)` gives
    (source, differentiable), or None for a plain argument), then y = the call (its first output when it
    returns several), the gradients of the differentiable ones after `backward`, and the other tensors
    after the call (running statistics updated in place)."""
    lines, tensors = [], []

    def source(value, label):
        made = tensor(value)
        if made is None:
            return plain(value)
        lines.append(f"{label} = {made[0]}")
        tensors.append((label, made[1]))
        return label

    arguments = [source(arg, f"a{i}") for i, arg in enumerate(call.args)]
    arguments += [f"{key}={source(value, key)}" for key, value in call.kwargs.items()]
    first = "[0]" if isinstance(call.result, (tuple, list)) else ""
    lines += [f"y = {function}({', '.join(arguments)}){first}", "show('y', y)"]
    if backward is not None:
        lines += [
            backward,
            "show('grad', {" + ", ".join(f"{t!r}: {t}.grad" for t, grad in tensors if grad) + "})",
        ]
    lines.append("show('after', {" + ", ".join(f"{t!r}: {t}" for t, grad in tensors[1:] if not grad) + "})")
    return lines


def show_function(to_numpy: str) -> list[str]:
    """The script's `show(name, value)`; `to_numpy` converts one framework array named `v`."""
    return [
        "def show(name, value):",
        f"    to_numpy = lambda v: np.asarray({to_numpy}, dtype=np.float64)",
        "    if isinstance(value, (dict, list, tuple)):",
        "        for key, v in (value.items() if isinstance(value, dict) else enumerate(value)):",
        "            show(f'{name}[{key!r}]', v)",
        "    elif value is not None:",
        "        print(name, '=', to_numpy(value).tolist())",
    ]


def script(lines) -> str:
    return "\n".join(lines) + "\n"
