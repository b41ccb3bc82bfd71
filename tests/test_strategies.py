"""The strategies reach every regime within the quick profile: each covering example (strategies.COVERS)
is in its regime for every norm and every built-in adapter's declaration, and every property runs the
covers before its random draws."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import normconf.conformance as suite
from normconf import adapters
from normconf.conformance import regimes, strategies, value_draws
from normconf.reference import NORMS
from normconf.reference.lp_normalize import lp_norm
from normconf.reference.rms_norm import default_eps
from normconf.vocabulary.budgets import statistic_view

AXES_NORMS = tuple(name for name, record in NORMS.items() if record.statistics == "axes")


def _declarations():
    """(label, norm, declaration, pooled): the generic draw (free and pooled) and every built-in adapter's
    (pooled where it compiles), float32 where declared."""
    found = [(f"generic-{norm}", norm, None, False) for norm in NORMS]
    found += [(f"generic-pooled-{norm}", norm, None, True) for norm in NORMS]
    for name in adapters.built_in():
        adapter = adapters.get(name)
        for norm, declaration in adapter.declarations.items():
            found.append((f"{name}-{norm}", norm, declaration, adapter.compiles))
    return found


DECLARATIONS = _declarations()


def _cover(regime, norm, declaration, dtype="float32", pooled=False):
    dtype = dtype if declaration is None or dtype in declaration.dtypes else declaration.dtypes[-1]
    with strategies.programs(pooled=pooled):
        return strategies.Cover(regime).draw(strategies.case(norm, declaration, dtype)), dtype


def _fixed(declaration, key) -> bool:
    return declaration is not None and key in declaration.fixed()


def _statistic_over_eps(case) -> float:
    """The median ratio of the statistic the eps-like term is compared with, to that term."""
    p, x = case.params, case.x
    if case.norm == "lp_normalize":
        axes = tuple(a % x.ndim for a in p["axes"])
        norm = lp_norm(x, p["p"], axes)
        at = p["eps"] if p["eps"] else 1e-3
        target = at ** (1 / p["p"]) if p["eps_placement"] == "max_power_sum" and p["eps"] else at
        return float(np.median(norm / target))
    if case.norm == "local_response_norm":
        alpha = p["alpha"] / (p["size"] if p["alpha_over_size"] else 1)
        return float(np.median(alpha * p["size"] * x * x / p["k"]))
    view, axes, _ = statistic_view(case.norm, x, p)
    eps = p.get("eps")
    eps = default_eps("float32") if eps is None else eps or 1e-3  # fixed at 0: as the draws
    if case.norm == "rms_norm":
        return float(np.median(np.mean(view * view, axis=axes) / eps))
    return float(np.median(view.var(axis=axes) / eps))


@pytest.mark.parametrize("label, norm, declaration, pooled", DECLARATIONS, ids=[d[0] for d in DECLARATIONS])
def test_every_cover_reaches_its_regime(label, norm, declaration, pooled):
    """Each cover is in its regime - for a compiled framework (pooled) on its pool entry's configuration."""
    record = NORMS[norm]
    _cover = functools.partial(globals()["_cover"], pooled=pooled)
    # long reductions: >= 10^4 values per statistic (a window of 10^4 + 1 channels for LRN)
    case, _ = _cover("long", norm, declaration)
    if norm == "local_response_norm":
        assert _fixed(declaration, "size") or case.params["size"] > value_draws.LONG
    elif norm != "channel_normalize":
        assert record.reduction_length(case.x, case.params) >= value_draws.LONG, case.describe()
    # squares beyond float32: most |x| far past sqrt(float32 max)
    case, _ = _cover("overflow", norm, declaration)
    assert case.kind == "overflow" and np.max(np.abs(case.x)) > 1e28
    # statistics comparable to eps (within four decades: a few values vary), eps small and eps near 1
    for regime, eps in (("near_eps", 1e-3), ("near_large_eps", 1.0)):
        case, _ = _cover(regime, norm, declaration)
        if norm != "channel_normalize":
            assert case.kind == "near_eps", case.describe()
            assert 1e-4 <= _statistic_over_eps(case) <= 1e4, (regime, case.describe())
            assert _fixed(declaration, "eps") or "eps" not in case.params or case.params["eps"] == eps
    # the code paths: affine with every size above 1, several channels per group, N != C
    case, _ = _cover("code_paths", norm, declaration)
    if record.affine:
        assert case.params.get(record.affine[0]) is not None, case.describe()
    if norm == "group_norm":
        assert case.x.shape[case.params["channel_axis"] % case.x.ndim] // case.params["groups"] >= 2
    if norm in AXES_NORMS and not _fixed(declaration, "axes"):
        sizes = [case.x.shape[a] for a in case.params["axes"]]
        assert len(sizes) >= 2 and min(sizes) > 1, case.describe()
    if "channel_axis" in case.params and record.statistics != "axes":
        axis = case.params["channel_axis"] % case.x.ndim
        assert axis == 0 or case.x.shape[0] != case.x.shape[axis], case.describe()
    # size-1 axes, and the cumulative average (momentum=None) where there are running statistics
    case, _ = _cover("size_1_axes_cumulative", norm, declaration)
    assert 1 in case.x.shape, case.describe()
    if "momentum" in case.params and not _fixed(declaration, "momentum"):
        assert case.params["momentum"] is None


