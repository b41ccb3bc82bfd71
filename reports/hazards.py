"""Porting hazards: how far two frameworks' outputs drift apart when a model keeps each one's defaults.

Each installed adapter runs every norm it declares with its declared defaults
(`declarations[norm].defaults()`, canonical kwargs) on one typical input; what the defaults leave open
(groups, LRN size, affine parameters, the initial running state) is filled the same for everyone.
Inputs are laid out on each framework's default channel axis and outputs moved back, so a layout
difference is named but not measured. BatchNorm also trains a few steps from the canonical initial
state and then evaluates: momentum and running-variance conventions show up only there.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from normconf import adapters
from normconf import reference as R

SHAPE = (4, 6, 3, 5)  # N, C, H, W: small, N != C, odd spatial sizes
STEPS = 10
BATCH_SPREAD, BATCH_OFFSET = 2.0, 1.0  # a typical activation: not zero-mean, not unit variance


@dataclass
class Measured:
    """One adapter's answers for one norm with its defaults (None where it cannot run them)."""

    adapter: str
    norm: str
    api: str
    dtype: str
    params: dict
    y: np.ndarray | None = None
    eval_y: np.ndarray | None = None
    running_var: list[float] = field(default_factory=list)  # channel mean after each training step
    reason: str = ""
    schedule: str = ""  # the divergence clause of its own running-average schedule the steps followed
    policy: str = "none"  # the mixed-precision policy it ran under (spec MP.P1): "none" or "mixed"
    output_dtype: str | None = None  # the dtype its output came out in, where the adapter reports it


@dataclass
class Hazard:
    """One pair of adapters on one norm: output differences and the declared conventions that differ."""

    norm: str
    a: str
    b: str
    forward: float | None
    eval: float | None
    differ: list[str]
    policy: str = "none"  # both sides ran under it (pairs never mix policies)


@dataclass
class Hazards:
    measured: dict[tuple[str, str], Measured]
    pairs: list[Hazard]
    skipped: dict[str, str]  # adapter -> why it was not measured
    reference_running_var: list[float]


def _batches():
    rng = np.random.default_rng(7)
    draw = lambda: BATCH_OFFSET + BATCH_SPREAD * rng.normal(size=SHAPE)  # noqa: E731
    return [draw() for _ in range(STEPS)], draw()


def canonical_params(declaration, x: np.ndarray) -> dict:
    """The framework's defaults, completed as a typical call completes them (the norm's record), for
    input x (already in its layout)."""
    return R.NORMS[declaration.norm].typical_params(x, declaration.defaults())


def _layout(declaration, x: np.ndarray):
    """(x on the framework's default channel axis, function moving an output back to NCHW)."""
    axis = declaration.defaults().get("channel_axis")
    if axis is None or axis % x.ndim == 1:
        return x, lambda y: y
    return np.moveaxis(x, 1, axis), lambda y: np.moveaxis(np.asarray(y), axis, 1)


# A norm that takes another's defaults (a synchronized BatchNorm takes its BatchNorm's, SBN.P1) has
# nothing of its own to show.
SAME_AS = {name: norm.defaults_of for name, norm in R.NORMS.items() if norm.defaults_of}


def measure(name: str, norm: str) -> Measured:
    adapter = adapters.get(name)
    declaration = adapter.declarations[norm]
    # float32 where it runs (a mixed policy: bfloat16 activations, what its users feed it)
    preferred = "float32" if adapter.policy is None else "bfloat16"
    dtype = preferred if preferred in declaration.dtypes else declaration.dtypes[0]
    batches, test = _batches()
    x, back = _layout(declaration, batches[0])
    params = canonical_params(declaration, x)
    found = Measured(
        name,
        norm,
        declaration.api,
        dtype,
        {k: v for k, v in params.items() if k in declaration.defaults()},
        policy=adapter.policy_name,
    )
    try:
        outcome = adapter.run_own_schedule(norm, x, params, dtype=dtype)
        found.y, found.output_dtype = back(outcome.y), outcome.dtype
        if norm == "batch_norm" and declaration.stateful:
            # steps as its users get them: its own schedule where the canonical momentum cannot say it
            state, found.schedule = params["state"], adapter.own_schedule
            for batch in batches:
                state = adapter.run_own_schedule(
                    norm, _layout(declaration, batch)[0], {**params, "state": state}, dtype=dtype
                ).state
                found.running_var.append(float(np.mean(state.var)))
            evaluated = adapter.run(
                norm,
                _layout(declaration, test)[0],
                {**params, "state": state, "training": False},
                dtype=dtype,
            )
            found.eval_y = back(evaluated.y)
    except adapters.Unsupported as exc:
        found.reason = f"unsupported: {exc}"
    except Exception as exc:  # a framework that fails on its own defaults is a hazard to show, not a crash
        found.reason = f"raised {type(exc).__name__}: {exc}"
    return found


