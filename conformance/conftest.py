"""pytest configuration of the conformance suite: adapter selection, profiles, seed, results file.

    pytest conformance/ --adapters torch.nn,flax.linen --profile quick --seed 1 --results out.jsonl
    pytest conformance/ --impl my_norms.py            # your own implementation (adapters/plugin.py)

    pytest conformance/ --isolate 60                  # each call in a child process, at most 60 s

`NORMCONF_ADAPTERS`, `NORMCONF_IMPL`, `NORMCONF_PROFILE`, `NORMCONF_SEED` and `NORMCONF_ISOLATE` do the same
from the environment.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from normconf import adapters
from normconf.pytest_plugin import DEFAULT_SEED, PROFILE_NAMES

PROFILES = {
    # examples per property: quick (CI, the same examples every run), default (`normconf run`), thorough
    # (nightly, its failures saved in a persistent example database and replayed first next time)
    "quick": dict(max_examples=8, deadline=None, derandomize=True, database=None),
    "default": dict(max_examples=40, deadline=None, database=None),
    "thorough": dict(
        max_examples=300,
        deadline=None,
        database=DirectoryBasedExampleDatabase(os.environ.get("NORMCONF_DATABASE", ".hypothesis/normconf")),
    ),
}
# no explain phase: it replays variations of the minimal failing example after shrinking, which costs
# time and says nothing the repro and the diagnosis do not
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
# the --profile choices are offered by the pytest plugin (normconf/pytest_plugin.py: the options must be
# known before this conftest is, for `pytest --pyargs normconf.conformance --impl ...`)
assert set(PROFILES) == set(PROFILE_NAMES), "normconf.pytest_plugin.PROFILE_NAMES lists the profiles"
for _name, _options in PROFILES.items():
    # `cell` is function-scoped on purpose: it accumulates one result over all examples of a test.
    settings.register_profile(
        _name,
        phases=PHASES,
        # one failure per cell is its verdict: the first failing cover stops the cell (the others may
        # cost a hang), and one bug is shrunk, not every distinct one
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.nested_given,  # a covering example draws the simplest example of a strategy
        ],
        **_options,
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "targets(norms=None, need=None, widest=False, no_argument_call=False, policies=('none',)): "
        "which matrix cells a property runs on",
    )
    from normconf.adapters.base import DTYPES, NORMS, POLICIES

    for option, known in (("norms", NORMS), ("dtypes", DTYPES), ("policies", POLICIES)):
        unknown = sorted({v.strip() for v in config.getoption(option).split(",") if v.strip()} - set(known))
        if unknown:
            raise pytest.UsageError(f"--{option}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    from normconf.adapters import _devices

    try:  # the device and TF32 choices, before any framework reads them
        _devices.accelerators_allowed(), _devices.tf32_requested()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("no_compile_cache"):
        from normconf.adapters import _compile_cache

        os.environ[_compile_cache.SWITCH] = "0"  # read where JAX is first configured, here or in a child
    isolate = config.getoption("isolate").strip()
    if isolate:
        if isolate != "on":
            try:
                assert float(isolate) > 0
            except (ValueError, AssertionError):
                raise pytest.UsageError(
                    f"--isolate: a positive number of seconds or 'on', got {isolate!r}"
                ) from None
        os.environ[adapters.ISOLATE] = isolate  # read by adapters.get, before any adapter is loaded
        adapters.get.cache_clear()
    settings.load_profile(config.getoption("profile"))


@dataclass(frozen=True)
class Target:
    """One adapter x norm x dtype cell of the conformance matrix."""

    adapter: str
    norm: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.adapter}-{self.norm}-{self.dtype}"


def selected_adapters(config) -> list[str]:
    from normconf.adapters.plugin import PluginError

    listed = [n.strip() for n in config.getoption("adapters").split(",") if n.strip()]
    impls = [n.strip() for n in config.getoption("impl").split(",") if n.strip()]
    chosen = listed + [n for n in impls if n not in listed]
    for name in chosen:
        try:
            adapters.get(name)  # raises UnknownAdapter, naming the known ones
        except (adapters.UnknownAdapter, PluginError) as exc:
            raise pytest.UsageError(str(exc).strip('"')) from None
    policies = {p.strip() for p in config.getoption("policies").split(",") if p.strip()}
    return [n for n in chosen or adapters.names() if not policies or adapters.get(n).policy_name in policies]


def targets(config, norms=None, need=None, widest=False, no_argument_call=False, policies=None) -> list:
    """pytest params for every selected adapter x declared norm x declared dtype (skips carry reasons).
    `widest`: only float32 (else the widest dtype declared); `no_argument_call`: only norms the adapter
    can call with the framework's own defaults (`Adapter.no_argument_calls`); `policies`: the adapters'
    mixed-precision policies it runs under - plain adapters only unless a property says so (MP.P1: the
    forward, gradient and running-state properties run under the mixed policy too)."""
    from normconf.adapters.base import DTYPES

    policies = ("none",) if policies is None else policies
    only_norms = {n.strip() for n in config.getoption("norms").split(",") if n.strip()}
    only_dtypes = {d.strip() for d in config.getoption("dtypes").split(",") if d.strip()}
    params = []
    for name in selected_adapters(config):
        adapter = adapters.get(name)
        if adapter.policy_name not in policies:
            continue
        ok, reason = adapter.available()
        for norm, declaration in adapter.declarations.items():
            if (norms is not None and norm not in norms) or (only_norms and norm not in only_norms):
                continue
            if need and not all(getattr(declaration, flag) for flag in need):
                continue
            if no_argument_call and norm not in adapter.no_argument_calls():
                continue
            missing = (
                getattr(adapter, "cannot_run", lambda _: "")(norm) if ok else ""
            )  # what this machine lacks
            dtypes = declaration.dtypes
            if widest:  # float32, the dtype defaults are chosen for, else the widest declared
                dtypes = ("float32",) if "float32" in dtypes else (max(dtypes, key=DTYPES.index),)
            for dtype in dtypes:
                if only_dtypes and dtype not in only_dtypes:
                    continue
                target = Target(name, norm, dtype)
                marks = (
                    [] if ok and not missing else [pytest.mark.skip(reason=f"{name}: {reason or missing}")]
                )
                params.append(pytest.param(target, id=target.id, marks=marks))
    return params


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("targets")
        options = marker.kwargs if marker else {}
        metafunc.parametrize("target", targets(metafunc.config, **options))


@pytest.fixture(scope="session")
def recorder(pytestconfig):
    return _recorder(pytestconfig)


def _recorder(config):
    """The session's results writer, made on first use (the session record opens the file)."""
    if _RECORDER not in config.stash:
        from .results import Recorder

        seed, origin = session_seed(config)
        config.stash[_RECORDER] = Recorder(
            config.getoption("results"), profile=config.getoption("profile"), seed=seed, origin=origin
        )
    return config.stash[_RECORDER]


