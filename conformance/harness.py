"""Running one drawn example through the reference and an adapter, and settling the verdict.

`Cell` follows one test (adapter x norm x dtype x property) across all its hypothesis examples: it
keeps the worst passing comparison and the last failing one (after shrinking, the minimal example),
and writes one result record when the test ends (see results.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import reject, target
from hypothesis.control import current_build_context
from hypothesis.errors import InvalidArgument

from normconf import adapters
from normconf import reference as R
from normconf.adapters import _isolated, _repro
from normconf.vocabulary import levels, models
from normconf.vocabulary import tolerances as T
from normconf.vocabulary.case import Case

from . import checks, clock, divergences
from .checks import Verdict


class Abandoned(BaseException):
    """A cell given up because its framework crashed or hung, or a plug-in answered outside the protocol
    (a BaseException, so hypothesis does not replay and shrink the example; pytest reports the test as
    failed with this message)."""


HANG_BUDGET = 180.0  # past this many seconds of timeouts an adapter's remaining cells are skipped


@dataclass
class RunState:
    """What a session of the suite learns as it runs and later cells must see - one per pytest session,
    kept in its config.stash (conftest.py), handed to each Cell."""

    # (adapter, norm, dtype), (adapter, norm) or (adapter,) -> why the rest of its cells are skipped: a
    # plug-in's protocol error recurs on every example, a hang costs a timeout each time (HANG_BUDGET)
    stopped: dict[tuple, str] = field(default_factory=dict)
    hung: dict[str, float] = field(default_factory=dict)  # adapter -> seconds its timed-out calls cost

    def stopped_because(self, adapter: str, norm: str, dtype: str) -> str | None:
        """Why this cell is not run (an earlier protocol error or hang of its adapter), or None."""
        for key in ((adapter, norm, dtype), (adapter, norm), (adapter,)):
            if key in self.stopped:
                return self.stopped[key]
        return None


def reference_or_reject(case: Case, vjp_of=None):
    """The reference's answer, or hypothesis.reject() when the drawn parameters break a C-clause."""
    try:
        with clock.timed("reference"):
            if vjp_of is not None:
                return getattr(R, f"{case.norm}_vjp")(vjp_of, case.x, **case.params)
            return getattr(R, case.norm)(case.x, **case.params)
    except R.ClauseError:
        reject()


def run_or_reject(cell: "Cell", case: Case, clause: str, cotangent=None, call=None):
    """The adapter's outcome for `case.norm` (or of `call()`, another way to run the adapter); reject()
    when the framework cannot express the example (counted); and a settled failure when the framework
    raises on an input the spec defines."""
    try:
        adapter = adapters.get(cell.adapter)
        if call is None:

            def call():
                return adapter.run(case.norm, case.x, case.params, dtype=cell.dtype, cotangent=cotangent)

        return timed_call(adapter, call)
    except adapters.Unsupported as exc:
        cell.unsupported[str(exc)] = cell.unsupported.get(str(exc), 0) + 1
        reject()
    except (_isolated.ChildDied, _isolated.ChildTimedOut) as exc:  # only with isolation (NORMCONF_ISOLATE)
        cell.abandon(
            "timed out" if isinstance(exc, _isolated.ChildTimedOut) else "crashed", clause, str(exc), case
        )
    except Exception as exc:
        if cell.adapter not in adapters.built_in() and broke_protocol(exc):  # the plug-in's, not the spec's
            cell.abandon("protocol error", PROTOCOL, f"{type(exc).__name__}: {exc}{PROTOCOL_HINT}", case)
        # an implementation refused an input the spec defines: a result at that input's level, not a crash
        # of the suite, and the rest is still judged
        raised = T.Comparison(math.inf, 0.0, math.inf, math.nan, ())
        cell.settle(
            Verdict(
                clause,
                cell.adapter,
                cell.norm,
                cell.dtype,
                f"refuses the input: raised {type(exc).__name__}: {exc}",
                raised,
                "the spec defines this input",
                case.describe(),
            ),
            case,
        )
        reject()  # reached only when a known divergence explains the error


