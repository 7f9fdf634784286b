"""Run model-written Python programs against the toolbox in a restricted interpreter.

MAIA's original agent ``exec()``-ed the programs its model wrote. The VLM agent's code mode runs
them here instead: the source is parsed to an AST and an interpreter walks it node by node
(:mod:`~lightning_maia.agents._sandbox_nodes`); nothing compiles the program's text to a code
object, and nothing calls ``exec`` or ``eval``.

>>> result = run_program("squares = [n * n for n in range(4)]\\nprint(sum(squares))", {})
>>> result.output, result.error, result.variables["squares"]
('14\\n', None, [0, 1, 4, 9])
>>> print(run_program("import os", {}).error)
refused at line 1: import statements are not allowed

**What runs.** Module-level statements; assignment to names and to items of lists and dicts,
tuple unpacking (with one ``*rest``), augmented assignment, ``del`` of names and items; ``if`` /
``elif`` / ``else``; ``for`` and ``while`` with ``break``, ``continue`` and ``else``; ``pass``;
``def`` (positional, keyword, ``*args`` and ``**kwargs`` parameters with defaults; ``return``;
recursion) and ``lambda``, with closures; ``try`` / ``except`` / ``else`` / ``finally`` and
``raise``; ``assert`` (a failure is an ``AssertionError``). Expressions: constants, names,
list/tuple/dict/set displays with ``*`` and ``**`` unpacking, comprehensions (a generator
expression is evaluated eagerly into a list), arithmetic, bitwise, boolean and comparison
operators including ``in`` and ``is``, ``x if c else y``, subscripts and slices, f-strings (their
parts are evaluated here; a format spec is applied with ``format(value, spec)`` to int, float,
str and bool values only), and calls.

**What can be called.** The ``functions`` given (the tools), the functions the program defines,
the builtins ``print`` (captured), ``len``, ``range``, ``min``, ``max``, ``sum``, ``sorted``,
``reversed``, ``enumerate``, ``zip``, ``abs``, ``round``, ``any``, ``all``, ``list``, ``dict``,
``set``, ``tuple``, ``str``, ``int``, ``float``, ``bool``, ``isinstance`` (with builtin types,
the exceptions below and ``allowed_types`` only), ``map`` and ``filter``, and the exception
classes ``Exception``, ``ValueError``, ``KeyError``, ``IndexError``, ``TypeError`` and
``ZeroDivisionError`` (the only names an ``except`` clause accepts). ``reversed``,
``enumerate``, ``zip``, ``map`` and ``filter`` return lists. Attributes: the public fields,
properties and methods of instances of ``allowed_types``, and an allow-list of methods of str
(``lower``, ``upper``, ``strip``, ``split``, ``join``, ``replace``, ``startswith``, ...; never
``format`` or ``format_map``, which reach attributes through ``"{0.__class__}"``), list
(``append``, ``extend``, ``insert``, ``pop``, ``index``, ``count``, ``sort``, ``reverse``,
``copy``, ...), dict (``get``, ``keys``, ``values``, ``items``, ``update``, ``pop``,
``setdefault``, ``copy``, ...), set (``add``, ``update``, ``union``, ``intersection``,
``difference``, ``discard``, ``copy``, ...), tuple (``count``, ``index``) and float
(``is_integer``). A callable found anywhere else (a function stored in a field, say) is refused.

**What is refused** (:class:`SandboxViolation`, reported as ``refused at line N: ...``; a program
cannot catch it): ``import`` and ``from ... import``; any name, attribute, parameter or keyword
starting with ``_`` (dunders and private names; the throwaway name ``_`` itself is allowed);
``global`` and ``nonlocal``; ``class``; ``async`` / ``await``; ``yield``; ``with``; ``match``;
``except*``; decorators; the walrus ``:=`` (refused to keep scoping simple: assign on a line of
its own); assigning or deleting attributes; item assignment on anything but lists and dicts;
attribute access on values that are neither of an ``allowed_type`` nor on the method lists above
(a ``pathlib.Path`` passed in ``variables`` cannot ``write_text``; a generator's ``gi_frame`` is
out of reach, and generators are lists here anyway). Python builtins outside the allow-list
(``getattr``, ``eval``, ``exec``, ``open``, ``type``, ``globals``, ``vars``, ``id``, ``dir``, ...)
are simply not there: using one is a ``NameError`` (``name 'open' is not available in this
sandbox``) unless the program bound that name itself.

**Limits** (:class:`SandboxLimitExceeded`, reported as ``stopped at line N: ...``): every
evaluated node and every loop round costs a step, up to ``max_steps`` (``while True: pass``
stops); the wall clock is checked at every step against ``timeout_s`` (a slow tool call counts,
but is not interrupted); the program's own functions may nest 50 calls deep; a list, tuple, set,
dict or str larger than ``max_collection_size`` items is refused *before* it is built
(``[0] * 10**9``, ``"a" * 10**9``, ``list(range(10**12))``, ``sum(range(10**12))``, a format
width of ``10**9``, ``str.replace`` or ``str.join`` that would grow past it, the text of a value
that ``print``, ``str``, an f-string or ``%`` would make), and all the items a run builds
together may reach 20 times that; an integer result over 65,536 bits is refused
before computing it (``2 ** 10**9``, ``1 << 10**9``). ``range`` itself is lazy: iterating
``range(10**12)`` stops at the step limit. Printed output past ``max_output_chars`` is cut, with
a note saying so. No ``finally`` block runs after a limit or a refusal.

**Errors.** What the program does wrong (a ``NameError``, a ``ZeroDivisionError``, a
``ToolError`` or any other exception a tool raises) ends the run with ``ProgramResult.error``
set to its type, line and message (``ToolError at line 4: unknown image id 'x'``), keeping the
output printed so far; :func:`run_program` never raises for them. Bad arguments to
:func:`run_program` itself raise :class:`~lightning_maia.errors.ConfigurationError`; a bug of the
interpreter, or a ``BaseException`` such as ``KeyboardInterrupt``, propagates.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_maia.agents._sandbox_builtins import Output
from lightning_maia.agents._sandbox_nodes import Interpreter, SandboxFunction
from lightning_maia.agents._sandbox_rules import (
    Budget,
    ProgramError,
    SandboxLimitExceeded,
    SandboxViolation,
    check_program,
    is_private_name,
    text_size,
)
from lightning_maia.errors import bad_option

__all__ = [
    "ProgramResult",
    "SandboxFunction",
    "SandboxLimitExceeded",
    "SandboxViolation",
    "run_program",
]

_MAX_MESSAGE_CHARS = 2_000


@dataclass(frozen=True)
class ProgramResult:
    """What a program did: its output, how it ended, its cost and the variables it left."""

    #: Everything the program printed, cut at ``max_output_chars`` with a note.
    output: str
    #: None when the program ran to its end; else a message fit to show the model: the error
    #: type (or ``refused`` / ``stopped``), the program line and the message.
    error: str | None
    #: How many steps (evaluated nodes and loop rounds) the run took.
    steps: int
    #: The top-level variables after the run (also after an error), to pass to the next program.
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the program ran to its end without an error."""
        return self.error is None


