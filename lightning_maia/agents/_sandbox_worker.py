"""Run code-mode programs in a separate process that is killed at its deadline.

The restricted interpreter (:mod:`lightning_maia.agents._sandbox`) checks its limits between the
nodes it evaluates, and refuses operations on operands that are too large or too deep before they
run; but one C-level operation that slips past those checks would hold the interpreter, and the
training process with it, for as long as it takes. :class:`ProgramWorker` therefore runs the
interpreter in a child process and waits for it with a wall-clock deadline: a program still
running at ``timeout_s`` (plus a short grace) is ended with ``SIGKILL``, whatever it is doing.

**Design.** The child holds only the interpreter and the program's variables; the *tools run in
the parent*. A program's tool call is sent to the parent as ``(name, args, kwargs)``, the parent
runs the toolbox method (which stores any image it makes in the toolbox, as in tools mode) and
sends back the small result records (:mod:`lightning_maia.tools._results`: ids, activations,
text). Images therefore never cross the process boundary, the model, the backends and the
toolbox never leave the parent, and nothing has to be copied back after a kill: every image a
killed program made is already in the toolbox. The variables a program leaves stay in the child
for the next program of the episode; a killed child takes them with it, and the next program
starts from a fresh child with no variables (the model is told).

**The child.** It is a fresh interpreter (``python -I -S``: no site-packages, no environment
variables, so no API key in its environment), started with ``subprocess`` rather than
``multiprocessing`` so that the user's ``__main__`` is never re-imported. It imports the sandbox
modules only, not the package's ``__init__`` (no torch; start-up takes tens of milliseconds), caps
its address space with ``RLIMIT_AS`` (``max_memory_mb``; a program that allocates past it gets a
``MemoryError``, or the child dies and the run reports it), and talks to the parent over a socket
pair with length-prefixed pickles. The parent unpickles what the child sends with an allow-list
(plain builtin values and the result records), so even a child that escaped the interpreter could
not make the parent build anything else.

>>> with ProgramWorker() as worker:
...     first = worker.run("x = 6 * 7", {})
...     second = worker.run("print(x)", {})
>>> second.output
'42\\n'
"""

from __future__ import annotations

import builtins
import contextlib
import io
import pickle
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lightning_maia.agents._sandbox import ProgramResult, run_program
from lightning_maia.errors import MaiaError, ToolError, bad_option

__all__ = ["ProgramWorker"]

#: Seconds a child may take to start before the run is refused.
START_TIMEOUT_S = 60.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# Imports the sandbox without the package's __init__ (which would import torch).
_BOOT = """
import os, sys, types
root, fd, memory_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, root)
# Every package bare: their __init__s import torch and the rest, which the child must not load
# (results unpickled here import their modules, e.g. lightning_maia.tools._results).
base = root + "/lightning_maia"
for folder, _, files in os.walk(base):
    if "__init__.py" in files and "__pycache__" not in folder:
        name = "lightning_maia" + folder[len(base):].replace("/", ".")
        package = types.ModuleType(name)
        package.__path__ = [folder]
        sys.modules[name] = package
from lightning_maia.agents._sandbox_worker import serve
serve(fd, memory_mb)
"""
_PLAIN_BUILTINS = frozenset(
    {"bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list"}
    | {"range", "set", "slice", "str", "tuple"}
)