PROTOCOL = "plug-in protocol"  # what a protocol error's record names instead of a spec clause
PROTOCOL_HINT = (
    " - for inputs it does not support, raise normconf.adapters.Unsupported or declare "
    "refuses={parameter: [values]} (adapters/plugin.py)"
)
# a call that broke the plug-in protocol rather than refusing an input: its arguments or its answer
_SIGNATURE = ("positional argument", "keyword argument", "unexpected keyword", "required keyword")


def broke_protocol(exc: BaseException) -> bool:
    """Whether a plug-in's exception is a protocol error (an answer of the wrong type, dtype or shape; a
    signature that does not take what it is passed) rather than the refusal of an input."""
    from normconf.adapters.plugin import ProtocolError

    return isinstance(exc, ProtocolError) or (
        isinstance(exc, TypeError) and any(words in str(exc) for words in _SIGNATURE)
    )


def timed_call(adapter, call):
    """call() counted to the clock's framework phase; for an isolated adapter the round trip beyond
    the child's own time counts to ipc."""
    started = time.perf_counter()
    try:
        with clock.timed("framework"):
            return call()
    finally:
        child = getattr(adapter, "last_call_seconds", None)
        if child is not None:
            clock.move(time.perf_counter() - started - child, "framework", "ipc")


def _climb(verdict: Verdict) -> None:
    """hypothesis.target() on the error against the budget, so the search climbs toward the worst case
    (the first comparison of each quantity in an example; not outside a hypothesis example)."""
    ratio = verdict.comparison.ratio
    try:
        context = current_build_context()
    except InvalidArgument:
        return
    label = f"{verdict.what} error / budget"
    if math.isfinite(ratio) and label not in context.data.target_observations:
        target(ratio, label=label)


def _considered(misses) -> str:
    """What a finding says of the known divergences whose territory held it: each one's model and by how
    much the framework missed it."""
    return "".join(
        f"\nconsidered [{entry.clause}] {entry.adapters}: {entry.reason} - its model "
        f"({entry.model.describe() if entry.model else 'none'}) misses by "
        f"{judged.miss:.3g}x its budget ({judged.where})"
        for entry, judged in misses
    )


def _failure_text(verdict: Verdict, misses, case: Case, script: str, acc: str) -> str:
    level = levels.of_example(case, acc, verdict.clause)
    where = f"level: {level} ({levels.CLAUSES[level]}); " if verdict.clause != PROTOCOL else ""
    return (
        f"{verdict.message()}\n{where}regime: {levels.regime(case, acc)}"
        f"{_considered(misses)}\nexample: {case.describe()}\nrepro:\n{script}"
    )


def repro(cell: "Cell", case: Case) -> str:
    """A standalone script that replays the example through the adapter, prints both answers and the
    verdict under the same budget, and exits 1 when the comparison fails (so it reproduces a failure)."""
    lines = [
        "import numpy as np",
        "from normconf import reference as R",
        "nan, inf = float('nan'), float('inf')",
        f"x = np.array({_repro.values(case.x)})",
    ]
    params = []
    for key, value in case.params.items():
        if isinstance(value, R.RunningStats):
            params.append(
                f"{key!r}: R.RunningStats(np.array({_repro.values(value.mean)}), "
                f"np.array({_repro.values(value.var)}), "
                f"{value.num_batches_tracked})"
            )
        elif isinstance(value, np.ndarray):
            params.append(f"{key!r}: np.array({_repro.values(value)})")
        else:
            params.append(f"{key!r}: {value!r}")
    lines.append("params = {" + ", ".join(params) + "}")
    alone = _framework_alone(cell, case)
    if alone:  # the same call with the framework alone, for a report upstream: run first, easy to copy
        lines += [
            "FRAMEWORK_ALONE = " + repr(alone),
            "print('--- the framework alone ---'); exec(FRAMEWORK_ALONE, {}); "
            "print('--- through normconf ---')",
        ]
    clause = cell.failure or (cell.expected[1] if cell.expected else None)
    clause = clause.clause if clause is not None else ""
    if case.cotangent is not None:  # a gradient example: replay the VJP with the same output cotangent
        lines.append(f"g = np.array({_repro.values(case.cotangent)})")
    lines += [
        "from normconf.conformance.harness import replay",
        f"raise SystemExit(replay({loadable(cell.adapter)!r}, {cell.norm!r}, {cell.dtype!r}, {clause!r}, "
        f"x, params{', g' if case.cotangent is not None else ''}))",
    ]
    return "\n".join(lines) + "\n"


