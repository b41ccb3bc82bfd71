"""JAX family runtime: importing JAX (64-bit mode, the optional compilation cache), arrays in and
out, one compiled program per layer configuration (`compiled_vjp`), the synchronized step under
`jax.pmap` (`sync_run`), and the plan a JAX-family adapter runs and renders (`ModulePlan`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from normconf.reference import Grads, RunningStats

from .. import _compile_cache, _counters, _devices, _replicas, _repro
from ..base import require


@dataclass(frozen=True)
class ModulePlan:
    """A JAX-family adapter's plan: the layer `<module>(*args, **kwargs)` of the adapter's library,
    called on x its library's way with the canonical affine (scale, offset: float64 values), the
    library's state as loaded (`state`) and the adapter's `options` (call arguments, modes); the
    gradients of sum(y * cotangent) by jax.vjp inside one jax.jit. With `replica_sizes`: one
    synchronized step under jax.pmap, one replica batch each. Under a mixed policy (MP.P1) the affine and
    the state are held in `parameters` (float32) and y comes out in `output`; "" means `dtype`."""

    module: str
    args: tuple
    kwargs: dict
    x: np.ndarray
    dtype: str
    affine: dict
    cotangent: np.ndarray | None = None
    options: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    replica_sizes: tuple | None = None
    parameters: str = ""  # the dtype the affine and the state are held in (NormDeclaration.parameters)
    output: str = ""  # the output's declared dtype (NormDeclaration.output): the cotangent's

    @property
    def held(self) -> str:
        return self.parameters or self.dtype

    @property
    def out_dtype(self) -> str:
        return self.output or self.dtype


def load_jax():
    import jax

    if not jax.config.jax_enable_x64:  # float64 arrays need it; set before any array is created
        jax.config.update("jax_enable_x64", True)
        _devices.jax_configure(jax)
        _counters.watch_jax()
        _compile_cache.configure_jax(jax)  # programs persist across runs (on by default)
    return jax


def load_jnp():
    load_jax()
    import jax.numpy as jnp

    return jnp


def host(value, dtype) -> np.ndarray:
    """A NumPy array of `dtype` (bfloat16 too) from float64 values, rounded once."""
    return np.asarray(value, dtype=np.float64).astype(load_jnp().dtype(dtype))


def array(value, dtype):
    """A JAX array of `dtype` from float64 values, rounded once, on the host: a cast on the device
    would compile a conversion for every new shape."""
    return load_jax().device_put(host(value, dtype))


def to_numpy(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def affine_arrays(params, dtype) -> dict:
    """The canonical scale and offset present in `params`, as arrays of `dtype` (canonical shapes)."""
    return {k: array(params[k], dtype) for k in ("scale", "offset") if params.get(k) is not None}


COMPILED: dict = {}


def jitted(key, fn):
    """`jax.jit(fn)` made once per `key`, which must name everything fn closes over (a layer's
    configuration): a repeated key reuses its compiled programs, one per shape and dtype."""
    step = COMPILED.get(key)
    if step is None:
        step = COMPILED[key] = load_jax().jit(fn)
    return step


def compiled_vjp(key, fn, x, affine, extra, cotangent):
    """(y, aux, grads) of `fn(x, affine, extra) -> (y, aux)` (grads by jax.vjp given a cotangent, in
    the affine's canonical shapes: fn reshapes it itself) under one `jax.jit` per `key`, which must name
    everything `fn` closes over (its module's configuration): each new shape then costs one compilation
    instead of one per primitive, and a repeated shape none. `extra` holds the arrays fn reads.

    One program per configuration, shape and dtype - a training step's, forward and VJP together: a
    call without a cotangent runs it with a zero cotangent and returns no gradients, so the forward,
    gradient, identity and state properties share one compilation (what a program costs, the
    suite's budget for compiled frameworks)."""
    jax = load_jax()
    step = COMPILED.get(key)
    if step is None:

        def forward_and_back(xj, aff, ext, g):
            y, pullback, aux = jax.vjp(lambda a, b: fn(a, b, ext), xj, aff, has_aux=True)
            return y, aux, pullback(g.astype(y.dtype))

        step = COMPILED[key] = jax.jit(forward_and_back)
    shape, dtype = _output_shape(key, fn, x, affine, extra)
    g = np.zeros(shape) if cotangent is None else cotangent
    # the cotangent as drawn, in the output's dtype (a policy's float32 output: MP.S1)
    y, aux, (dx, daffine) = step(x, affine, extra, array(g, dtype))
    if cotangent is None:
        return y, aux, None
    return (
        y,
        aux,
        Grads(to_numpy(dx), *(to_numpy(daffine[k]) if k in daffine else None for k in ("scale", "offset"))),
    )


_SHAPES: dict = {}


def _output_shape(key, fn, x, affine, extra) -> tuple:
    """y's shape and dtype for these inputs (traced once per configuration and input shapes, never
    compiled): a zero cotangent's - a layer may return another shape than x's, another dtype under a
    mixed policy."""
    jax = load_jax()
    signature = (key, repr(jax.tree.map(lambda a: (np.shape(a), str(a.dtype)), (x, affine, extra))))
    if signature not in _SHAPES:
        out = jax.eval_shape(lambda a, b, c: fn(a, b, c)[0], x, affine, extra)
        _SHAPES[signature] = (tuple(out.shape), str(out.dtype))
    return _SHAPES[signature]


def sync_run(fn, x, sizes, dtype, affine, extra, cotangent, masked: bool):
    """A synchronized step (SBN) over len(sizes) CPU devices under `jax.pmap(axis_name="r")`: replica r
    gets rows of x (padded to the largest batch and, when `masked`, a mask of its real rows), and
    `fn(x_r, affine, extra, mask) -> (y_r, aux_r)` pools through its layer's axis name. Returns
    (y, aux, grads) with the replicas' outputs concatenated (in y's dtype), the aux every replica must
    hold alike, and the parameter gradients summed over replicas (each replica's vjp holds its share)."""
    jax = load_jax()
    count, rows = len(sizes), max(sizes)
    blocks = np.zeros((count, rows) + x.shape[1:])
    mask = np.zeros((count, rows) + (1,) * (x.ndim - 1), dtype=bool)
    for r, part in enumerate(_replicas.split(x, sizes)):
        blocks[r, : len(part)], mask[r, : len(part)] = part, True
    mask = jax.device_put(mask) if masked else None

    def forward(xr, mr, aff, ext):
        return fn(xr, aff, ext, mr)

    def forward_and_back(xr, mr, aff, ext, g):
        y, pullback, aux = jax.vjp(lambda a, p: fn(a, p, ext, mr), xr, aff, has_aux=True)
        return y, aux, pullback(g.astype(y.dtype))

    devices = jax.devices("cpu")[:count]
    require(
        len(devices) == count,
        f"a synchronized step over {count} replicas needs {count} devices, this process has {len(devices)}",
    )
    mask_axis = 0 if masked else None
    if cotangent is None:
        step = jax.pmap(forward, axis_name="r", in_axes=(0, mask_axis, None, None), devices=devices)
        y, aux = step(array(blocks, dtype), mask, affine, extra)
        grads = None
    else:
        g = np.zeros_like(blocks)
        for r, part in enumerate(_replicas.split(np.asarray(cotangent, dtype=np.float64), sizes)):
            g[r, : len(part)] = part
        step = jax.pmap(
            forward_and_back, axis_name="r", in_axes=(0, mask_axis, None, None, 0), devices=devices
        )
        y, aux, (dx, daffine) = step(array(blocks, dtype), mask, affine, extra, array(g, dtype))
        dx = np.concatenate([to_numpy(dx[r, :n]) for r, n in enumerate(sizes)])
        grads = Grads(
            dx, *(to_numpy(daffine[k]).sum(axis=0) if k in daffine else None for k in ("scale", "offset"))
        )
    y = np.concatenate([np.asarray(y[r, :n]) for r, n in enumerate(sizes)])  # in y's own dtype (MP.N2)
    held = jax.tree.map(to_numpy, aux)
    for leaf in jax.tree.leaves(held):  # SBN.S3: every replica ends the step with the same state
        if not np.array_equal(leaf, np.broadcast_to(leaf[:1], leaf.shape), equal_nan=True):
            raise RuntimeError(
                f"the replicas hold different running statistics after the step: {leaf.tolist()}"
            )
    return y, jax.tree.map(lambda leaf: leaf[0], held), grads


def normalized_axes(x, params) -> tuple[int, ...]:
    axes = params["axes"]
    return tuple(sorted({a % x.ndim for a in ((axes,) if isinstance(axes, int) else axes)}))


def layer_momentum(momentum: float | None) -> float:
    """The layer's momentum (the old value's weight) for canonical `momentum` (the new value's): 1 - momentum.
    None (a cumulative average) is refused by `running` wherever an update happens; elsewhere the
    layer's own default (0.99) stands, unused."""
    return 0.99 if momentum is None else 1.0 - momentum


def running(api: str, params) -> tuple[RunningStats | None, bool]:
    """(state, training); checks what a running-statistics update needs when one happens."""
    state, training = params.get("state"), params["training"]
    if training and state is not None:
        require(
            params["momentum"] is not None,
            f"{api} has no cumulative average: momentum=None is unsupported (BN.D7)",
        )
        require(
            params["running_var"] == "biased",
            f"{api} updates the running variance with the biased batch variance: "
            "running_var='biased' only (BN.D1)",
        )
    return state, training


def no_state(api: str, params) -> None:
    require(params.get("state") is None, f"{api} keeps no running statistics: state must be None (IN.P4)")


def rms_eps(api: str, params) -> float:
    """RMSNorm's eps has no canonical default (RMS.P3); None (PyTorch's dtype epsilon) has no counterpart."""
    eps = params.get("eps")
    require(eps is not None, f"{api} needs an explicit eps (RMS.P3)")
    return eps


JAX_HEADER = (
    *_repro.HEADER,
    "import jax",
    "import jax.numpy as jnp",
    "jax.config.update('jax_enable_x64', True)",
    "array = lambda values, dtype: jnp.asarray(np.array(values)).astype(dtype)",
    *_repro.show_function("v"),
)


def keywords(kwargs) -> str:
    return "".join(f", {k}={_repro.plain(v)}" for k, v in (kwargs or {}).items())


def tree_literal(tree) -> str:
    """Source for a dict tree of arrays (haiku state, flax batch_stats), each rounded to its dtype."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k!r}: {tree_literal(v)}" for k, v in tree.items()) + "}"
    return f"array({_repro.values(tree)}, {str(np.asarray(tree).dtype)!r})"