_SEED = pytest.StashKey[tuple]()


def session_seed(config) -> tuple[int, str]:
    """The session's seed and where it came from: --seed (or NORMCONF_SEED); else DEFAULT_SEED for a
    derandomized profile (quick: the same sample every run); else one drawn for this run and recorded,
    so any run can be drawn again."""
    if _SEED not in config.stash:
        given, profile = config.getoption("seed"), config.getoption("profile")
        if given is not None:
            config.stash[_SEED] = (given, "given")
        elif PROFILES[profile].get("derandomize"):
            config.stash[_SEED] = (DEFAULT_SEED, f"the {profile} profile's default")
        else:
            config.stash[_SEED] = (secrets.randbits(32), "drawn for this run")
    return config.stash[_SEED]


def cell_seed(seed: int, item) -> int:
    """The seed one test draws from: derived from the session's seed and the test's identity (property x
    adapter x norm x dtype), never its source text - editing a property keeps its sample; another seed,
    another sample under every profile (the quick one included); the same seed, the same sample."""
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    where = f"{target.adapter}:{target.norm}:{target.dtype}" if isinstance(target, Target) else item.nodeid
    identity = f"{seed}:{item.originalname}:{where}"
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=16).digest(), "big")


def _adapter_of(item) -> str:
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    return target.adapter if isinstance(target, Target) else ""