def replay(adapter_name: str, norm: str, dtype: str, clause: str, x, params: dict, g=None) -> int:
    """What a repro runs: the example through the adapter and the reference (the VJP's, given the
    output cotangent `g`), both answers and the verdict under the suite's budget printed; 1 when the
    comparison fails, so a repro of a failure fails."""
    adapter = adapters.get(adapter_name)
    declaration = adapter.declarations[norm]
    if g is not None:
        framework = adapter.run(norm, x, params, dtype=dtype, cotangent=g)
        expected = getattr(R, f"{norm}_vjp")(g, x, **params)
        want = {k: getattr(expected, k) for k in ("x", "scale", "offset") if getattr(expected, k) is not None}
        bounds = checks.gradient_budget(norm, x, params, g, want, **declaration.gradient_budget_dtypes(dtype))
        held = {
            "x": dtype,
            "scale": declaration.parameter_dtype(dtype),
            "offset": declaration.parameter_dtype(dtype),
        }
        verdicts = [
            checks.check(
                clause,
                adapter.name,
                norm,
                held[k],
                f"d{k}",
                getattr(framework.grads, k),
                want[k],
                (bounds[k], "NUM.N8"),
                {},
            )
            for k in want
        ]
        for k in want:
            print(f"d{k}", "framework:", getattr(framework.grads, k), "reference:", want[k])
    else:
        framework = adapter.run(norm, x, params, dtype=dtype)
        expected = getattr(R, norm)(x, **params)
        want = getattr(expected, "y", expected)
        print("framework:", framework.y)
        print("reference:", want)
        budget_and_basis = checks.budget(norm, x, params, want, **declaration.budget_dtypes(dtype))
        verdicts = [
            checks.check(clause, adapter.name, norm, dtype, "y", framework.y, want, budget_and_basis, {})
        ]
        if any(isinstance(v, R.RunningStats) for v in params.values()):
            print("framework state:", framework.state)
            print("reference state:", getattr(expected, "state", None))
    for verdict in verdicts:
        print(("ok  " if verdict.passed else "FAIL") + " " + verdict.message())
    return 0 if all(v.passed for v in verdicts) else 1


def loadable(name: str) -> str:
    """The adapter's name as a repro run from any folder loads it: a plug-in file by its absolute path."""
    path, colon, attribute = name.partition(":") if not name.endswith(".py") else (name, "", "")
    if path.endswith(".py") and Path(path).is_file():
        return str(Path(path).resolve()) + colon + attribute
    return name


def _framework_alone(cell: "Cell", case: Case) -> str | None:
    """The adapter's own framework-only repro of this example, when it can write one (not after a crash
    or a hang: writing it replays the call, which would crash or hang again)."""
    if cell.abnormal is not None:
        return None
    try:
        script = adapters.get(cell.adapter).framework_repro(
            case.norm, case.x, case.params, dtype=cell.dtype, cotangent=case.cotangent
        )
    except Exception:  # an example the framework refuses has no call to write out
        return None
    # written in the adapter's isolated child, which drew nothing: long arrays as this process drew them
    return _repro.with_recipes(script) if script else script