def run_program(
    source: str,
    functions: Mapping[str, Callable[..., Any]],
    *,
    allowed_types: Sequence[type] = (),
    max_steps: int = 20_000,
    timeout_s: float = 10.0,
    max_output_chars: int = 20_000,
    max_collection_size: int = 100_000,
    variables: dict[str, Any] | None = None,
) -> ProgramResult:
    """Run ``source`` in the restricted interpreter and report what it printed and how it ended.

    Args:
        source: the program, Python syntax.
        functions: the callables the program may call by name (the tools), besides the builtins.
        allowed_types: result types whose public attributes and methods the program may use.
        max_steps: how many nodes the program may evaluate.
        timeout_s: wall-clock seconds the program may run, checked at every step.
        max_output_chars: how much printed output is kept.
        max_collection_size: the largest list, tuple, set, dict or str the program may build.
        variables: top-level variables to start from (a previous result's ``variables``); the
            dict is copied, never changed.

    >>> run_program("x = 1 / 0", {}).error
    'ZeroDivisionError at line 1: division by zero'
    """
    types = _check_options(
        functions, allowed_types, max_steps, timeout_s, max_output_chars, max_collection_size
    )
    scope = dict(variables or {})
    budget = Budget(
        max_steps=max_steps, timeout_s=timeout_s, max_collection_size=max_collection_size
    )
    output = Output(max_output_chars)
    error: str | None = None
    try:
        tree = _parse(source)
        check_program(tree)
        interpreter = Interpreter(
            functions=functions,
            allowed_types=types,
            budget=budget,
            output=output,
            global_scope=scope,
        )
        interpreter.run(tree)
    except ProgramError as raised:
        error = _describe(raised.error, raised.line)
    except SandboxLimitExceeded as limit:
        error = f"stopped{_at(limit.line)}: {limit.message}"
    except SandboxViolation as violation:
        error = f"refused{_at(violation.line)}: {violation.message}"
    except RecursionError:
        line = budget.line
        error = f"RecursionError{_at(line)}: the program nests too deeply for the interpreter"
    return ProgramResult(output=output.getvalue(), error=error, steps=budget.steps, variables=scope)


def _parse(source: str) -> ast.Module:
    """The program's AST; ``ast.parse`` compiles to an AST only, never to a code object."""
    try:
        return ast.parse(source, filename="<program>", mode="exec")
    except SyntaxError as error:
        raise ProgramError(SyntaxError(error.msg), error.lineno) from None
    except ValueError as error:  # "source code string cannot contain null bytes"
        raise ProgramError(SyntaxError(str(error)), None) from None


def _check_options(
    functions: Mapping[str, Callable[..., Any]],
    allowed_types: Sequence[type],
    max_steps: int,
    timeout_s: float,
    max_output_chars: int,
    max_collection_size: int,
) -> tuple[type, ...]:
    for name, value in (
        ("max_steps", max_steps),
        ("max_output_chars", max_output_chars),
        ("max_collection_size", max_collection_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad_option(name, "a positive int", value)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise bad_option("timeout_s", "a positive number of seconds", timeout_s)
    for name, function in functions.items():
        if not isinstance(name, str) or not name.isidentifier() or is_private_name(name):
            raise bad_option("functions", "names that are identifiers not starting with '_'", name)
        if not callable(function):
            raise bad_option(f"functions[{name!r}]", "a callable", function)
    types = tuple(allowed_types)
    for kind in types:
        if not isinstance(kind, type) or kind in (object, type):
            raise bad_option("allowed_types", "result classes (not object or type)", kind)
    return types


def _at(line: int | None) -> str:
    return "" if line is None else f" at line {line}"


def _describe(error: BaseException, line: int | None) -> str:
    if text_size(error, _MAX_MESSAGE_CHARS * 50) > _MAX_MESSAGE_CHARS * 50:
        message = "(a message too long to show)"  # raise ValueError([huge] * 10**5) never prints
    else:
        try:
            message = str(error)
        except Exception:  # an exception whose __str__ fails is still reported, by its type
            message = ""
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + " [...]"
    head = f"{type(error).__name__}{_at(line)}"
    return f"{head}: {message}" if message else head
