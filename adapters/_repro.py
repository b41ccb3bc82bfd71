"""Pieces of framework-alone repro scripts (spec NUM.N7): literals for arrays and plain arguments, the
scripts' header and their `show` function. The script itself is rendered from the plan the adapter
runs (plan.py, or a family's own plan record); every script binds `y` (and `grads`, the state after,
where there are some) and prints them with `show`, as float64 lists a test compares with the
adapter's own outcome.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np

HEADER = ("import numpy as np", "nan, inf = float('nan'), float('inf')")


LITERAL_LIMIT = 256  # arrays with more elements are written compressed: a long reduction's 10^4 values


def values(array) -> str:
    """A float64 list of `array` as source: a literal, or for a large array an expression that
    decompresses its bytes (the script rounds it to the run's dtype itself)."""
    array = np.asarray(array, dtype=np.float64)
    if array.size <= LITERAL_LIMIT:
        return repr(array.tolist())
    packed = base64.b64encode(zlib.compress(array.astype("<f8").tobytes(), 9)).decode("ascii")
    return (
        f"np.frombuffer(__import__('zlib').decompress(__import__('base64').b64decode('{packed}')), "
        f"'<f8').reshape({array.shape!r}).tolist()"
    )


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
