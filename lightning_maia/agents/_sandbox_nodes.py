"""The restricted interpreter: it walks a parsed program and evaluates every node itself.

Nothing here compiles the program's text to a code object. :class:`Interpreter` holds the state
of a run (scopes, call depth, budget) and the operations shared by all nodes: names, calls,
attributes, assignment. Statements and expressions are handled node by node in
:mod:`~lightning_maia.agents._sandbox_statements` and
:mod:`~lightning_maia.agents._sandbox_expressions`; each node costs a step, and every operation the
program applies to a value goes through :meth:`Interpreter.apply`, which turns what the program
got wrong into a :class:`~lightning_maia.agents._sandbox_rules.ProgramError`. The rules are
described in :mod:`lightning_maia.agents._sandbox`.

**Why one file.** The interpreter's state and the operations every node shares (names, calls,
attributes, assignment, :meth:`Interpreter.apply`) are one class; the node handlers already live
in the statements and expressions modules.
"""

from __future__ import annotations

import ast
import builtins as python_builtins
import inspect
import itertools
import operator
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from lightning_maia.agents._sandbox_builtins import Builtins, Output, SandboxBuiltin
from lightning_maia.agents._sandbox_expressions import EXPRESSIONS
from lightning_maia.agents._sandbox_rules import (
    ALLOWED_EXCEPTIONS,
    MAX_CALL_DEPTH,
    Budget,
    ProgramError,
    SandboxLimitExceeded,
    SandboxViolation,
)
from lightning_maia.agents._sandbox_statements import STATEMENTS, Return

_ACTIVE: ContextVar[Interpreter | None] = ContextVar("lightning_maia_sandbox", default=None)


@dataclass
class _Frame:
    """Where names live while code runs: its own scope, then the scopes of enclosing functions."""

    local: dict[str, Any]
    enclosing: tuple[dict[str, Any], ...]


