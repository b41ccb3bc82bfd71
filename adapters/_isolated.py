"""Run a registered adapter in a persistent child process.

Some frameworks fix process-wide choices at import (Keras picks its backend once per process), and
some can crash the interpreter; a child interpreter started with its own environment variables holds
the adapter instead, and calls are forwarded to it over a pair of pipes (pickled, as
`multiprocessing.connection` frames them). The parent gets the adapter's return values; `Unsupported`
and other exceptions are re-raised in the parent with the child's traceback attached as their cause.
Children are cached per (adapter, environment), restarted after a crash, and shut down at exit.

The child is a fresh `python -c` interpreter rather than a `multiprocessing` spawn: spawn re-imports
the parent's `__main__` (re-running an unguarded script, with its argv, inside the child before the
child serves anything) and inherits the environment only through the parent's `os.environ`, which
would have to be changed while the child starts.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback

from . import _compile_cache

CHILD_FLAG = "NORMCONF_ISOLATED_CHILD"  # set to "1" in every child's environment

_lock = threading.Lock()  # guards the cache
_children: dict[tuple, "Isolated"] = {}


def in_child() -> bool:
    """True inside a child started by this module."""
    return os.environ.get(CHILD_FLAG) == "1"


class ChildTraceback(Exception):
    """The traceback text of an exception raised in the child (the re-raised exception's cause)."""

    def __str__(self):
        return "\n" + self.args[0]


class ChildDied(RuntimeError):
    """The child exited (crashed) while handling a call; the next call starts a fresh one."""


class ChildTimedOut(RuntimeError):
    """A call ran past its timeout: the child was killed; the next call starts a fresh one."""


# A fresh child's first call also imports the framework (and may compile): allowed this much more.
FIRST_CALL_ALLOWANCE = 120.0
SLOW_CALL = 5.0  # seconds after which a call still running is announced (once) on stderr
SLOW_MARK = "normconf: still running:"  # what starts that line (normconf check echoes it)


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")


def _main() -> None:
    """The child: `python -c ... <read fd> <write fd> <adapter name>`; answers (method, args, kwargs)
    requests until it reads None or the parent goes away."""
    from multiprocessing.connection import Connection

    requests, replies = (
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )
    name, adapter = sys.argv[3], None
    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if request is None:
            return
        method, args, kwargs = request
        started = time.perf_counter()
        try:
            if adapter is None:
                from normconf import adapters

                adapter = adapters.get(name)
            reply = ("ok", getattr(adapter, method)(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            reply = ("error", _portable(exc), traceback.format_exc())
        # the call's own time and the framework's counters travel with every reply (the suite's clock)
        meta = {"seconds": time.perf_counter() - started, **(adapter.counters() if adapter else {})}
        replies.send((*reply, meta))


class Isolated:
    """Proxy for the adapter registered as `name`, living in a child with `env` added to its environment."""

    def __init__(
        self, name: str, env: dict[str, str] | None = None, timeout: float | None = None, compiles=False
    ):
        self.name = name
        self.compiles = compiles  # the adapter compiles programs: it may use the persistent cache
        self.env = {**(env or {}), CHILD_FLAG: "1"}
        self.timeout = timeout  # seconds a call may take (None: no limit); see FIRST_CALL_ALLOWANCE
        self._process = self._requests = self._replies = None
        self._calls = 0  # calls answered by the current child
        self._started_at = 0.0  # wall-clock start of the current child
        self.cache_crashes = 0  # deaths with the compilation cache on, re-run without it
        self.last: dict = {}  # the latest reply's meta: the call's seconds in the child, its counters
        self._call_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        child_reads, parent_writes = os.pipe()
        parent_reads, child_writes = os.pipe()
        python, path = _child_interpreter()
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(path)}
        code = "from normconf.adapters._isolated import _main; _main()"
        self._started_at = time.time()
        try:
            self._process = subprocess.Popen(
                [python, "-c", code, str(child_reads), str(child_writes), self.name],
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(child_reads, child_writes),
            )
        finally:
            os.close(child_reads)
            os.close(child_writes)
        self._requests = Connection(parent_writes, readable=False)
        self._replies = Connection(parent_reads, writable=False)

    def call(self, method: str, *args, **kwargs):
        """Call `adapter.<method>(*args, **kwargs)` in the child and return its result; ChildDied when
        the child dies on it, ChildTimedOut (the child killed) when it outlasts `self.timeout`.

        A child that dies while the persistent compilation cache is on is started again without it and
        the call re-run (a cache write or a corrupt entry must not decide a verdict): only a death
        without the cache is the call's. What the dead child wrote to the cache is discarded."""
        try:
            return self._call(method, *args, **kwargs)
        except ChildDied:
            if not (self.compiles and _compile_cache.enabled(self.env)):
                raise
        _compile_cache.discard_since(self._started_at)
        self.env[_compile_cache.SWITCH] = "0"  # this adapter's later calls too
        self.cache_crashes += 1
        print(
            f"normconf: {self.name}: the isolated child died with the compilation cache on; "
            f"{method}() runs again without it",
            file=sys.stderr,
            flush=True,
        )
        return self._call(method, *args, **kwargs)

    def _call(self, method: str, *args, **kwargs):
        with self._call_lock:
            self.last = {}
            if self._process is None or self._process.poll() is not None:
                self._discard()
                self._start()
                self._calls = 0
                if self.timeout is not None and method != "environment":
                    self._warm_up()
            limit = (
                None
                if self.timeout is None
                else self.timeout + (FIRST_CALL_ALLOWANCE if not self._calls else 0)
            )
            try:
                self._requests.send((method, args, kwargs))
                if limit is not None and not self._answered(method, args, limit):
                    process = self._process
                    process.kill()
                    self._discard()
                    raise ChildTimedOut(
                        f"{self.name}: {method}() did not return within {limit:g} s; the isolated "
                        f"child (pid {process.pid}) was killed"
                    )
                reply = self._replies.recv()
            except (EOFError, OSError):
                process = self._process
                self._discard()
                if process.returncode == -signal.SIGINT:  # Ctrl-C reached the child before this process
                    raise KeyboardInterrupt from None
                raise ChildDied(
                    f"{self.name}: the isolated child (pid {process.pid}) died with exit code "
                    f"{process.returncode}{_signal_name(process.returncode)} during {method}()"
                ) from None
            self._calls += 1
        *reply, self.last = reply
        if reply[0] == "ok":
            return reply[1]
        _, exc, text = reply
        raise exc from ChildTraceback(text)

    def _warm_up(self) -> None:
        """A fresh child imports its framework through `environment()`, within FIRST_CALL_ALLOWANCE
        more than a call's timeout: the calls after it are held to the timeout alone (a hang then
        costs `timeout` seconds, not the import's allowance too). A child that fails here is left to
        the call, which reports it; one that hangs here is killed (ChildTimedOut)."""
        limit = self.timeout + FIRST_CALL_ALLOWANCE
        try:
            self._requests.send(("environment", (), {}))
            if self._replies.poll(limit):
                self._replies.recv()
                self._calls += 1
                return
        except (EOFError, OSError):
            return
        process = self._process
        process.kill()
        self._discard()
        raise ChildTimedOut(
            f"{self.name}: the isolated child (pid {process.pid}) did not start within {limit:g} s; "
            "it was killed"
        )

    def _answered(self, method: str, args: tuple, limit: float) -> bool:
        """Whether the child answers within `limit` seconds; a line on stderr once SLOW_CALL passes."""
        if limit <= SLOW_CALL:
            return self._replies.poll(limit)
        if self._replies.poll(SLOW_CALL):
            return True
        what = f" {args[0]}" if method == "run" and args else ""
        print(
            f"{SLOW_MARK} {self.name}{what} {method}() after {SLOW_CALL:g} s (killed at {limit:g} s)",
            file=sys.stderr,
            flush=True,
        )
        return self._replies.poll(limit - SLOW_CALL)

    def run(self, norm, x, params, *, dtype="float64", cotangent=None):
        return self.call("run", norm, x, params, dtype=dtype, cotangent=cotangent)

    def environment(self) -> dict:
        return {**self.call("environment"), "process": f"isolated child pid {self.pid}"}

    def _discard(self, timeout: float = 5.0) -> None:
        """Forget the current child, reaping it (killed if it does not exit within `timeout`)."""
        process, self._process = self._process, None
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()
        self._requests = self._replies = None
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit (it also exits when its pipe closes); kill it after `timeout` seconds."""
        with self._call_lock:
            if self._requests is not None:
                try:
                    self._requests.send(None)
                except OSError:
                    pass
            self._discard(timeout)


def _child_interpreter() -> tuple[str, list[str]]:
    """(the interpreter children run under, their PYTHONPATH): this one with its sys.path, or a release's
    environment (NORMCONF_CHILD_PYTHON, normconf/envs.py) - without this interpreter's site-packages on
    PYTHONPATH, which would shadow the release (its environment adds them after its own)."""
    from normconf.envs import CHILD_PYTHON

    python = os.environ.get(CHILD_PYTHON) or sys.executable
    path = [p for p in sys.path if p]
    if python != sys.executable:
        import site

        hosts = [os.path.realpath(p) for p in site.getsitepackages()]
        path = [p for p in path if not any(os.path.realpath(p).startswith(h) for h in hosts)]
    return python, path


def _signal_name(code: int | None) -> str:
    import signal

    try:
        return f" ({signal.Signals(-code).name})" if code is not None and code < 0 else ""
    except ValueError:
        return ""


class IsolatedAdapter:
    """An adapter whose every call runs in its own child process, so that a framework crashing
    (segfault, abort, out of memory) or hanging on one input costs that call only. What the parent
    reads is the adapter's static data (name, declarations); the calls go to the child, each within
    `timeout` seconds."""

    def __init__(self, adapter, timeout: float | None):
        self._adapter = adapter
        # an adapter that fixes process-wide choices at import says what its child needs (Keras' backend)
        self._child = Isolated(
            adapter.name, getattr(adapter, "child_env", dict)(), timeout=timeout, compiles=adapter.compiles
        )
        with _lock:
            _children[(adapter.name, "isolated", id(self))] = self._child

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def run(self, norm, x, params, *, dtype="float64", cotangent=None):
        return self._child.call("run", norm, x, params, dtype=dtype, cotangent=cotangent)

    def run_framework_defaults(self, norm, x, hints, *, dtype):
        return self._child.call("run_framework_defaults", norm, x, hints, dtype=dtype)

    def run_own_schedule(self, norm, x, params, *, dtype="float64"):
        return self._child.call("run_own_schedule", norm, x, params, dtype=dtype)

    def framework_repro(self, norm, x, params, *, dtype, cotangent=None):
        return self._child.call("framework_repro", norm, x, params, dtype=dtype, cotangent=cotangent)

    def environment(self):
        return {**self._child.call("environment"), "process": f"isolated child pid {self._child.pid}"}

    def counters(self) -> dict:
        """The child's framework counters as of its latest reply."""
        return {k: v for k, v in self._child.last.items() if k != "seconds"}

    @property
    def last_call_seconds(self) -> float | None:
        """How long the latest call took inside the child (the rest of its round trip is IPC)."""
        return self._child.last.get("seconds")


def isolated(name: str, env: dict[str, str] | None = None, compiles: bool = False) -> Isolated:
    """The cached child for adapter `name` with environment `env` (started on its first call)."""
    key = (name, tuple(sorted((env or {}).items())))
    with _lock:
        if key not in _children:
            _children[key] = Isolated(name, env, compiles=compiles)
        return _children[key]


def close_adapter(name: str) -> None:
    """Close every child holding adapter `name` (the suite has moved on to another adapter)."""
    with _lock:
        chosen = [child for key, child in _children.items() if key[0] == name]
    for child in chosen:
        child.close()


@atexit.register
def _shutdown() -> None:
    for child in list(_children.values()):
        child.close()


__all__ = [
    "ChildDied",
    "ChildTimedOut",
    "ChildTraceback",
    "Isolated",
    "IsolatedAdapter",
    "in_child",
    "isolated",
]
