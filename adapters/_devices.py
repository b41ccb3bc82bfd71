"""Which device the adapters compute on, and the reduced-precision matmul modes (TF32) in force.

Both are recorded in every result's environment, so results from a CPU machine and a GPU machine
merge into one report with the device as a column. `NORMCONF_DEVICE` chooses: `auto` (default: the
framework's accelerator when it sees one, else the CPU) or `cpu`. `NORMCONF_TF32` sets TF32 for the
frameworks that have a switch: `on`, `off`, or unset (each framework's own default, recorded as is).
A norm's statistics are reductions, not matmuls, so TF32 matters where a framework builds one from a
matmul (TF's LRN band matrix) or a fused kernel chooses it.
"""

from __future__ import annotations

import os

DEVICE_ENV = "NORMCONF_DEVICE"
TF32_ENV = "NORMCONF_TF32"
CHOICES = {DEVICE_ENV: ("auto", "cpu"), TF32_ENV: ("on", "off", "")}


def _choice(env: str) -> str:
    value = os.environ.get(env, "auto" if env == DEVICE_ENV else "").strip().lower()
    if value not in CHOICES[env]:
        raise ValueError(f"{env}={value!r}: must be one of {', '.join(repr(c) for c in CHOICES[env])}")
    return value


def accelerators_allowed() -> bool:
    return _choice(DEVICE_ENV) == "auto"


def tf32_requested() -> bool | None:
    """True / False when NORMCONF_TF32 sets it, None to leave each framework's default."""
    return {"on": True, "off": False, "": None}[_choice(TF32_ENV)]


# -- PyTorch ------------------------------------------------------------------------------------


def torch_device(torch) -> str:
    """'cuda' where torch sees a GPU and accelerators are allowed, else 'cpu'; applies NORMCONF_TF32."""
    wanted = tf32_requested()
    if wanted is not None:
        torch.backends.cuda.matmul.allow_tf32 = wanted
        torch.backends.cudnn.allow_tf32 = wanted
    return "cuda" if accelerators_allowed() and torch.cuda.is_available() else "cpu"


def torch_environment(torch) -> dict:
    device = torch_device(torch)
    return {
        "device": device if device == "cpu" else f"cuda ({torch.cuda.get_device_name(0)})",
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        # the kernels ATen dispatches to, as torch reports them (ATEN_CPU_CAPABILITY caps it; NUM.N10)
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


# -- JAX ----------------------------------------------------------------------------------------


def jax_configure(jax) -> None:
    """Before the first computation: the CPU only when NORMCONF_DEVICE=cpu; TF32 as requested
    (float32 matmul precision 'tensorfloat32' or 'highest')."""
    if not accelerators_allowed():
        jax.config.update("jax_platforms", "cpu")
    wanted = tf32_requested()
    if wanted is not None:
        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if wanted else "highest")


def jax_environment(jax) -> dict:
    from . import _compile_cache

    device = jax.devices()[0]
    return {
        **_compile_cache.environment(jax),
        "device": device.platform
        if device.platform == "cpu"
        else f"{device.platform} ({device.device_kind})",
        "tf32": {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision},
    }


# -- TensorFlow ---------------------------------------------------------------------------------


def tf_configure(tf) -> None:
    """Before the first op: hide the GPUs when NORMCONF_DEVICE=cpu; TF32 as requested."""
    if not accelerators_allowed():
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # the runtime already started (another adapter in this process): recorded
            pass
    wanted = tf32_requested()
    if wanted is not None:
        tf.config.experimental.enable_tensor_float_32_execution(wanted)


def tf_environment(tf) -> dict:
    gpus = tf.config.get_visible_devices("GPU")
    return {
        "device": "cpu" if not gpus else f"gpu ({len(gpus)} visible; ops placed by TF)",
        "tf32": {"tensor_float_32_execution": tf.config.experimental.tensor_float_32_execution_enabled()},
    }