class ProgramWorker:
    """A child process that runs programs for one episode, killed when one runs past its time.

    Args:
        allowed_types: result types whose public attributes programs may use (and that may
            cross the process boundary).
        max_memory_mb: the child's address-space cap (``RLIMIT_AS``; None: no cap).
        grace_s: seconds past a program's ``timeout_s`` before the child is killed (the
            interpreter's own time limit normally ends the program first, with its line).
    """

    def __init__(
        self,
        allowed_types: Sequence[type] = (),
        *,
        max_memory_mb: int | None = 512,
        grace_s: float = 1.0,
    ) -> None:
        if max_memory_mb is not None and (
            isinstance(max_memory_mb, bool)
            or not isinstance(max_memory_mb, int)
            or max_memory_mb < 64
        ):
            raise bad_option("max_memory_mb", "an integer >= 64 or None", max_memory_mb)
        self.allowed_types = tuple(allowed_types)
        self.max_memory_mb = max_memory_mb
        self.grace_s = grace_s
        #: How many children were killed at a deadline (or died) during this worker's life.
        self.kills = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._allowed = {(kind.__module__, kind.__qualname__): kind for kind in self.allowed_types}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ProgramWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the child (its variables with it)."""
        connection, process = self._connection, self._process
        self._connection = self._process = None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.send(("close",))
            connection.close()
        if process is not None:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _kill(self) -> None:
        connection, process = self._connection, self._process
        self._connection = self._process = None
        self.kills += 1
        if process is not None:
            process.kill()
            process.wait()
        if connection is not None:
            connection.close()

    def _start(self) -> Connection:
        parent, child = socket.socketpair()
        memory = 0 if self.max_memory_mb is None else self.max_memory_mb
        command = [sys.executable, "-I", "-S", "-c", _BOOT, str(_PACKAGE_ROOT)]
        try:
            process = subprocess.Popen(
                [*command, str(child.fileno()), str(memory)],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={},
                close_fds=True,
            )
        finally:
            child.close()
        connection = Connection(parent.detach())
        self._process, self._connection = process, connection
        if not connection.poll(START_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"the program worker did not start within {START_TIMEOUT_S:g} s")
        try:
            ready = self._receive(connection)
        except (EOFError, OSError) as error:
            self._kill()
            raise RuntimeError(f"the program worker failed to start ({error})") from None
        if ready != ("ready",):
            self._kill()
            raise RuntimeError(f"the program worker failed to start: {ready!r}")
        return connection

    # -- running -----------------------------------------------------------------------------

    def run(
        self,
        source: str,
        functions: Mapping[str, Callable[..., Any]],
        *,
        max_steps: int = 20_000,
        timeout_s: float = 10.0,
        max_output_chars: int = 20_000,
        max_collection_size: int = 100_000,
        should_stop: Callable[[], bool] | None = None,
    ) -> ProgramResult:
        """Run ``source`` in the child; the options are :func:`run_program`'s.

        The child keeps the variables between runs (the result's ``variables`` is empty); a run
        that was killed (or whose child died) says so in its error, and the next run starts a
        fresh child without them.
        ``should_stop`` is asked several times a second; when it says so, the child is killed
        and the run ends (a SIGTERM of the training process, say).
        """
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise bad_option("timeout_s", "a positive number of seconds", timeout_s)
        connection = self._connection if self.alive and self._connection else self._start()
        options = {
            "allowed_types": self.allowed_types,
            "max_steps": max_steps,
            "timeout_s": timeout_s,
            "max_output_chars": max_output_chars,
            "max_collection_size": max_collection_size,
        }
        connection.send(("run", source, sorted(functions), options))
        deadline = time.monotonic() + timeout_s + self.grace_s
        try:
            return self._serve_until_done(connection, functions, deadline, timeout_s, should_stop)
        except BaseException:  # KeyboardInterrupt, SystemExit: never leave a child behind
            self._kill()
            raise

    def _serve_until_done(
        self,
        connection: Connection,
        functions: Mapping[str, Callable[..., Any]],
        deadline: float,
        timeout_s: float,
        should_stop: Callable[[], bool] | None,
    ) -> ProgramResult:
        while True:
            if should_stop is not None and should_stop():
                self._kill()
                return _ended("stopped: the run was asked to stop; the program's process was ended")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                return _ended(
                    f"stopped: the program ran past its time limit of {timeout_s:g} s and its "
                    "process was ended; its output and variables are lost"
                )
            # Short waits keep the main thread responsive to signals (SIGTERM, Ctrl-C).
            if not connection.poll(min(remaining, 0.25)):
                continue
            try:
                message = self._receive(connection)
            except (EOFError, OSError):
                code = self._process.poll() if self._process is not None else None
                self._kill()
                return _ended(_death_message(code, self.max_memory_mb))
            except pickle.UnpicklingError as error:
                # Only a tool call carries program values: answer it with the refusal.
                refusal = f"tool arguments must be plain data ({error})"
                connection.send(("raise", "TypeError", refusal))
                continue
            if message[0] == "call":
                _, name, args, kwargs = message
                connection.send(_call(functions, name, args, kwargs))
            elif message[0] == "done":
                _, output, failure, steps = message
                return ProgramResult(output=output, error=failure, steps=steps)
            else:  # "crashed": the interpreter itself failed in the child
                self._kill()
                return _ended(f"the program's interpreter failed: {message[1]}")

    def _receive(self, connection: Connection) -> Any:
        return _RestrictedUnpickler(io.BytesIO(connection.recv_bytes()), self._allowed).load()


def _call(
    functions: Mapping[str, Callable[..., Any]], name: str, args: Any, kwargs: Any
) -> tuple[Any, ...]:
    """Run one tool call of the program here, in the parent; its result or its exception."""
    function = functions.get(name) if isinstance(name, str) else None
    if function is None or not isinstance(args, tuple) or not isinstance(kwargs, dict):
        return ("raise", "ToolError", f"no function {name!r}")
    try:
        return ("return", function(*args, **kwargs))
    except Exception as error:  # every failure of the model's request goes back to the program
        kind = type(error).__name__ if _rebuildable(error) else "ToolError"
        return ("raise", kind, str(error))


def _rebuildable(error: Exception) -> bool:
    if isinstance(error, MaiaError):
        return type(error).__module__ == "lightning_maia.errors"
    return type(error).__module__ == "builtins"


def _ended(error: str) -> ProgramResult:
    return ProgramResult(output="", error=error, steps=0)


def _death_message(code: int | None, memory_mb: int | None) -> str:
    cap = f" (its memory limit is {memory_mb} MB)" if memory_mb else ""
    return (
        f"stopped: the program's process ended unexpectedly (exit status {code}){cap}; "
        "its output and variables are lost"
    )


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain builtin values and the allowed result types, nothing else."""

    def __init__(self, file: io.BytesIO, allowed: Mapping[tuple[str, str], type]) -> None:
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _PLAIN_BUILTINS:
            return getattr(builtins, name)
        kind = self._allowed.get((module, name))
        if kind is None:
            raise pickle.UnpicklingError(f"{module}.{name} may not cross from a program")
        return kind


# ----------------------------------------------------------------------------------- the child


def serve(fd: int, memory_mb: int) -> None:
    """The child's loop: run programs, forward tool calls, keep the variables (internal)."""
    connection = Connection(fd)
    if memory_mb > 0:
        _cap_memory(memory_mb)
    connection.send(("ready",))
    variables: dict[str, Any] = {}
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message[0] != "run":
            return
        _, source, names, options = message
        functions = {name: _remote(connection, name) for name in names}
        try:
            result = run_program(source, functions, variables=variables, **options)
        except MemoryError:
            connection.send(("crashed", "MemoryError: the program ran out of memory"))
            return
        except BaseException as error:  # a bug of the interpreter: report it, then end
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
            connection.send(("crashed", text[:2_000]))
            return
        variables = result.variables
        connection.send(("done", result.output, result.error, result.steps))


def _cap_memory(memory_mb: int) -> None:
    try:
        import resource
    except ImportError:  # not on POSIX: the deadline still holds
        return
    limit = memory_mb * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _remote(connection: Connection, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            payload = pickle.dumps(("call", name, args, kwargs))
        except Exception:
            raise TypeError(
                f"{name}: arguments must be plain values (strings, numbers, lists, dicts)"
            ) from None
        connection.send_bytes(payload)
        reply = connection.recv()
        if reply[0] == "return":
            return reply[1]
        _, kind, message = reply
        raise _rebuild(kind, message)

    call.__name__ = name
    return call


def _rebuild(kind: str, message: str) -> Exception:
    from lightning_maia import errors

    found = getattr(errors, kind, None) or getattr(builtins, kind, None)
    if isinstance(found, type) and issubclass(found, Exception):
        with contextlib.suppress(Exception):
            return found(message)
    return ToolError(message)
