"""What the JAX family's adapters share: the base adapter (isolation, x64, the jitted plan's
execution and rendering) and the host/device tree helpers."""

from __future__ import annotations

import importlib
from dataclasses import replace

import numpy as np

from normconf.reference import Grads

from .. import _devices, _replicas, _repro
from ..base import (
    Adapter,
    Outcome,
)
from ..plan import Executed, Planned, dtype_name
from .runtime import (
    JAX_HEADER,
    ModulePlan,
    array,
    load_jax,
    to_numpy,
)


class JaxBase(Adapter):
    family = "jax"
    isa_capped = ("xla",)
    compiles = True  # one jax.jit program per layer configuration and shape
    framework = ""  # the importable module whose version environment() reports
    library = ""  # where the plan's layer classes live: "flax.linen"
    repro_import = ""  # how the script imports it

    def environment(self):
        jax = load_jax()
        import jaxlib

        module = importlib.import_module(self.framework)
        return {
            "adapter": self.name,
            "framework": self.framework,
            "version": getattr(module, "__version__", "unknown"),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            **_devices.jax_environment(jax),
            "x64": bool(jax.config.jax_enable_x64),
            "compiled": "jax.jit",  # each layer call runs jitted, as in a user's training step
        }

    def run_framework_defaults(self, norm, x, hints, *, dtype):
        """Below float64 as a user who never turned on 64-bit mode: layers that take their dtype from
        JAX's default float (equinox's) would otherwise build float64 parameters and state."""
        with load_jax().enable_x64(dtype == "float64"):
            return super().run_framework_defaults(norm, x, hints, dtype=dtype)

    # -- plans ----------------------------------------------------------------------------------

    def _run(self, norm, x, params, dtype, cotangent):
        """The `_run_<norm>` plan with the dtypes its declaration holds the affine and the state in and
        returns y in (a mixed policy's float32 parameters, MP.P1; the input's dtype otherwise)."""
        planned = super()._run(norm, x, params, dtype, cotangent)
        if not isinstance(planned, Planned):
            return planned
        declaration = self.declarations[norm]
        held, out = declaration.parameter_dtype(dtype), declaration.output_dtype(dtype)
        return replace(planned, plan=replace(planned.plan, parameters=held, output=out))

    def _plan(self, module, args, kwargs, x, params, dtype, cotangent, *, finish=None, **plan) -> Planned:
        """The plan of `module(*args, **kwargs)` on x with the canonical affine in `params`; its Outcome
        is y and the gradients, or `finish(executed, grads)` (the state after is `executed.after`)."""
        affine = {k: params[k] for k in ("scale", "offset") if params.get(k) is not None}
        module_plan = ModulePlan(module, tuple(args), kwargs, x, dtype, affine, cotangent, **plan)

        def outcome(executed: Executed) -> Outcome:
            grads = None
            if cotangent is not None:
                grads = Grads(*(executed.grads.get(k) for k in ("x", "scale", "offset")))
            return Outcome(executed.y, grads=grads) if finish is None else finish(executed, grads)

        return Planned(module_plan, outcome)

    def _layer(self, plan: ModulePlan, **extra):
        """The plan's layer, constructed (with `extra` keyword arguments the script spells itself)."""
        load_jax()
        return getattr(importlib.import_module(self.library), plan.module)(*plan.args, **plan.kwargs, **extra)

    def execute_plan(self, plan: ModulePlan) -> Executed:
        affine = {k: array(v, plan.held) for k, v in plan.affine.items()}
        if plan.replica_sizes is not None:
            y, aux, grads = self._synchronized(plan, affine)
        else:
            y, aux, grads = self._call(plan, array(plan.x, plan.dtype), affine)
        found = {} if grads is None else {"x": grads.x, "scale": grads.scale, "offset": grads.offset}
        return Executed({}, to_numpy(y), found, {"state": aux}, dtype_name(y))

    def _call(self, plan: ModulePlan, x, affine):
        """(y, state after, grads): the layer called on x the library's way (compiled_vjp)."""
        raise NotImplementedError

    def _synchronized(self, plan: ModulePlan, affine):
        """(y, state after, grads) of a synchronized step (sync_run)."""
        raise NotImplementedError

    def render_plan(self, plan: ModulePlan) -> str:
        """The layer built as the plan says and a `forward(x, params, extra)` doing what the compiled
        call does, jitted the same way (vjp inside the jit when there are gradients); params = the
        canonical scale/offset, extra = the framework state as loaded."""
        if plan.replica_sizes is not None:
            return self._render_synchronized(plan)
        lines = [
            *JAX_HEADER,
            self.repro_import,
            f"x = array({_repro.values(plan.x)}, {plan.dtype!r})",
            "params = {"
            + ", ".join(f"{k!r}: array({_repro.values(v)}, {plan.held!r})" for k, v in plan.affine.items())
            + "}",
            *self._repro_body(plan),
        ]
        if plan.cotangent is None:
            lines += ["y, aux = jax.jit(forward)(x, params, extra)"]
        else:
            lines += [
                f"g = array({_repro.values(plan.cotangent)}, {plan.out_dtype!r})",
                "@jax.jit",
                "def forward_and_back(x, params, extra, g):",
                "    y, pullback, aux = jax.vjp(lambda a, b: forward(a, b, extra), x, params, has_aux=True)",
                "    return y, aux, pullback(g.astype(y.dtype))",
                "y, aux, (dx, dparams) = forward_and_back(x, params, extra, g)",
                "grads = {'x': dx, **dparams}",
            ]
        lines += [
            "show('y', y)",
            "show('state after', aux)",
            *(["show('grad', grads)"] if plan.cotangent is not None else []),
        ]
        return _repro.script(lines)

    def _constructor(self, plan: ModulePlan, **extra) -> str:
        """The layer's constructor call as the script writes it (`extra`: keyword arguments as source)."""
        arguments = _repro.arguments(
            plan.args, {**plan.kwargs, **{k: _repro.Source(v) for k, v in extra.items()}}
        )
        return f"{plan.module}({arguments})"

    def _repro_body(self, plan: ModulePlan) -> list[str]:
        """Lines defining `extra` and `forward(x, params, extra) -> (y, state after)`."""
        raise NotImplementedError

    def _render_synchronized(self, plan: ModulePlan) -> str:
        """A synchronized step alone: the CPU devices made first (XLA_FLAGS), the layer with its replica
        axis, and the same `jax.pmap` over the replicas' padded batches that `sync_run` makes."""
        sizes, masked = plan.replica_sizes, plan.options["masked"]
        lines = [
            "import os",
            f"os.environ['XLA_FLAGS'] = {_replicas.jax_env()['XLA_FLAGS']!r}  # before JAX starts",
            *JAX_HEADER,
            self.repro_import,
            f"sizes = {tuple(sizes)!r}",
            f"x = np.array({_repro.values(plan.x)})  # every replica's rows, in order",
            "params = {"
            + ", ".join(f"{k!r}: array({_repro.values(v)}, {plan.held!r})" for k, v in plan.affine.items())
            + "}",
            *self._sync_repro_body(plan),
            "def padded(rows):  # replica r's rows, padded to the largest batch",
            "    out = np.zeros((len(sizes), max(sizes)) + rows.shape[1:])",
            "    for r, part in enumerate(np.split(rows, np.cumsum(sizes)[:-1])):",
            "        out[r, :len(part)] = part",
            f"    return array(out.tolist(), {plan.dtype!r})",
            "mask = np.zeros((len(sizes), max(sizes)) + (1,) * (x.ndim - 1), dtype=bool)",
            "for r, n in enumerate(sizes):",
            "    mask[r, :n] = True",
            f"mask = mask if {masked!r} else None  # flax's mask only where the batches differ",
            "devices = jax.devices('cpu')[:len(sizes)]",
            "rows = lambda a: np.concatenate([np.asarray(a[r, :n]) for r, n in enumerate(sizes)])",
        ]
        axes = f"(0, {0 if masked else None}, None, None"
        if plan.cotangent is None:
            lines += [
                "step = jax.pmap(lambda xr, mr, aff, ext: fn(xr, aff, ext, mr), axis_name='r', "
                f"in_axes={axes}), "
                "devices=devices)",
                "y, aux = step(padded(x), mask, params, extra)",
                "y = rows(y)",
            ]
        else:
            lines += [
                f"g = np.array({_repro.values(plan.cotangent)})",
                "def forward_and_back(xr, mr, aff, ext, gr):",
                "    y, pullback, aux = jax.vjp(lambda a, p: fn(a, p, ext, mr), xr, aff, has_aux=True)",
                "    return y, aux, pullback(gr.astype(y.dtype))",
                f"step = jax.pmap(forward_and_back, axis_name='r', in_axes={axes}, 0), devices=devices)",
                "y, aux, (dx, dparams) = step(padded(x), mask, params, extra, padded(g))",
                "y = rows(y)",
                "grads = {'x': rows(dx), **{k: np.asarray(v).sum(axis=0) for k, v in dparams.items()}}",
            ]
        lines += [
            "show('y', y)",
            "show('state after (replica 0)', jax.tree.map(lambda a: a[0], aux))",
            *(["show('grad', grads)"] if plan.cotangent is not None else []),
        ]
        return _repro.script(lines)

    def _sync_repro_body(self, plan: ModulePlan) -> list[str]:
        """Lines defining `extra` and `fn(xr, aff, extra, mask) -> (y, new state)` as the adapter's own."""
        raise NotImplementedError

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        if norm == "sync_batch_norm" and not _replicas.here():  # where the replicas' devices exist
            return _isolated_repro(self, norm, x, params, dtype, cotangent)
        return super().framework_repro(norm, x, params, dtype=dtype, cotangent=cotangent)


def _isolated_repro(adapter, norm, x, params, dtype, cotangent):
    from .. import _isolated

    return _isolated.isolated(adapter.name, _replicas.jax_env()).call(
        "framework_repro", norm, x, params, dtype=dtype, cotangent=cotangent
    )


def _loaded_zeros(abstract):
    """Arrays of zeros shaped as an abstract (eval_shape) tree, built on the host."""
    jax = load_jax()
    return jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), abstract)


def _host_tree(tree):
    """A tree of arrays as NumPy arrays in their own dtypes (a plan's state: literal in the script)."""
    if isinstance(tree, dict):
        return {k: _host_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def _device_tree(tree):
    jax = load_jax()
    return jax.tree.map(jax.device_put, tree)


# ------------------------------------------------------------------------------------------------
# flax.linen


# flax.linen and haiku: (configuration, init options, x's shape and dtype) -> the variables' shapes, as
# init traced abstractly (a trace costs more than the compiled call it prepares)
_INIT_STRUCTURE: dict = {}
