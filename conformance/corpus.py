"""ONNX's own node-test corpus run through the spec.

`onnx.backend.test.case.node` holds ONNX's backend cases - inputs and expected outputs nobody here
wrote. Each case of a normalization operator is mapped onto its canonical norm (the ONNX adapters'
declared conventions, the node's attributes on top), then: the reference's answer is judged against
the corpus' expected output, and each ONNX adapter's (onnxruntime, onnx.reference, and their
MeanVarianceNormalization forms) against the reference's - every comparison under the suite's
budgets (NUM.N5, running statistics as test_running_stats judges them). A case or an output the
reference cannot express is listed with the reason, never dropped. Each case also names what its
stock input cannot show (N = C hides a batch/channel mix-up, LRN.D3; non-negative inputs hide |x|
in an L1 norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from normconf import adapters
from normconf import reference as R
from normconf.vocabulary import budgets
from normconf.vocabulary import tolerances as T

from . import checks

OUTPUT_DTYPE = "float32"  # every stock case of these operators is float32


class NotExpressible(Exception):
    """A corpus case (or one of its outputs) the canonical parameters cannot state."""


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _base(adapter: str, norm: str) -> dict:
    """The ONNX operator's conventions in canonical terms, as the adapter declares them."""
    return adapters.load(adapter).declarations[norm].defaults()


def _trailing(axis: int, rank: int) -> tuple[int, ...]:
    return tuple(range(axis % rank, rank))


def _batch_norm(a, x, scale, bias, mean, var):
    training = bool(a.get("training_mode", 0))
    params = {
        **_base("onnxruntime", "batch_norm"),
        "scale": scale,
        "offset": bias,
        "state": R.RunningStats(mean, var, 0),
        "training": training,
    }
    params |= {"eps": a["epsilon"]} if "epsilon" in a else {}
    params |= {"momentum": 1.0 - a["momentum"]} if "momentum" in a else {}
    return "batch_norm", params, ("y", "state.mean", "state.var") if training else ("y",)


def _group_norm(a, x, scale, bias):
    params = {**_base("onnxruntime", "group_norm"), "groups": a["num_groups"], "scale": scale, "offset": bias}
    return "group_norm", params | ({"eps": a["epsilon"]} if "epsilon" in a else {}), ("y",)


def _instance_norm(a, x, scale, bias):
    params = {**_base("onnxruntime", "instance_norm"), "scale": scale, "offset": bias}
    return "instance_norm", params | ({"eps": a["epsilon"]} if "epsilon" in a else {}), ("y",)


def _layer_norm(a, x, scale, bias=None):
    params = {**_base("onnxruntime", "layer_norm"), "axes": _trailing(a.get("axis", -1), x.ndim)}
    params |= {"scale": scale} | ({"offset": bias} if bias is not None else {})
    params |= {"eps": a["epsilon"]} if "epsilon" in a else {}
    return "layer_norm", params, ("y", "saved Mean", "saved InvStdDev")


def _rms_norm(a, x, scale):
    params = {
        **_base("onnxruntime", "rms_norm"),
        "axes": _trailing(a.get("axis", -1), x.ndim),
        "scale": scale,
    }
    return "rms_norm", params | ({"eps": a["epsilon"]} if "epsilon" in a else {}), ("y",)


def _lp_normalize(a, x):
    params = {**_base("onnxruntime", "lp_normalize"), "axes": (a.get("axis", -1) % x.ndim,)}
    return "lp_normalize", params | ({"p": float(a["p"])} if "p" in a else {}), ("y",)


def _local_response_norm(a, x):
    params = {**_base("onnxruntime", "local_response_norm"), "size": a["size"]}
    params |= {
        key: a[name] for name, key in (("alpha", "alpha"), ("beta", "beta"), ("bias", "k")) if name in a
    }
    return "local_response_norm", params, ("y",)


def _mean_variance_norm(a, x):
    params = {**_base("onnx.reference[mvn]", "layer_norm"), "axes": tuple(a.get("axes", (0, 2, 3)))}
    return "layer_norm", params, ("y",)


# operator -> how a node and its inputs become (norm, canonical params, the outputs in order)
OPERATORS = {
    "BatchNormalization": _batch_norm,
    "GroupNormalization": _group_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "LpNormalization": _lp_normalize,
    "LRN": _local_response_norm,
    "MeanVarianceNormalization": _mean_variance_norm,
    "RMSNormalization": _rms_norm,
}
# the adapters that run each operator (MeanVarianceNormalization is theirs in its own form, LN.D11)
RUNNERS = {op: ("onnxruntime", "onnx.reference") for op in OPERATORS} | {
    "MeanVarianceNormalization": ("onnxruntime[mvn]", "onnx.reference[mvn]")
}
# outputs the spec defines no value for: the reason they are listed, not compared
UNDEFINED = {
    "saved Mean": "LN.S1 defines y only; Mean is a training-graph intermediate of LayerNormalization",
    "saved InvStdDev": "LN.S1 defines y only; InvStdDev is a training-graph intermediate",
}


