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


PATCHED_AT_MOST = 16  # a draw with this few runs of values replaced (a NaN put in, a group made constant)
# is written as the draw, patched


def _literal(value: float) -> str:
    return f"float({str(value)!r})" if not np.isfinite(value) else repr(float(value))


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _patch(drawn: np.ndarray, array: np.ndarray, source: str) -> str | None:
    """Source for `array` as the draw `drawn` (same shape) with at most PATCHED_AT_MOST runs of
    consecutive values replaced, each run by one value; None where more differ (or nothing does)."""
    new = array.ravel()
    differ = np.flatnonzero(~_same(drawn.ravel(), new))
    if differ.size == 0:
        return None
    # a run breaks where the flat index jumps or the value put in changes
    breaks = np.flatnonzero((np.diff(differ) != 1) | ~_same(new[differ[1:]], new[differ[:-1]])) + 1
    starts = np.concatenate([[0], breaks])
    if starts.size > PATCHED_AT_MOST:
        return None
    stops = np.concatenate([breaks, [differ.size]])
    spans = ", ".join(f"{differ[a]}:{differ[b - 1] + 1}" for a, b in zip(starts, stops, strict=True))
    values = ", ".join(_literal(v) for v in new[differ[starts]])
    counts = [int(b - a) for a, b in zip(starts, stops, strict=True)]
    return (
        f"(lambda a: (np.put(a, np.r_[{spans}], np.repeat([{values}], {counts!r})), a)[1])"
        f"(np.array({source}, dtype=np.float64))"
    )


def _rearranged(array: np.ndarray) -> str | None:
    """Source for `array` as a recent draw reshaped, with its axes permuted, or with a few runs of values
    replaced (a special value put in, a group made constant), or None."""
    for drawn, source in reversed(_RECENT.values()):
        if drawn.shape == array.shape:
            patched = _patch(drawn, array, source)
            if patched is not None:
                return patched
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


def _literal_list(array: np.ndarray) -> str:
    """`array` as a list literal; a float32 or float16 draw in its own dtype's shortest digits
    (0.99999565, not 0.9999956488609314) where that saves a quarter, checked to read back exactly."""
    plain = repr(array.tolist())
    dtype = _narrowest(array)
    if dtype == "<f8" or array.ndim == 0:
        return plain
    digits = ", ".join(map(str, array.astype(dtype).ravel()))
    shape = "" if array.ndim == 1 else f".reshape({array.shape!r})"
    narrow = f"np.array([{digits}], '{dtype}').astype(np.float64){shape}.tolist()"
    if len(narrow) > 0.75 * len(plain):
        return plain
    with np.errstate(all="ignore"):
        again = np.asarray(eval(narrow, {"np": np, "nan": np.nan, "inf": np.inf}), dtype=np.float64)
    return narrow if np.array_equal(again, array, equal_nan=True) else plain


def values(array) -> str:
    """A float64 list of `array` as source: a literal (in the narrowest dtype's shortest digits where
    that is much shorter), or for a large array the expression that drew
    it (a seeded generator) or else one that decompresses its bytes, in the narrowest dtype that holds
    them exactly (the script rounds it to the run's dtype itself)."""
    array = np.asarray(array, dtype=np.float64)
    if array.size <= LITERAL_LIMIT:
        return _literal_list(array)
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
