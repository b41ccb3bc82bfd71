"""Gradients (x, scale, offset) from the framework's autodiff against the reference VJPs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normconf import adapters
from normconf import reference as R

from . import checks, strategies
from . import tolerances as T
from .harness import reference_or_reject, run_or_reject

VJP_CLAUSE = {"batch_norm": "BN.S6", "instance_norm": "IN.S4", "layer_norm": "LN.S2", "group_norm": "GN.S2",
              "rms_norm": "RMS.S2", "local_response_norm": "LRN.S2", "lp_normalize": "LP.S2",
              "channel_normalize": "CN.S2"}


@pytest.mark.targets(need=("gradients",))
@pytest.mark.clause(*VJP_CLAUSE.values(), "NUM.N8")
@given(data=st.data())
def test_gradients_match_reference_vjp(target, cell, data):
    declaration = adapters.get(target.adapter).declarations[target.norm]
    case = data.draw(strategies.case(target.norm, declaration, target.dtype), label="case")
    seed = data.draw(st.integers(0, 2**16), label="cotangent_seed")
    g = strategies.representable(np.random.default_rng(seed).normal(size=case.x.shape), target.dtype)
    expected = reference_or_reject(case, vjp_of=g)
    clause = VJP_CLAUSE[target.norm]
    outcome = run_or_reject(cell, case, clause, cotangent=g)
    acc = declaration.accumulation.get(target.dtype, target.dtype)
    n = checks.reduction_length(target.norm, case.x, case.params)
    summed = max(1, case.x.size // max(1, np.size(case.params.get("scale", 1.0))))
    rel = T.unit_roundoff(acc) * T.growth(max(n, summed))
    vjp = getattr(R, f"{target.norm}_vjp")
    learned = {k: case.params[k] for k in ("scale", "offset") if case.params.get(k) is not None}
    fixed = {k: v for k, v in case.params.items() if k not in learned}

    def grads(x, g, **params):
        out = vjp(g, x, **params, **fixed)
        return {"x": out.x, "scale": out.scale, "offset": out.offset}

    spread = checks.perturbation_spread(grads, {"x": case.x, "g": g, **learned}, rel, seed=seed)
    terms = checks.gradient_terms(target.norm, case.x, case.params, g)
    for key in ("x", "scale", "offset"):
        want = getattr(expected, key)
        if want is None:
            continue
        # the terms may be rounded once more, to the input dtype, before they cancel (NUM.N8)
        term_rel = rel + T.unit_roundoff(target.dtype)
        bound = T.SAFETY * (spread[key] + term_rel * terms.get(key, 0.0) + T.unit_roundoff(target.dtype) * np.abs(want))
        verdict = checks.check(clause, target.adapter, target.norm, target.dtype, f"d{key}", getattr(outcome.grads, key),
                               want, (bound, "NUM.N8"), case.describe())
        cell.settle(verdict, case)
