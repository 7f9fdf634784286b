"""How the restricted interpreter executes statements: one function per AST statement node.

:data:`STATEMENTS` maps each supported node type to its function; a node type missing from it is
refused (imports, classes, ``with`` and the like are refused before the run, by
:func:`~lightning_maia.agents._sandbox_rules.check_program`). The rules are described in
:mod:`lightning_maia.agents._sandbox`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lightning_maia.agents._sandbox_expressions import binary
from lightning_maia.agents._sandbox_rules import ALLOWED_EXCEPTIONS, ProgramError, SandboxViolation

if TYPE_CHECKING:
    from lightning_maia.agents._sandbox_nodes import Interpreter


class Return(BaseException):
    """``return``, unwinding to its call (a BaseException: ``except Exception`` never sees it)."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


class Break(BaseException):
    """``break``, unwinding to its loop."""


class Continue(BaseException):
    """``continue``, unwinding to its loop."""


def _describe_class(value: Any) -> str:
    return value.__name__ if isinstance(value, type) else f"a {type(value).__name__} value"


def _expr(interpreter: Interpreter, node: ast.Expr) -> None:
    interpreter.evaluate(node.value)


def _pass(interpreter: Interpreter, node: ast.Pass) -> None:
    pass


def _break(interpreter: Interpreter, node: ast.Break) -> None:
    raise Break


def _continue(interpreter: Interpreter, node: ast.Continue) -> None:
    raise Continue


def _return(interpreter: Interpreter, node: ast.Return) -> None:
    raise Return(None if node.value is None else interpreter.evaluate(node.value))


def _assign(interpreter: Interpreter, node: ast.Assign) -> None:
    value = interpreter.evaluate(node.value)
    for target in node.targets:
        interpreter.assign(target, value)


def _ann_assign(interpreter: Interpreter, node: ast.AnnAssign) -> None:
    if node.value is not None:  # the annotation is never evaluated
        interpreter.assign(node.target, interpreter.evaluate(node.value))


def _aug_assign(interpreter: Interpreter, node: ast.AugAssign) -> None:
    target = node.target
    if isinstance(target, ast.Name):
        current = interpreter.load(target.id)
        value = interpreter.evaluate(node.value)
        interpreter.frame.local[target.id] = binary(
            interpreter, node.op, current, value, in_place=True
        )
    elif isinstance(target, ast.Subscript):
        container = interpreter.evaluate(target.value)
        key = interpreter.evaluate(target.slice)
        interpreter.check_item_target(container)
        current = interpreter.apply(operator.getitem, container, key)
        value = interpreter.evaluate(node.value)
        interpreter.store_item(
            container, key, binary(interpreter, node.op, current, value, in_place=True)
        )
    else:
        raise interpreter.budget.refuse(f"assigning to {type(target).__name__} is not allowed")


def _delete(interpreter: Interpreter, node: ast.Delete) -> None:
    for target in node.targets:
        interpreter.delete(target)


def _if(interpreter: Interpreter, node: ast.If) -> None:
    interpreter.execute_block(
        node.body if interpreter.truth(interpreter.evaluate(node.test)) else node.orelse
    )


def _for(interpreter: Interpreter, node: ast.For) -> None:
    for item in interpreter.iterate(interpreter.evaluate(node.iter), node.lineno):
        interpreter.assign(node.target, item)
        try:
            interpreter.execute_block(node.body)
        except Break:
            return
        except Continue:
            continue
    interpreter.execute_block(node.orelse)


def _while(interpreter: Interpreter, node: ast.While) -> None:
    while interpreter.truth(interpreter.evaluate(node.test)):
        try:
            interpreter.execute_block(node.body)
        except Break:
            return
        except Continue:
            continue
    interpreter.execute_block(node.orelse)


def _function_def(interpreter: Interpreter, node: ast.FunctionDef) -> None:
    interpreter.frame.local[node.name] = interpreter.make_function(node.name, node.args, node.body)


def _try(interpreter: Interpreter, node: ast.Try) -> None:
    try:
        try:
            interpreter.execute_block(node.body)
        except ProgramError as raised:
            handler = _handler_for(interpreter, node.handlers, raised.error)
            if handler is None:
                raise
            _run_handler(interpreter, handler, raised.error)
        else:
            interpreter.execute_block(node.orelse)
    except SandboxViolation:
        raise  # limits and refusals end the run; no finally block runs after them
    except BaseException:
        interpreter.execute_block(node.finalbody)
        raise
    interpreter.execute_block(node.finalbody)


def _handler_for(
    interpreter: Interpreter, handlers: list[ast.ExceptHandler], error: BaseException
) -> ast.ExceptHandler | None:
    for handler in handlers:
        if handler.type is None:
            return handler
        classes = interpreter.evaluate(handler.type)
        for kind in classes if isinstance(classes, tuple) else (classes,):
            if not (isinstance(kind, type) and kind in ALLOWED_EXCEPTIONS):
                allowed = ", ".join(name.__name__ for name in ALLOWED_EXCEPTIONS)
                raise interpreter.budget.refuse(
                    f"except clauses may name only {allowed}; got {_describe_class(kind)}"
                )
        if isinstance(error, classes):
            return handler
    return None


def _run_handler(
    interpreter: Interpreter, handler: ast.ExceptHandler, error: BaseException
) -> None:
    if handler.name is not None:
        interpreter.frame.local[handler.name] = error
    interpreter.handled.append(error)
    try:
        interpreter.execute_block(handler.body)
    finally:
        interpreter.handled.pop()
        if handler.name is not None:
            interpreter.frame.local.pop(handler.name, None)


def _raise(interpreter: Interpreter, node: ast.Raise) -> None:
    if node.exc is None:
        if not interpreter.handled:
            raise interpreter.error(RuntimeError("no active exception to re-raise"))
        raise interpreter.error(interpreter.handled[-1])
    value = interpreter.evaluate(node.exc)
    if node.cause is not None:
        interpreter.evaluate(node.cause)  # evaluated as Python does; errors report no chain
    if isinstance(value, type) and value in ALLOWED_EXCEPTIONS:
        value = interpreter.apply(value)
    if not isinstance(value, BaseException):
        raise interpreter.error(TypeError("exceptions must derive from BaseException"))
    raise interpreter.error(value)


def _assert(interpreter: Interpreter, node: ast.Assert) -> None:
    if not interpreter.truth(interpreter.evaluate(node.test)):
        message = None if node.msg is None else interpreter.evaluate(node.msg)
        raise interpreter.error(AssertionError() if message is None else AssertionError(message))


#: The statement nodes the interpreter executes, and how.
STATEMENTS: dict[type[ast.stmt], Callable[[Interpreter, Any], None]] = {
    ast.Expr: _expr,
    ast.Pass: _pass,
    ast.Break: _break,
    ast.Continue: _continue,
    ast.Return: _return,
    ast.Assign: _assign,
    ast.AnnAssign: _ann_assign,
    ast.AugAssign: _aug_assign,
    ast.Delete: _delete,
    ast.If: _if,
    ast.For: _for,
    ast.While: _while,
    ast.FunctionDef: _function_def,
    ast.Try: _try,
    ast.Raise: _raise,
    ast.Assert: _assert,
}
