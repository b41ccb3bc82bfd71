"""Work a framework does that the suite's speed depends on: XLA compilations in this process (the
JAX family and Keras on JAX compile a program per new configuration and shape)."""

from __future__ import annotations

_compilations = 0
_watching = False
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax.monitoring: one per XLA compilation


def watch_jax() -> None:
    """Count JAX's backend compilations from now on (idempotent; call where JAX is first imported)."""
    global _watching
    if _watching:
        return
    import jax.monitoring

    def listen(event: str, duration: float, **_) -> None:
        global _compilations
        if event == COMPILE_EVENT:
            _compilations += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    _watching = True


def snapshot() -> dict:
    """{"compilations": n} where JAX runs in this process; {} elsewhere."""
    return {"compilations": _compilations} if _watching else {}