@dataclass
class Cell:
    adapter: str
    norm: str
    dtype: str
    prop: str
    worst_pass: Verdict | None = None
    failure: Verdict | None = None
    failure_case: Case | None = None
    expected: tuple | None = None  # (divergence, verdict, case): the latest example a divergence explained
    explained: set = field(default_factory=set)  # every divergence clause that explained one of its examples
    levels: set = field(default_factory=set)  # the levels (NUM.L5) of those divergences and of a finding
    unsupported: dict = field(default_factory=dict)
    examples: int = 0
    judged: int = 0  # drawn examples the property ran to the end (conftest._giving_up)
    rejected: int = 0  # drawn examples it rejected (unexpressible, or no reference: hypothesis' reject())
    first_judged_after: int | None = None  # rejections before the first judged example
    started: float = field(default_factory=time.monotonic)
    first_reported: dict | None = None  # {"examples", "seconds"} when the first divergence or finding came
    observations: list = field(default_factory=list)  # recorded, not judged (constraint violations)
    # "crashed" or "timed out" (the framework's child process was lost), or "protocol error" (a plug-in
    # raised, or returned the wrong type, dtype or shape)
    abnormal: str | None = None
    missed: list = field(default_factory=list)  # [(divergence, models.Judged)] considered for the finding
    time: dict | None = None  # seconds per clock phase, when the cell ends (clock.take)
    counters: dict = field(default_factory=dict)  # the framework's work during the cell (compilations)
    run: RunState = field(default_factory=RunState, repr=False)  # the session's, shared by its cells
    _repros: dict = field(default_factory=dict, repr=False)  # id(case) -> (case, its repro script)

    def repro(self, case: Case) -> str:
        """The repro script of `case` (`repro`), written once: the failure message and the result record
        show the same text (writing one runs the framework again for its framework-alone script)."""
        if id(case) not in self._repros:  # the case is kept beside it, so its id is not reused
            self._repros[id(case)] = (case, repro(self, case))
        return self._repros[id(case)][1]

    @property
    def acc(self) -> str:
        """The dtype the adapter declares its statistics in for this cell (the levels read it)."""
        return adapters.accumulation(self.adapter, self.norm, self.dtype)

    def _repr_pretty_(self, printer, cycle) -> None:
        """Short, as hypothesis prints a covering example's arguments (the whole record would cost ms)."""
        printer.text(f"Cell({self.adapter!r}, {self.norm!r}, {self.dtype!r}, {self.prop!r})")

    def check(
        self,
        *,
        clause: str,
        what: str,
        actual,
        expected,
        budget: tuple,
        case: Case,
        diagnose=None,
        also: tuple = (),
        explained_by: Case | None = None,
        observed: tuple = (),
        dtype: str | None = None,
    ) -> Verdict:
        """One comparison of this cell, settled: `actual` against `expected` under `budget` ((bound,
        basis), as checks.budget gives it), recorded for `case` (see settle for `also`, `explained_by`
        and `observed`); `diagnose(actual, bound)` may name what explains a failure; `dtype`: the one the
        quantity is held in where it is not the input's (a mixed policy's float32 parameter gradients
        and state, MP.N1: no budget below its own rounding, not the half type's). The one call shape
        every property uses."""
        verdict = checks.check(
            clause,
            self.adapter,
            self.norm,
            dtype or self.dtype,
            what,
            actual,
            expected,
            budget,
            case.describe(),
            diagnose=diagnose,
        )
        self.settle(verdict, case, also=also, explained_by=explained_by, observed=observed)
        return verdict

    def check_dtype(self, *, clause: str, what: str, actual: str | None, expected: str, case: Case) -> None:
        """The dtype an array came out in against the declared one (MP.N2): a mismatch is a finding,
        whatever the values, and no divergence excuses it - the declaration is what a porter reads. An
        adapter that does not report its dtype (`actual` None) is not judged."""
        if actual is None or actual == expected:
            return
        failed = Verdict(
            clause,
            self.adapter,
            self.norm,
            self.dtype,
            f"{what} came out {actual}, declared {expected}",
            T.Comparison(math.inf, 0.0, math.inf, math.nan, ()),
            "the adapter's declaration (NormDeclaration.output)",
            case.describe(),
        )
        self.examples += 1
        self.failure, self.failure_case = failed, case
        raise AssertionError(_failure_text(failed, [], case, self.repro(case), self.acc))

    def settle(
        self,
        verdict: Verdict,
        case: Case,
        also: tuple = (),
        explained_by: Case | None = None,
        observed: tuple = (),
    ) -> None:
        """Record the verdict; a failure is an expected divergence only when a known divergence whose
        territory holds it *and whose model agrees with what the framework answered* explains it;
        otherwise it fails the test with a repro, naming the divergences considered and their misses.
        `also`: further cases the verdict depends on (an identity's other side), whose divergences count;
        `explained_by`: the clean input a special value was put in, whose divergences count in its place
        (so the special value cannot trip a predicate); on `case` only entries about non-finite inputs.
        `observed`: the framework's answers the models judge (default: the verdict's own array)."""
        self.examples += 1
        _climb(verdict)
        if verdict.passed:
            if self.worst_pass is None or verdict.comparison.ratio > self.worst_pass.comparison.ratio:
                self.worst_pass = verdict
            return
        if self.first_reported is None:
            self.first_reported = {
                "examples": self.examples,
                "seconds": round(time.monotonic() - self.started, 3),
            }
        with clock.timed("judge"):
            self._judge(verdict, case, also, explained_by, observed)

    def _judge(self, verdict, case, also, explained_by, observed) -> None:
        """A failed verdict: an expected divergence when a candidate's model agrees, else a finding."""
        # with a clean case given, the special one counts only for entries about non-finite inputs
        judged = (
            [(c, False) for c in (case, *also)]
            if explained_by is None
            else [(explained_by, False), (case, True)]
        )
        gradient = (
            verdict.clause == R.NORMS[self.norm].clauses.vjp
        )  # a VJP comparison: gradient entries first
        considered = []
        for c, non_finite_only in judged:
            for entry in divergences.candidates(
                self.adapter, c.norm, c, self.dtype, non_finite_only, gradient
            ):
                if entry not in considered:
                    considered.append(entry)
        observations = observed or (self._observation(verdict, case),)
        misses = []
        for entry in considered:
            outcome = entry.judge(observations, self.dtype)
            if outcome.agrees:
                self.expected = (entry, verdict, case)
                self.explained.add(entry.clause)
                self.levels.add(entry.level)
                return
            misses.append((entry, outcome))
        self.failure, self.failure_case = verdict, case
        self.missed = misses
        raise AssertionError(_failure_text(verdict, misses, case, self.repro(case), self.acc))

    def _observation(self, verdict: Verdict, case: Case) -> models.Observation:
        which = models.quantity(verdict.what)
        return models.Observation(case, which, verdict.actual, verdict.bound, verdict.what)

    def abandon(self, kind: str, clause: str, message: str, case: Case) -> None:
        """The framework crashed or hung on `case` (its isolated child is gone), or a plug-in broke the
        protocol: the cell's verdict, unless a known divergence whose model says it raises explains it
        (then the example is rejected). Raised as `Abandoned`, which hypothesis does not shrink: every
        replay would cost another crash, timeout or the same protocol error. A hang stops the rest of
        the norm (and the adapter past HANG_BUDGET), a protocol error the rest of the norm's dtype."""
        self.examples += 1
        failed = Verdict(
            clause,
            self.adapter,
            self.norm,
            self.dtype,
            f"{kind}: {message}",
            T.Comparison(math.inf, 0.0, math.inf, math.nan, ()),
            "adapters/plugin.py" if kind == "protocol error" else "the spec defines this input",
            case.describe(),
        )
        observation = (models.Observation(case, "raised", None, None, f"{kind}: {message}"),)
        misses = []
        for entry in divergences.candidates(self.adapter, case.norm, case, self.dtype):
            outcome = entry.judge(observation, self.dtype)
            if outcome.agrees:
                self.expected = (entry, failed, case)
                self.explained.add(entry.clause)
                self.levels.add(entry.level)
                reject()
            misses.append((entry, outcome))
        self.failure, self.failure_case, self.abnormal, self.missed = failed, case, kind, misses
        self._stop_others(kind, message)
        raise Abandoned(_failure_text(failed, misses, case, self.repro(case), self.acc))

    def _stop_others(self, kind: str, message: str) -> None:
        reason = f"stopped after a {kind} in {self.prop} ({self.norm}, {self.dtype}): {message[:300]}"
        stopped, hung = self.run.stopped, self.run.hung
        if kind == "protocol error":
            stopped[(self.adapter, self.norm, self.dtype)] = reason
        elif kind == "timed out":
            stopped[(self.adapter, self.norm)] = reason
            hung[self.adapter] = hung.get(self.adapter, 0.0) + time.monotonic() - self.started
            if hung[self.adapter] >= HANG_BUDGET:
                stopped[(self.adapter,)] = (
                    f"stopped: {self.adapter}'s timed-out calls took {hung[self.adapter]:.0f} s, past the "
                    f"{HANG_BUDGET:.0f} s a session allows ({reason})"
                )

    def status(self) -> str:
        if self.abnormal is not None:
            return self.abnormal
        if self.failure is not None:
            return "finding"
        if self.expected is not None:
            return "expected divergence"
        if self.examples == 0 and self.unsupported:
            return "unsupported"
        return "pass"
