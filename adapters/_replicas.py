"""Where a synchronized BatchNorm step (spec/sync_batch_norm.md) runs: in a child process whose
framework sees several CPU devices, one replica per device.

Both JAX and TensorFlow fix their device list when their runtime starts (XLA's host device count,
TF's logical devices), so the replicas cannot be made in a process that has already run anything
else. The adapter's `sync_batch_norm` calls go to a child started with the environment below (the
isolated-child machinery of `_isolated.py`), and the child, seeing `REPLICAS_FLAG`, runs them itself.
The devices are CPU ones on every machine, so the step runs the same way with or without a GPU.
"""

from __future__ import annotations

import os

from . import _isolated

REPLICAS_FLAG = "NORMCONF_REPLICAS"  # in the child's environment: how many devices its framework has
JAX_DEVICES = 4
TF_DEVICES = 2


def jax_env() -> dict[str, str]:
    """JAX with JAX_DEVICES host (CPU) devices."""
    flags = " ".join(
        f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f
    )
    return {
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={JAX_DEVICES}".strip(),
        REPLICAS_FLAG: str(JAX_DEVICES),
    }


def tf_env(base: dict[str, str]) -> dict[str, str]:
    """TensorFlow (Keras' backend env `base`) whose CPU is split into TF_DEVICES logical devices
    before anything runs (`tf_logical_cpus`)."""
    return {**base, REPLICAS_FLAG: str(TF_DEVICES)}


def here() -> bool:
    """True in a child started with a replica environment."""
    return _isolated.in_child() and bool(os.environ.get(REPLICAS_FLAG))


def run_in_child(adapter, env: dict[str, str], x, params: dict, dtype: str, cotangent):
    """`adapter.run("sync_batch_norm", ...)` in the cached child with `env`."""
    return _isolated.isolated(adapter.name, env).call(
        "run", "sync_batch_norm", x, params, dtype=dtype, cotangent=cotangent
    )


def tf_logical_cpus():
    """Split the first physical CPU into TF_DEVICES logical devices (only before TF's runtime starts,
    which is why a replica child does this first); returns their names."""
    import tensorflow as tf

    wanted = int(os.environ.get(REPLICAS_FLAG, TF_DEVICES))
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or ()) != wanted:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
    return [d.name for d in tf.config.list_logical_devices("CPU")][:wanted]


def split(x, sizes) -> list:
    """x's rows split into the replicas' batches."""
    import numpy as np

    return np.split(x, np.cumsum(sizes)[:-1], axis=0)
