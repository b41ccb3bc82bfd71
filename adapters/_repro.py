"""Pieces of framework-alone repro scripts (spec NUM.N7): literals for arrays and plain arguments, the
scripts' header and their `show` function. The script itself is rendered from the plan the adapter
runs (plan.py, or a family's own plan record); every script binds `y` (and `grads`, the state after,
where there are some) and prints them with `show`, as float64 lists a test compares with the
adapter's own outcome.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import itertools
import re
import zlib
from collections import OrderedDict

import numpy as np

HEADER = ("import numpy as np", "nan, inf = float('nan'), float('inf')")


LITERAL_LIMIT = 256  # arrays with more elements are written as their recipe, or compressed
# long arrays drawn from a seed, by content: the NumPy source that regenerates them bit for bit (the
# strategies remember each draw), so a repro of a 10^4-value example is a line, not 100 KB
_RECIPES: OrderedDict[bytes, str] = OrderedDict()
RECIPES_KEPT = 4096
# the most recent long draws themselves, so that a framework-alone script's transposed or reshaped copy
# of one (channels last, a flattened batch) is written as that draw transposed or reshaped
_RECENT: OrderedDict[bytes, tuple[np.ndarray, str]] = OrderedDict()
RECENT_KEPT = 64


def _digest(array: np.ndarray) -> bytes:
    """Content and shape: a reshaped copy is another array."""
    data = np.ascontiguousarray(array, dtype="<f8").tobytes() + repr(array.shape).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


def remember(array: np.ndarray, source: str) -> np.ndarray:
    """Note that `source` (an expression over `np`) computes `array`; returns `array`. Only long arrays
    are noted, the most recent RECIPES_KEPT of them."""
    if array.size > LITERAL_LIMIT:
        key = _digest(array)
        _RECIPES[key] = source
        _RECIPES.move_to_end(key)
        while len(_RECIPES) > RECIPES_KEPT:
            _RECIPES.popitem(last=False)
        _RECENT[key] = (array, source)
        _RECENT.move_to_end(key)
        while len(_RECENT) > RECENT_KEPT:
            _RECENT.popitem(last=False)
    return array


def source_of(array: np.ndarray) -> str | None:
    """The source remembered for `array` (unchecked), or None."""
    return _RECIPES.get(_digest(array)) if array.size > LITERAL_LIMIT else None


PATCHED_AT_MOST = 16  # a draw with this few values replaced (a NaN put in) is written as the draw, patched


def _literal(value: float) -> str:
    return f"float({str(value)!r})" if not np.isfinite(value) else repr(float(value))


def _rearranged(array: np.ndarray) -> str | None:
    """Source for `array` as a recent draw reshaped, with its axes permuted, or with a few values
    replaced (a special value put in), or None."""
    for drawn, source in reversed(_RECENT.values()):
        if drawn.shape == array.shape:
            differ = np.flatnonzero(~((drawn == array) | (np.isnan(drawn) & np.isnan(array))))
            if 0 < differ.size <= PATCHED_AT_MOST:
                at = [int(i) for i in differ]
                values = ", ".join(_literal(v) for v in array.ravel()[differ])
                return (
                    f"(lambda a: (np.put(a, {at!r}, [{values}]), a)[1])(np.array({source}, dtype=np.float64))"
                )
            continue
        if drawn.size != array.size:
            continue
        if np.array_equal(drawn.reshape(array.shape), array, equal_nan=True):
            return f"np.reshape({source}, {array.shape!r})"
        for axes in itertools.permutations(range(drawn.ndim)):
            if tuple(drawn.shape[a] for a in axes) == array.shape and np.array_equal(
                np.transpose(drawn, axes), array, equal_nan=True
            ):
                return f"np.transpose({source}, {axes!r})"
    return None


def _recipe(array: np.ndarray) -> str | None:
    """The remembered source of `array` (or of a recent draw it rearranges), checked to recompute it
    exactly (else None)."""
    source = _RECIPES.get(_digest(array)) or _rearranged(array)
    if source is None:
        return None
    with np.errstate(all="ignore"):
        again = np.asarray(eval(source, {"np": np}), dtype=np.float64)  # our own source, from remember()
    return source if again.shape == array.shape and np.array_equal(again, array, equal_nan=True) else None


def _narrowest(array: np.ndarray) -> str:
    """The narrowest IEEE dtype holding every value of `array` exactly (its bytes are then fewer)."""
    with np.errstate(all="ignore"):
        for dtype in ("<f2", "<f4"):
            if np.array_equal(array.astype(dtype).astype(np.float64), array, equal_nan=True):
                return dtype
    return "<f8"


def values(array) -> str:
    """A float64 list of `array` as source: a literal, or for a large array the expression that drew
    it (a seeded generator) or else one that decompresses its bytes, in the narrowest dtype that holds
    them exactly (the script rounds it to the run's dtype itself)."""
    array = np.asarray(array, dtype=np.float64)
    if array.size <= LITERAL_LIMIT:
        return repr(array.tolist())
    source = _recipe(array)
    if source is not None:
        return f"np.asarray({source}, dtype=np.float64).tolist()"
    dtype = _narrowest(array)
    packed = base64.b64encode(zlib.compress(array.astype(dtype).tobytes(), 9)).decode("ascii")
    return (
        f"np.frombuffer(__import__('zlib').decompress(__import__('base64').b64decode('{packed}')), "
        f"'{dtype}').astype(np.float64).reshape({array.shape!r}).tolist()"
    )


_PACKED = re.compile(
    r"np\.frombuffer\(__import__\('zlib'\)\.decompress\("
    r"__import__\('base64'\)\.b64decode\('([A-Za-z0-9+/=]*)'\)\), "
    r"'(<f[248])'\)\.astype\(np\.float64\)\.reshape\(([0-9, ()]*)\)\.tolist\(\)"
)


def with_recipes(script: str) -> str:
    """`script` (written elsewhere: a framework-alone script comes from the adapter's isolated child)
    with each compressed array that this process drew written as its draw instead."""

    def shorter(match):
        data, dtype, shape = match.groups()
        array = np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype).astype(np.float64)
        source = _recipe(array.reshape(ast.literal_eval(shape)))
        return match.group(0) if source is None else f"np.asarray({source}, dtype=np.float64).tolist()"

    return _PACKED.sub(shorter, script)


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