class SandboxFunction:
    """A function the program defined with ``def`` or ``lambda``; it runs only inside a run.

    It keeps the scopes of the functions around it but not the program's top level, so that a
    function kept in ``ProgramResult.variables`` sees the top-level variables of the run that
    calls it next.
    """

    __slots__ = ("body", "closure", "name", "signature")

    def __init__(
        self,
        name: str,
        signature: inspect.Signature,
        body: list[ast.stmt] | ast.expr,
        closure: tuple[dict[str, Any], ...],
    ) -> None:
        self.name = name
        self.signature = signature
        self.body = body
        self.closure = closure

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        interpreter = _ACTIVE.get()
        if interpreter is None:
            raise RuntimeError(
                f"{self.name}() is a sandboxed function; it runs only in run_program"
            )
        return interpreter.call_function(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<function {self.name}>"


def _take(iterable: Iterable[Any], count: int) -> list[Any]:
    return list(itertools.islice(iter(iterable), count))


class Interpreter:
    """Runs one parsed program against the given functions, types, budget and output."""

    def __init__(
        self,
        *,
        functions: Mapping[str, Callable[..., Any]],
        allowed_types: tuple[type, ...],
        budget: Budget,
        output: Output,
        global_scope: dict[str, Any],
    ) -> None:
        self.budget = budget
        self.globals = global_scope
        self.functions = dict(functions)
        self.allowed_types = allowed_types
        self.builtins = Builtins(budget, output, self.resolve_callable, allowed_types)
        self.frame = _Frame(global_scope, ())
        self.depth = 0
        self._function_ids = {id(function) for function in self.functions.values()}
        #: The exceptions whose except blocks are running, innermost last (for a bare ``raise``).
        self.handled: list[BaseException] = []

    def run(self, tree: ast.Module) -> None:
        token = _ACTIVE.set(self)
        try:
            self.execute_block(tree.body)
        finally:
            _ACTIVE.reset(token)

    # ------------------------------------------------------------------------------ core

    def execute(self, node: ast.stmt) -> None:
        self.budget.line = node.lineno
        self.budget.tick()
        handler = STATEMENTS.get(type(node))
        if handler is None:
            raise self.budget.refuse(f"{type(node).__name__} statements are not supported")
        handler(self, node)

    def execute_block(self, body: list[ast.stmt]) -> None:
        for statement in body:
            self.execute(statement)

    def evaluate(self, node: ast.expr) -> Any:
        self.budget.line = node.lineno
        self.budget.tick()
        handler = EXPRESSIONS.get(type(node))
        if handler is None:
            raise self.budget.refuse(f"{type(node).__name__} expressions are not supported")
        return handler(self, node)

    def apply(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``function``; what it raises is the program's error, not the interpreter's."""
        try:
            return function(*args, **kwargs)
        except Exception as error:
            wrapped = self._wrapped(error)
            if wrapped is error:
                raise
            raise wrapped from error

    def _wrapped(self, error: Exception) -> Exception:
        if isinstance(error, SandboxViolation):
            if error.line is None:
                error.line = self.budget.line
            return error
        if isinstance(error, ProgramError):
            return error
        return ProgramError(error, self.budget.line)

    def error(self, error: BaseException) -> ProgramError:
        return ProgramError(error, self.budget.line)

    def truth(self, value: Any) -> bool:
        return value if type(value) is bool else bool(self.apply(bool, value))

    def iterate(self, iterable: Any, line: int | None = None) -> Iterator[Any]:
        """The items of ``iterable``, a step each; what iterating raises is the program's error."""
        iterator = self.apply(iter, iterable)
        while True:
            if line is not None:
                self.budget.line = line
            self.budget.tick()  # each round costs a step, whatever its body
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as error:
                wrapped = self._wrapped(error)
                if wrapped is error:
                    raise
                raise wrapped from error
            yield item

    @contextmanager
    def new_scope(self) -> Iterator[None]:
        """Run the body in a fresh scope that sees the current one (for comprehensions)."""
        outer = self.frame
        self.frame = _Frame({}, self._closure())
        try:
            yield
        finally:
            self.frame = outer

    def collect(self, value: Any) -> list[Any]:
        return list(self.apply(self.builtins.collect, value))

    # ------------------------------------------------------------------------------ names

    def load(self, name: str) -> Any:
        frame = self.frame
        if name in frame.local:
            return frame.local[name]
        for scope in frame.enclosing:
            if name in scope:
                return scope[name]
        for scope in (self.globals, self.functions, self.builtins.namespace):
            if name in scope:
                return scope[name]
        if hasattr(python_builtins, name):
            offered = ", ".join(sorted(self.builtins.namespace))
            message = f"name '{name}' is not available in this sandbox (builtins: {offered})"
            raise self.error(NameError(message))
        raise self.error(NameError(f"name '{name}' is not defined"))

    def _closure(self) -> tuple[dict[str, Any], ...]:
        local = self.frame.local
        return ((local,) if local is not self.globals else ()) + self.frame.enclosing

    # ------------------------------------------------------------------------------ calls

    def resolve_callable(self, value: Any) -> Callable[..., Any]:
        """What to call for ``value`` (a checked wrapper for builtin types); refuses the rest."""
        if type(value) is SandboxBuiltin:  # print kept in variables prints to this run's output
            return self.builtins.by_name.get(value.name, value)
        if isinstance(value, SandboxFunction | SandboxBuiltin) or id(value) in self._function_ids:
            return value
        if isinstance(value, type):
            if value in self.builtins.constructors:
                return self.builtins.constructors[value]
            if value in ALLOWED_EXCEPTIONS:
                return value
        if (
            isinstance(value, types.MethodType | types.BuiltinMethodType)
            and isinstance(value.__self__, self.allowed_types)
            and not value.__name__.startswith("_")
        ):
            return value
        if not callable(value):
            raise self.error(TypeError(f"'{type(value).__name__}' object is not callable"))
        raise self.budget.refuse(
            f"calling {type(value).__name__} objects is not allowed; call the functions you were "
            "given, the builtins, your own functions and the methods of allowed values"
        )

    def call(self, function: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(function, SandboxFunction):
            return self.call_function(function, args, kwargs)
        return self.apply(self.resolve_callable(function), *args, **kwargs)

    def call_function(
        self, function: SandboxFunction, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """Run a function the program defined, in a new scope, one level deeper."""
        if self.depth >= MAX_CALL_DEPTH:
            raise SandboxLimitExceeded(
                f"recursion depth limit of {MAX_CALL_DEPTH} calls reached in {function.name}()",
                self.budget.line,
            )
        try:
            bound = function.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise self.error(TypeError(f"{function.name}() {error}")) from None
        bound.apply_defaults()
        saved_frame, saved_line = self.frame, self.budget.line
        self.frame = _Frame(dict(bound.arguments), function.closure)
        self.depth += 1
        try:
            if isinstance(function.body, ast.expr):
                return self.evaluate(function.body)
            try:
                self.execute_block(function.body)
            except Return as returned:
                return returned.value
            return None
        finally:
            self.frame, self.budget.line = saved_frame, saved_line
            self.depth -= 1

    def make_function(
        self, name: str, arguments: ast.arguments, body: list[ast.stmt] | ast.expr
    ) -> SandboxFunction:
        positional = [*arguments.posonlyargs, *arguments.args]
        defaults = [self.evaluate(default) for default in arguments.defaults]
        first_default = len(positional) - len(defaults)
        parameters = []
        for index, argument in enumerate(positional):
            kind = (
                inspect.Parameter.POSITIONAL_ONLY
                if index < len(arguments.posonlyargs)
                else inspect.Parameter.POSITIONAL_OR_KEYWORD
            )
            default = (
                defaults[index - first_default]
                if index >= first_default
                else inspect.Parameter.empty
            )
            parameters.append(inspect.Parameter(argument.arg, kind, default=default))
        if arguments.vararg is not None:
            parameters.append(
                inspect.Parameter(arguments.vararg.arg, inspect.Parameter.VAR_POSITIONAL)
            )
        for argument, default_node in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True):
            default = (
                inspect.Parameter.empty if default_node is None else self.evaluate(default_node)
            )
            parameters.append(
                inspect.Parameter(argument.arg, inspect.Parameter.KEYWORD_ONLY, default=default)
            )
        if arguments.kwarg is not None:
            parameters.append(inspect.Parameter(arguments.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
        try:
            signature = inspect.Signature(parameters)
        except ValueError as error:  # duplicate parameter names, which only the compiler rejects
            raise self.error(SyntaxError(str(error))) from None
        return SandboxFunction(name, signature, body, self._closure())

    # ------------------------------------------------------------------------------ attributes

    def attribute(self, value: Any, name: str) -> Any:
        if name.startswith("_"):
            raise self.budget.refuse(
                f"attributes starting with an underscore are not allowed ({name!r})"
            )
        if isinstance(value, self.allowed_types):
            return self.apply(getattr, value, name)
        method = self.builtins.method(value, name)
        if method is not None:
            return method
        raise self.budget.refuse(
            f"attribute {name!r} of {type(value).__name__} objects is not accessible; programs "
            "read the fields of the tools' results and call the safe methods of str, list, dict "
            "and set"
        )

    def check_item_target(self, container: Any) -> None:
        if not isinstance(container, list | dict):
            raise self.budget.refuse(
                "item assignment and deletion are allowed on lists and dicts only, not on "
                f"{type(container).__name__} objects"
            )

    def store_item(self, container: Any, key: Any, value: Any) -> None:
        self.check_item_target(container)
        if isinstance(container, list) and isinstance(key, slice):
            value = self.collect(value)
            self.budget.check_size(len(container) + len(value), "list", added=len(value))
        elif isinstance(container, dict) and not self.apply(operator.contains, container, key):
            self.budget.check_size(len(container) + 1, "dict", added=1)
        self.apply(operator.setitem, container, key, value)

    # ------------------------------------------------------------------------------ assignment

    def assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.frame.local[target.id] = value
        elif isinstance(target, ast.Subscript):
            container = self.evaluate(target.value)
            self.store_item(container, self.evaluate(target.slice), value)
        elif isinstance(target, ast.Tuple | ast.List):
            self._unpack(target.elts, value)
        else:
            raise self.budget.refuse(f"assigning to {type(target).__name__} is not allowed")

    def _unpack(self, targets: list[ast.expr], value: Any) -> None:
        starred = [index for index, target in enumerate(targets) if isinstance(target, ast.Starred)]
        if not starred:
            items = self.apply(_take, value, len(targets) + 1)
            if len(items) > len(targets):
                raise self.error(ValueError(f"too many values to unpack (expected {len(targets)})"))
            if len(items) < len(targets):
                message = f"not enough values to unpack (expected {len(targets)}, got {len(items)})"
                raise self.error(ValueError(message))
            for target, item in zip(targets, items, strict=True):
                self.assign(target, item)
            return
        index = starred[0]
        star = targets[index]
        assert isinstance(star, ast.Starred)  # for mypy: found above
        items = self.collect(value)
        after = len(targets) - index - 1
        if len(items) < index + after:
            message = (
                f"not enough values to unpack (expected at least {index + after}, got {len(items)})"
            )
            raise self.error(ValueError(message))
        for target, item in zip(targets[:index], items[:index], strict=True):
            self.assign(target, item)
        self.assign(star.value, items[index : len(items) - after])
        for target, item in zip(targets[index + 1 :], items[len(items) - after :], strict=True):
            self.assign(target, item)

    def delete(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            if target.id not in self.frame.local:
                raise self.error(NameError(f"name '{target.id}' is not defined"))
            del self.frame.local[target.id]
        elif isinstance(target, ast.Subscript):
            container = self.evaluate(target.value)
            key = self.evaluate(target.slice)
            self.check_item_target(container)
            self.apply(operator.delitem, container, key)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self.delete(element)
        else:
            raise self.budget.refuse(f"deleting {type(target).__name__} is not allowed")