def test_shape_pools_hold_what_the_covers_rely_on():
    for rank, pool in strategies.SHAPE_POOL.items():
        assert min(pool[0]) > 1 or rank == 1 and pool[0][0] > 1
        assert 1 in pool[1]
        if rank > 1:
            assert pool[0][0] != pool[0][1]


def test_every_property_runs_every_cover_first():
    """Each @given property of conformance/ is decorated with strategies.covering (one explicit example
    per regime of COVERS, run before its random draws)."""
    found = 0
    for path in sorted(Path(suite.__file__).parent.glob("test_*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for k, line in enumerate(lines):
            if line.startswith("@given("):
                assert lines[k - 1] == "@strategies.covering", f"{path.name}:{k + 1} runs no covers"
                found += 1
    assert found >= 10


@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm", "lp_normalize", "local_response_norm"])
def test_a_property_asking_for_value_kinds_draws_only_those(norm):
    """case(..., kinds): the draws and every cover (even one forcing another kind) are of those kinds."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    kinds = ("integers", "positive")
    drawn = set()

    @settings(max_examples=40, database=None, derandomize=True, deadline=None)
    @given(data=st.data())
    def draw(data):
        drawn.add(data.draw(strategies.case(norm, None, "float32", kinds)).kind)

    draw()
    for regime in strategies.COVERS:
        drawn.add(strategies.Cover(regime).draw(strategies.case(norm, None, "float32", kinds)).kind)
    assert drawn == set(kinds)


# --- the program pool of compiled frameworks ---------------------------------------------------------

COMPILED = [
    (f"{name}-{norm}", norm, declaration)
    for name in adapters.built_in()
    if adapters.get(name).compiles
    for norm, declaration in adapters.get(name).declarations.items()
]


def _signature(case) -> tuple:
    """What a compiled framework's program depends on: the shape and every parameter but the arrays'
    values (an array or a running state by its shape)."""

    def static(value):
        if isinstance(value, np.ndarray):
            return ("array", value.shape)
        if hasattr(value, "mean") and hasattr(value, "var"):
            return ("state", np.shape(value.mean))
        return value

    return case.x.shape, tuple(sorted((k, static(v)) for k, v in case.params.items()))


def _pooled_draws(norm, declaration, dtype, count=60) -> list:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    drawn = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def draw(data):
        drawn.append(data.draw(strategies.case(norm, declaration, dtype)))

    with strategies.programs(pooled=True):
        draw()
    return drawn


def _dtype_of(declaration) -> str:
    return "float32" if "float32" in declaration.dtypes else declaration.dtypes[-1]


@pytest.mark.parametrize("label, norm, declaration", COMPILED, ids=[c[0] for c in COMPILED])
def test_compiled_draws_take_their_configuration_from_the_pool(label, norm, declaration):
    """A compiled framework's random draws configure only the programs of the pool's entries (at most
    one per entry), while their values vary from draw to draw."""
    dtype = _dtype_of(declaration)
    programs = {_signature(strategies.program_case(name, norm, declaration, dtype)) for name in regimes.POOL}
    drawn = _pooled_draws(norm, declaration, dtype)
    outside = [case.describe() for case in drawn if _signature(case) not in programs]
    assert not outside, outside[:2]
    by_program: dict = {}
    for case in drawn:
        by_program.setdefault(_signature(case), []).append(case.x)
    repeated = [xs for xs in by_program.values() if len(xs) > 1]
    assert repeated and any(not np.array_equal(xs[0], xs[1], equal_nan=True) for xs in repeated)


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_the_pool_holds_every_code_path(norm):
    """The pool's configurations (generic declaration) hold what the strategies exist for: N != C, a
    size-1 axis, channels first and last, several channels per group, 2-d normalized axes, 10^4-value
    reductions, training and eval with and without running statistics, the cumulative average."""
    record = NORMS[norm]
    cases = [strategies.program_case(name, norm, None, "float32") for name in regimes.POOL]
    assert any(1 in case.x.shape for case in cases)
    assert any(min(case.x.shape) > 1 for case in cases)
    assert any(record.reduction_length(case.x, case.params) >= value_draws.LONG for case in cases) or (
        norm in ("channel_normalize", "local_response_norm")
    )
    if norm == "local_response_norm":
        assert any(case.params["size"] > value_draws.LONG for case in cases)
        assert len({case.params["size"] for case in cases}) >= 4
    if "channel_axis" in record.parameters() and norm != "channel_normalize":
        axes = {case.params["channel_axis"] % case.x.ndim == case.x.ndim - 1 for case in cases}
        assert axes == {True, False}
        assert any(case.x.shape[0] != case.x.shape[case.params["channel_axis"]] for case in cases)
    if norm == "group_norm":
        per_group = {case.x.shape[case.params["channel_axis"]] // case.params["groups"] for case in cases}
        assert max(per_group) >= 2 and len({c.params["assignment"] for c in cases}) == 2
    if norm in AXES_NORMS:
        assert any(len(case.params["axes"]) >= 2 for case in cases)
        assert any(
            case.params["axes"] != tuple(range(case.x.ndim - len(case.params["axes"]), case.x.ndim))
            for case in cases
        )
    if norm == "lp_normalize":
        assert {case.params["p"] for case in cases} == {1.0, 2.0, 3.0}
        assert len({case.params["eps_placement"] for case in cases}) >= 4
    if record.stateful:
        modes = {(case.params["training"], "state" in case.params) for case in cases}
        assert modes >= {(True, True), (False, True), (True, False)}, modes
        assert any(case.params["momentum"] is None for case in cases)
        assert len({case.params["momentum"] for case in cases}) >= 4
        assert {case.params["running_var"] for case in cases} == {"biased", "unbiased"}
    if "replica_sizes" in record.parameters():
        assert {case.params["weighting"] for case in cases} == {"count", "equal"}
        assert any(len(set(case.params["replica_sizes"])) > 1 for case in cases)
    if "eps" in record.parameters():
        assert len({case.params.get("eps") for case in cases}) >= 4


def test_every_cover_runs_on_a_pool_entry():
    assert set(regimes.COVER_PROGRAMS) == set(strategies.COVERS)
    assert set(regimes.COVER_PROGRAMS.values()) <= set(regimes.POOL)
