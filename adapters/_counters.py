"""Work a framework does that the suite's speed depends on: XLA programs in this process (the JAX family
and Keras on JAX compile a program per new configuration and shape) - compiled, or loaded from the
persistent compilation cache (`_compile_cache`) - and tf.function traces (Keras on TF's synchronized
step)."""

from __future__ import annotations

_counts = {"programs": 0, "cache_hits": 0}
_watching = False
# jax.monitoring: one per program XLA was asked for (compiled, or loaded from the persistent cache)
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # one per program loaded from the persistent cache


def watch_jax() -> None:
    """Count JAX's backend compilations and persistent-cache hits from now on (idempotent; call where JAX
    is first imported)."""
    global _watching
    if _watching:
        return
    import jax.monitoring

    def compiled(event: str, duration: float, **_) -> None:
        if event == COMPILE_EVENT:
            _counts["programs"] += 1

    def loaded(event: str, **_) -> None:
        if event == CACHE_HIT_EVENT:
            _counts["cache_hits"] += 1

    jax.monitoring.register_event_duration_secs_listener(compiled)
    jax.monitoring.register_event_listener(loaded)
    _watching = True


def traced() -> None:
    """One step traced by tf.function (Keras on TF's synchronized BatchNormalization): a program, counted
    as XLA's are."""
    global _watching
    _watching = True
    _counts["programs"] += 1


def snapshot() -> dict:
    """{"compilations": n, "cache_hits": m} where JAX runs in this process: programs compiled, and loaded
    from the persistent cache instead (each program is requested once per process: n + m programs);
    {} elsewhere."""
    if not _watching:
        return {}
    return {"compilations": _counts["programs"] - _counts["cache_hits"], "cache_hits": _counts["cache_hits"]}