def pytest_collection_modifyitems(session, config, items):
    """Each adapter's cells together, adapters in the order selected (normconf run lists them most
    costly first): one adapter's child process at a time, and a queue the workers can share. With
    --claims, the count of cells per adapter goes to <claims>/../cells.json for the run's progress."""
    rank = {name: i for i, name in enumerate(selected_adapters(config))}
    if config.getoption("adapters").strip() or config.getoption("impl").strip():
        _deselect_other_adapters_meta_tests(config, items, set(rank))
    items.sort(key=lambda item: rank.get(_adapter_of(item), -1))  # stable: each adapter's own order kept
    claims = config.getoption("claims")
    if claims:
        import json

        Path(claims).mkdir(parents=True, exist_ok=True)
        cells = Path(claims).parent / "cells.json"
        counts: dict = {}  # adapter -> norm -> cells
        for item in items:
            if _adapter_of(item):
                norms = counts.setdefault(_adapter_of(item), {})
                norm = item.callspec.params["target"].norm
                norms[norm] = norms.get(norm, 0) + 1
        partial = cells.with_name(f"cells.json.{os.getpid()}")
        partial.write_text(json.dumps(counts), encoding="utf-8")
        os.replace(partial, cells)


def _deselect_other_adapters_meta_tests(config, items, chosen: set[str]) -> None:
    """A run of chosen adapters runs the meta-tests of those adapters only: a known divergence's test
    where the entry names one of them, none of the suite's self-tests (mutations, mutants) - a user
    checking torch.nn does not wait on flax's divergences."""
    meta = Path(__file__).parent / "meta"

    def kept(item) -> bool:
        if meta not in Path(str(item.path)).parents:
            return True
        params = getattr(item, "callspec", None) and item.callspec.params or {}
        if "name" in params:
            return params["name"] in chosen
        entry = params.get("entry")
        return entry is not None and hasattr(entry, "names") and any(entry.names(n) for n in chosen)

    deselected = [item for item in items if not kept(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if kept(item)]


def claim_name(adapter: str) -> str:
    """The claim file's name for `adapter` (a plug-in's name may be a path)."""
    from urllib.parse import quote

    return quote(adapter, safe="")


_CLAIMS = pytest.StashKey[dict]()  # adapter -> True (this worker's) / False (another worker's)
_LAST = pytest.StashKey[str]()  # the adapter of the previous cell


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """With --claims: skip (silently) the cells of adapters another worker claimed; claim the next one
    on reaching its first cell. Moving on from an adapter closes its isolated child (its framework's
    thread pools would otherwise stay alive beside the next adapter's)."""
    config = item.config
    claims = config.getoption("claims")
    adapter = _adapter_of(item)
    mine = config.stash.setdefault(_CLAIMS, {})
    previous = config.stash.get(_LAST, None)
    if previous is not None and previous != adapter:
        from normconf.adapters import _isolated

        _isolated.close_adapter(previous)
    config.stash[_LAST] = adapter
    if not claims or not adapter:  # a test of no adapter (an empty parameter set) runs in every worker
        return None
    if adapter not in mine:
        try:
            fd = os.open(Path(claims) / claim_name(adapter), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            mine[adapter] = False
        else:
            results = config.getoption("results") or ""
            os.write(fd, f"{Path(results).stem} {time.time()}".encode())
            os.close(fd)
            mine[adapter] = True
    return None if mine[adapter] else True


def pytest_runtest_teardown(item):
    """A cell skipped before its fixtures ran (framework not installed) still gets a result record."""
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    if (
        isinstance(target, Target)
        and "cell" not in item.funcargs
        and item.stash.get(_OUTCOME, "") == "skipped"
    ):
        _recorder(item.config).skipped(
            item.nodeid, target, item.originalname.removeprefix("test_"), item.stash.get(_MESSAGE, "")
        )


@pytest.hookimpl(trylast=True)  # after pytest's own teardown, which still records an interrupted test's cell
def pytest_sessionfinish(session, exitstatus):
    if _RECORDER in session.config.stash:
        session.config.stash[_RECORDER].finish(exitstatus)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Ctrl-C during a test: its cell is recorded as interrupted, not as an error. Each property draws
    from its cell's own seed (`cell_seed`): hypothesis reads the seed from the test function, which every
    cell of a property shares, when it is called."""
    test = getattr(item, "obj", None)
    seeded = hasattr(test, "hypothesis")
    saved = getattr(test, "_hypothesis_internal_use_seed", None)
    if seeded:
        test._hypothesis_internal_use_seed = cell_seed(session_seed(item.config)[0], item)
        inner = test.hypothesis.inner_test
        test.hypothesis.inner_test = _giving_up(inner)
    try:
        return (yield)
    except KeyboardInterrupt:
        item.stash[_OUTCOME] = "interrupted"
        raise
    finally:
        if seeded:
            test._hypothesis_internal_use_seed = saved
            test.hypothesis.inner_test = inner


# Drawn examples a cell rejects before it gives up, when none has been judged yet: a cell whose every
# example its framework cannot express (a declared refusal of the eps = 0 a property fixes, an
# eval-only layer asked for training) is unsupported after these, not after hypothesis' hundreds.
# Basis: over the quick gate's 2 514 cells (2026-12-07), the latest first judged example came after 59
# rejections (results record drawn.first_judged_after); 150 is 2.5 x that.
GIVE_UP_AFTER = 150


def _giving_up(inner):
    """`inner` (hypothesis' per-example test), counting rejected examples on the cell: once
    GIVE_UP_AFTER were drawn and none judged, the cell is skipped as unsupported."""
    from hypothesis.errors import UnsatisfiedAssumption

    @functools.wraps(inner)
    def judged(*args, **kwargs):
        cell = kwargs.get("cell")
        try:
            result = inner(*args, **kwargs)
        except UnsatisfiedAssumption:
            if cell is not None:
                cell.rejected += 1
                if not cell.judged and cell.rejected >= GIVE_UP_AFTER:
                    pytest.skip(f"unsupported: no example expressible (none of {cell.rejected} drawn)")
            raise
        except BaseException:
            _count_judged(cell)
            raise
        _count_judged(cell)
        return result

    return judged


def _count_judged(cell) -> None:
    if cell is not None:
        if not cell.judged:
            cell.first_judged_after = cell.rejected
        cell.judged += 1


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    from hypothesis.errors import Unsatisfiable

    if call.excinfo is not None and call.excinfo.errisinstance(Unsatisfiable):
        # every drawn example was one the framework cannot express: an unsupported cell, not an error
        report.outcome, report.longrepr = (
            "skipped",
            (str(item.path), 0, "Skipped: unsupported: no example expressible"),
        )
    if report.when == "call" or (report.when == "setup" and report.skipped):
        item.stash[_OUTCOME] = report.outcome
        item.stash[_MESSAGE] = _message(report)
    return report


def _message(report) -> str:
    """A skip's reason or a failure's one-line cause, for the results record."""
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return getattr(getattr(report.longrepr, "reprcrash", None), "message", "") or ""


_OUTCOME = pytest.StashKey[str]()
_MESSAGE = pytest.StashKey[str]()
_RECORDER = pytest.StashKey[object]()
_RUN = pytest.StashKey[object]()  # harness.RunState: the cells stopped by a protocol error or hangs


@pytest.fixture
def cell(request, target, recorder):
    """The result cell of this test: adapter x norm x dtype x property (the test's name)."""
    from normconf import adapters

    from . import clock, strategies
    from .harness import Cell, RunState

    run = request.config.stash.setdefault(_RUN, RunState())
    reason = run.stopped_because(target.adapter, target.norm, target.dtype)
    if reason:
        pytest.skip(reason)
    prop = request.node.originalname.removeprefix("test_")
    adapter = adapters.get(target.adapter)
    recorder.environment(adapter)
    before = adapter.counters()
    clock.take(0.0)  # what ran before this cell is not its time
    current = Cell(target.adapter, target.norm, target.dtype, prop, run=run)
    with strategies.programs(pooled=adapter.compiles):  # compiled frameworks: the program pool
        yield current
    current.time = clock.take(time.monotonic() - current.started)
    current.counters = {k: v - before.get(k, 0) for k, v in adapter.counters().items()}
    recorder.cell(
        request.node.nodeid,
        current,
        request.node.stash.get(_OUTCOME, "failed"),
        request.node.stash.get(_MESSAGE, ""),
    )