@dataclass
class Judged:
    """One output of one case: the comparison's verdict and error against its budget."""

    output: str
    verdict: str  # "agrees", "disagrees", "not compared"
    ratio: float | None = None  # worst error / budget
    worst: float | None = None
    reason: str = ""


@dataclass
class CorpusCase:
    """One ONNX backend case as the spec sees it."""

    name: str
    op: str
    opset: int
    shape: tuple[int, ...]
    norm: str = ""
    params: dict = field(default_factory=dict)
    reason: str = ""  # why it is not expressible ("" when it is)
    reference: list[Judged] = field(default_factory=list)  # the corpus' expected outputs vs the reference
    adapters: dict[str, list[Judged] | str] = field(default_factory=dict)  # adapter -> judged, or why not
    blind_spots: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.reason:
            return "not expressible"
        return "disagrees" if any(j.verdict == "disagrees" for j in self.reference) else "agrees"


def collect() -> list:
    """ONNX's node cases whose (only) node is one of OPERATORS."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):  # other operators' case builders overflow
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return [c for c in cases if c.kind == "node" and c.model.graph.node[0].op_type in OPERATORS]


def _reference_outputs(norm: str, x, params: dict, names: tuple[str, ...]) -> dict:
    result = getattr(R, norm)(x, **params)
    found = {"y": getattr(result, "y", result)}
    state = getattr(result, "state", None)
    if state is not None:
        found |= {"state.mean": state.mean, "state.var": state.var}
    return {name: found.get(name) for name in names}


def _judge(norm, x, params, name, actual, expected, note: str = "") -> Judged:
    """actual against expected (the reference's), under the suite's budget for that output."""
    if name in UNDEFINED:
        return Judged(name, "not compared", reason=UNDEFINED[name])
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != np.shape(expected):
        return Judged(
            name, "disagrees", math.inf, math.inf, f"shape {actual.shape}, not {np.shape(expected)}"
        )
    acc = OUTPUT_DTYPE
    if name == "y":
        bound = checks.budget(norm, x, params, expected, acc_dtype=acc, out_dtype=OUTPUT_DTYPE)
    else:  # a running statistic after the step, as test_running_stats judges it
        what = name.split(".")[1]
        scales = budgets.state_error_scales(norm, x, params, acc)
        bound = (
            T.running_stat_budget(
                acc_dtype=acc,
                out_dtype=OUTPUT_DTYPE,
                n=budgets.reduction_length(norm, x, params),
                batch_error_scale=scales[what],
                y_ref=expected,
                previous=getattr(params["state"], what),
            ),
            "NUM.N5",
        )
    verdict = checks.check(
        R.NORMS[norm].clauses.forward, "onnx corpus", norm, OUTPUT_DTYPE, name, actual, expected, bound, {}
    )
    comparison = verdict.comparison
    passed = "agrees" if verdict.passed else "disagrees"
    return Judged(name, passed, comparison.ratio, comparison.worst_error, note)


def blind_spots(op: str, norm: str, x: np.ndarray, params: dict) -> list[str]:
    """What the stock input cannot distinguish."""
    spots = []
    channel_norm = norm in ("batch_norm", "instance_norm", "group_norm", "local_response_norm")
    if channel_norm and x.ndim >= 2 and x.shape[0] == x.shape[1]:
        spots.append(
            f"N = C = {x.shape[0]}: an implementation that swaps the batch and channel axes passes "
            "(LRN.D3: onnx.reference did, for three years)"
        )
    if norm == "lp_normalize" and params.get("p") == 1.0 and not np.any(x < 0):
        spots.append("no negative inputs: an L1 norm that sums x instead of |x| passes")
    spread = float(np.std(x)) if x.size else 0.0
    if norm in R.NORMS and R.NORMS[norm].standardizing and abs(float(np.mean(x))) < 4 * spread:
        spots.append("well-conditioned (|mean| < 4 spread): one-pass and two-pass variances agree on it")
    return spots


def run_case(case) -> CorpusCase:
    node = case.model.graph.node[0]
    op = node.op_type
    inputs, expected = case.data_sets[0]
    x = np.asarray(inputs[0], dtype=np.float64)
    opset = next((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    found = CorpusCase(case.name, op, opset, tuple(x.shape))
    if len(case.data_sets) != 1:
        found.reason = f"{len(case.data_sets)} data sets: the corpus runs one"
        return found
    try:
        norm, params, names = OPERATORS[op](
            _attributes(node),
            *(None if v is None else np.asarray(v, dtype=np.float64) for v in [x, *inputs[1:]]),
        )
        found.norm, found.params = norm, params
        if len(names) != len(expected):
            raise NotExpressible(f"{len(expected)} outputs; the mapping knows {len(names)}")
        want = _reference_outputs(norm, x, params, names)
    except (NotExpressible, R.ClauseError) as exc:
        found.reason = str(exc)
        return found
    found.blind_spots = blind_spots(op, norm, x, params)
    found.reference = [
        _judge(norm, x, params, name, given, want[name])
        if want[name] is not None or name in UNDEFINED
        else Judged(name, "not compared", reason="the reference computes no such output")
        for name, given in zip(names, expected, strict=True)
    ]
    for name in RUNNERS[op]:
        adapter = adapters.get(name)
        if not adapter.available()[0]:
            found.adapters[name] = f"not installed: {adapter.available()[1]}"
            continue
        # where the adapter declares the operator otherwise (onnxruntime's MVN kernel: no epsilon), it is
        # judged under its declared conventions - the model of what it computes, as the suite judges it
        declared = {
            k: v for k, v in adapter.declarations[norm].fixed().items() if k in params and params[k] != v
        }
        mine = {**params, **declared}
        note = ", ".join(f"under its declared {k}={v!r}" for k, v in declared.items())
        try:
            outcome = adapter.run(norm, x, mine, dtype=OUTPUT_DTYPE)
            theirs_want = _reference_outputs(norm, x, mine, names) if declared else want
        except adapters.Unsupported as exc:
            found.adapters[name] = f"not expressible: {exc}"
            continue
        except Exception as exc:  # the runtime refusing a valid case is its answer
            found.adapters[name] = f"raised {type(exc).__name__}: {str(exc).strip()[:200]}"
            continue
        theirs = {"y": outcome.y} | (
            {"state.mean": outcome.state.mean, "state.var": outcome.state.var} if outcome.state else {}
        )
        found.adapters[name] = [
            _judge(norm, x, mine, key, theirs[key], theirs_want[key], note)
            if key in theirs and theirs_want[key] is not None
            else Judged(key, "not compared", reason=UNDEFINED.get(key, "the adapter returns no such output"))
            for key in names
        ]
    return found


def run() -> list[CorpusCase]:
    """Every normalization case of ONNX's node-test corpus, judged."""
    with np.errstate(all="ignore"):
        return [run_case(case) for case in collect()]


def to_json(cases: list[CorpusCase]) -> list[dict]:
    def plain(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, R.RunningStats):
            return {"mean": value.mean.tolist(), "var": value.var.tolist(), "num_batches_tracked": 0}
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    out = []
    for c in cases:
        row = {
            "name": c.name,
            "op": c.op,
            "opset": c.opset,
            "shape": list(c.shape),
            "norm": c.norm,
            "verdict": c.verdict,
            "reason": c.reason,
            "params": {k: plain(v) for k, v in c.params.items() if not isinstance(v, np.ndarray)},
            "reference": [{k: plain(v) for k, v in vars(j).items()} for j in c.reference],
            "adapters": {
                name: v if isinstance(v, str) else [{k: plain(x) for k, x in vars(j).items()} for j in v]
                for name, v in c.adapters.items()
            },
            "blind_spots": c.blind_spots,
        }
        out.append(row)
    return out


def summary(cases: list[CorpusCase]) -> str:
    """A plain-text table: one line per case, then the totals."""
    lines = []
    for c in cases:
        worst = max((j.ratio for j in c.reference if j.ratio is not None), default=None)
        runners = "; ".join(
            f"{name}: "
            + (
                v
                if isinstance(v, str)
                else ("agrees" if all(j.verdict != "disagrees" for j in v) else "DISAGREES")
            )
            for name, v in c.adapters.items()
        )
        ratio = "" if worst is None else f" ({worst:.2g}x budget)"
        lines.append(f"{c.name:48s} {c.op:26s} {c.verdict}{ratio}{' - ' + c.reason if c.reason else ''}")
        if runners:
            lines.append(f"{'':48s} {runners}")
        for spot in c.blind_spots:
            lines.append(f"{'':48s} blind spot: {spot}")
    counts = {}
    for c in cases:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    lines.append(f"{len(cases)} cases: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    return "\n".join(lines)


__all__ = [
    "CorpusCase",
    "Judged",
    "OPERATORS",
    "RUNNERS",
    "blind_spots",
    "collect",
    "run",
    "summary",
    "to_json",
]