def _value(v) -> str:
    if isinstance(v, float):
        return format(v, ".8g")
    return repr(v)


def differing(a, b) -> list[str]:
    """The declared conventions two declarations give different values (keys both declare)."""
    ca, cb = {c.key: c for c in a.conventions}, {c.key: c for c in b.conventions}
    out = []
    for key in [k for k in ca if k in cb]:
        if ca[key].value != cb[key].value:
            layout = " (layout: inputs transposed for the measurement)" if key == "channel_axis" else ""
            out.append(f"{key}: {_value(ca[key].value)} vs {_value(cb[key].value)}{layout}")
    for key in [k for k in a.defaults() if k not in cb] + [k for k in b.defaults() if k not in ca]:
        out.append(f"{key}: declared by one side only")
    return out


def _max_abs(p, q) -> float | None:
    if p is None or q is None or np.shape(p) != np.shape(q):
        return None
    return float(np.max(np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64))))


def reference_running_var() -> list[float]:
    """The trajectory with the spec's canonical defaults (momentum 0.1, unbiased running variance)."""
    batches, _ = _batches()
    state, out = R.RunningStats.initial(SHAPE[1]), []
    for batch in batches:
        state = R.batch_norm(batch, state=state).state
        out.append(float(np.mean(state.var)))
    return out


def compute(names: list[str] | None = None) -> Hazards:
    """Measure the named adapters (default: every installed one) and compare every pair per norm."""
    measured, skipped = {}, {}
    for name in names or adapters.names():
        try:
            adapter = adapters.get(name)
        except (ImportError, adapters.UnknownAdapter) as exc:
            skipped[name] = f"cannot load: {exc}"
            continue
        ok, reason = adapter.available()
        if not ok:
            skipped[name] = reason
            continue
        for norm in adapter.declarations:
            if norm in SAME_AS:  # its defaults are another norm's (measured there)
                continue
            measured[name, norm] = measure(name, norm)
    pairs = []
    for (ka, ma), (kb, mb) in itertools.combinations(measured.items(), 2):
        if (
            ka[1] != kb[1]
            or (ma.policy, ma.dtype) != (mb.policy, mb.dtype)
            and "mixed" in (ma.policy, mb.policy)
        ):
            continue  # a mixed policy's answers are compared under the same policy and input dtype only
        norm = ka[1]
        da, db = adapters.get(ma.adapter).declarations[norm], adapters.get(mb.adapter).declarations[norm]
        differ = differing(da, db)
        if ma.policy == "mixed" and ma.output_dtype != mb.output_dtype:  # MP.N2: the next layer sees it
            differ.append(f"output dtype under the mixed policy: {ma.output_dtype} vs {mb.output_dtype}")
        pairs.append(
            Hazard(
                norm,
                ma.adapter,
                mb.adapter,
                _max_abs(ma.y, mb.y),
                _max_abs(ma.eval_y, mb.eval_y),
                differ,
                ma.policy,
            )
        )
    return Hazards(measured, pairs, skipped, reference_running_var())


def to_json(found: Hazards) -> dict:
    """Everything the report shows (the outputs themselves stay behind)."""
    measured = [
        {k: v for k, v in vars(m).items() if k not in ("y", "eval_y")} for m in found.measured.values()
    ]
    return {
        "measured": measured,
        "pairs": [vars(p) for p in found.pairs],
        "skipped": found.skipped,
        "reference_running_var": found.reference_running_var,
    }


def from_json(data: dict) -> Hazards:
    measured = {(m["adapter"], m["norm"]): Measured(**m) for m in data["measured"]}
    return Hazards(
        measured, [Hazard(**p) for p in data["pairs"]], data["skipped"], data["reference_running_var"]
    )


def isolated(names: list[str] | None = None, timeout: float = 1800) -> Hazards:
    """compute() in a child process: a framework that crashes there costs the hazards, not the report."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "hazards.json")
        command = [sys.executable, "-m", "normconf.reports.hazards", "--out", out, *(names or [])]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
            failure = (
                None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-500:]}"
            )
        except subprocess.TimeoutExpired:
            failure = f"no answer within {timeout:.0f} s"
        if failure is None:
            with open(out, encoding="utf-8") as fh:
                return from_json(json.load(fh))
    return Hazards({}, [], {"all adapters": f"the measurement failed ({failure})"}, reference_running_var())


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the measurements (JSON)")
    parser.add_argument("adapters", nargs="*", help="adapter names (default: every installed one)")
    args = parser.parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(to_json(compute(args.adapters or None)), fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
