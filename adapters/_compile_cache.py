"""The persistent compilation cache of compiled frameworks (JAX and Keras on JAX): on by default.

The suite compiles one program per configuration and shape drawn from its program pool; a repeated run
loads them from disk instead of compiling them again. The cache lives in the user's cache folder, one
folder per jax/jaxlib release (a release never reads another's entries): `~/.cache/normconf/jax-<jax>-
<jaxlib>` (`$XDG_CACHE_HOME` honoured), or the folder `NORMCONF_JAX_CACHE` names. `NORMCONF_COMPILE_CACHE=0`
(`--no-compile-cache`) turns it off.

A cache never changes a verdict: JAX recompiles where an entry cannot be read (it warns), and an isolated
child that dies while the cache is on is re-run once without it (`_isolated`), the entries that child
wrote discarded (`discard_since`) - jaxlib 0.10.2 once segfaulted serializing an entry.
"""

from __future__ import annotations

import os
from pathlib import Path

SWITCH = "NORMCONF_COMPILE_CACHE"  # "0": off
FOLDER = "NORMCONF_JAX_CACHE"  # a folder of one's own instead of the default


def enabled(env: dict | None = None) -> bool:
    """Whether the cache is on in this process's environment (with `env`'s variables over it)."""
    value = {**os.environ, **(env or {})}.get(SWITCH, "1")
    return value.strip().lower() not in ("0", "off", "false", "no")


def folder(jax_version: str, jaxlib_version: str) -> Path:
    """Where the cache of this jax/jaxlib release lives."""
    own = os.environ.get(FOLDER, "").strip()
    if own:
        return Path(own)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "normconf" / f"jax-{jax_version}-{jaxlib_version}"


def configure_jax(jax) -> Path | None:
    """Before the first compilation: every program goes to the cache (no minimum compile time or size),
    when enabled; returns the folder, or None when off."""
    if not enabled():
        return None
    import jaxlib

    path = folder(jax.__version__, jaxlib.__version__)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def environment(jax) -> dict:
    """What a result records of the cache: its folder, or that it is off."""
    path = jax.config.jax_compilation_cache_dir
    return {"compile_cache": str(path) if path else "off"}


def discard_since(started: float) -> int:
    """Remove the entries written at or after `started` (a wall-clock time) from the cache folders (every
    release's): a child that died while the cache was on leaves nothing it wrote for the next run to load.
    Returns how many files went."""
    own = os.environ.get(FOLDER, "").strip()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "normconf"
    folders = [Path(own)] if own else sorted(base.glob("jax-*"))
    removed = 0
    for path in folders:
        for entry in path.glob("*") if path.is_dir() else ():
            try:
                if entry.is_file() and entry.stat().st_mtime >= started:
                    entry.unlink()
                    removed += 1
            except OSError:
                pass
    return removed
