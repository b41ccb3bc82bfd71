"""Run a registered adapter in a persistent child process.

Some frameworks fix process-wide choices at import (Keras picks its backend once per process), and
some can crash the interpreter; a child started with its own environment variables holds the
adapter instead, and its calls are forwarded over a pipe. The parent gets the adapter's return
values; `Unsupported` and other exceptions are re-raised in the parent with the child's traceback
attached as their cause. Children are cached per (adapter, environment), restarted after a crash,
and shut down at interpreter exit.
"""
from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401 - its exit handler must be registered before ours (below)
import os
import pickle
import threading
import traceback

CHILD_FLAG = "NORMCONF_ISOLATED_CHILD"  # set in every child's environment

_lock = threading.Lock()  # guards the cache and the temporary environment of a starting child
_children: dict[tuple, "Isolated"] = {}


def in_child() -> bool:
    """True inside a child started by this module."""
    return os.environ.get(CHILD_FLAG) == "1"


class ChildTraceback(Exception):
    """The traceback text of an exception raised in the child (set as the re-raised one's cause)."""

    def __str__(self):
        return "\n" + self.args[0]


class ChildDied(RuntimeError):
    """The child exited (crashed) while handling a call; the next call starts a fresh one."""


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")


def _serve(conn, name: str, env: dict) -> None:
    """The child's loop: build the adapter on first use, answer (method, args, kwargs) requests."""
    os.environ.update(env)
    adapter = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if request is None:
            conn.close()
            return
        method, args, kwargs = request
        try:
            if adapter is None:
                from normconf import adapters

                adapter = adapters.get(name)
            reply = ("ok", getattr(adapter, method)(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            reply = ("error", _portable(exc), traceback.format_exc())
        conn.send(reply)


class Isolated:
    """Proxy for the adapter registered as `name`, living in a child with `env` added to its environment."""

    def __init__(self, name: str, env: dict[str, str] | None = None):
        self.name = name
        self.env = {**(env or {}), CHILD_FLAG: "1"}
        self._process = None
        self._conn = None
        self._call_lock = threading.Lock()

    def _start(self):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(child_conn, self.name, self.env), daemon=True,
                              name=f"normconf-isolated[{self.name}]")
        with _lock:  # a spawned child inherits os.environ as it is at start()
            saved = {k: os.environ.get(k) for k in self.env}
            os.environ.update(self.env)
            try:
                process.start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        child_conn.close()
        self._process, self._conn = process, parent_conn

    def call(self, method: str, *args, **kwargs):
        """Call `adapter.<method>(*args, **kwargs)` in the child and return its result."""
        with self._call_lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            try:
                self._conn.send((method, args, kwargs))
                reply = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                process = self._process
                process.join(timeout=5)
                self._process = self._conn = None
                raise ChildDied(f"{self.name}: the isolated child (pid {process.pid}) died with exit code "
                                f"{process.exitcode} during {method}()") from None
        if reply[0] == "ok":
            return reply[1]
        _, exc, text = reply
        raise exc from ChildTraceback(text)

    def run(self, norm, x, params, *, dtype="float64", cotangent=None):
        return self.call("run", norm, x, params, dtype=dtype, cotangent=cotangent)

    def environment(self) -> dict:
        return {**self.call("environment"), "process": f"isolated child pid {self._process.pid}"}

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit; terminate it if it does not within `timeout` seconds."""
        with self._call_lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
        if process is None:
            return
        try:
            conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        conn.close()


def isolated(name: str, env: dict[str, str] | None = None) -> Isolated:
    """The cached child for adapter `name` with environment `env` (started on its first call)."""
    key = (name, tuple(sorted((env or {}).items())))
    with _lock:
        if key not in _children:
            _children[key] = Isolated(name, env)
        return _children[key]


@atexit.register
def _shutdown() -> None:
    # atexit runs handlers last-in first-out: this one runs before multiprocessing's, which would
    # otherwise terminate the (daemonic) children instead of letting them exit.
    for child in list(_children.values()):
        child.close()


__all__ = ["ChildDied", "ChildTraceback", "Isolated", "in_child", "isolated"]
