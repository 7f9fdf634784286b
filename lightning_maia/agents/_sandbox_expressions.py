"""How the restricted interpreter evaluates expressions: one function per AST expression node.

:data:`EXPRESSIONS` maps each supported node type to its function; a node type missing from it is
refused. Operations on the program's values go through :meth:`Interpreter.apply`, which reports
what they raise as the program's error. The rules are described in
:mod:`lightning_maia.agents._sandbox`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lightning_maia.agents._sandbox_rules import check_format_spec, check_operation, is_private_name

if TYPE_CHECKING:
    from lightning_maia.agents._sandbox_nodes import Interpreter, SandboxFunction

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.MatMult: operator.matmul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
}
_IN_PLACE: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.iadd,
    ast.Sub: operator.isub,
    ast.Mult: operator.imul,
    ast.MatMult: operator.imatmul,
    ast.Div: operator.itruediv,
    ast.FloorDiv: operator.ifloordiv,
    ast.Mod: operator.imod,
    ast.Pow: operator.ipow,
    ast.LShift: operator.ilshift,
    ast.RShift: operator.irshift,
    ast.BitOr: operator.ior,
    ast.BitXor: operator.ixor,
    ast.BitAnd: operator.iand,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
    ast.Invert: operator.invert,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda item, container: item in container,
    ast.NotIn: lambda item, container: item not in container,
}
_FORMATTABLE = (int, float, str, bool)


def binary(
    interpreter: Interpreter, op: ast.operator, left: Any, right: Any, *, in_place: bool = False
) -> Any:
    """``left op right`` (``left op= right`` when ``in_place``), refused first when too large."""
    kind = type(op)
    if in_place and kind is ast.Add and isinstance(left, list):
        right = right if isinstance(right, list | tuple) else interpreter.collect(right)
    interpreter.apply(check_operation, interpreter.budget, kind, left, right)
    result = interpreter.apply((_IN_PLACE if in_place else _BINARY)[kind], left, right)
    if kind is ast.Mod and isinstance(result, str | bytes):
        interpreter.budget.check_size(len(result), "str")
    return result


def _constant(interpreter: Interpreter, node: ast.Constant) -> Any:
    return node.value


def _name(interpreter: Interpreter, node: ast.Name) -> Any:
    return interpreter.load(node.id)


def _elements(interpreter: Interpreter, nodes: list[ast.expr], kind: str) -> list[Any]:
    items: list[Any] = []
    for element in nodes:
        if isinstance(element, ast.Starred):
            items.extend(interpreter.collect(interpreter.evaluate(element.value)))
        else:
            items.append(interpreter.evaluate(element))
    interpreter.budget.check_size(len(items), kind)
    return items


def _list(interpreter: Interpreter, node: ast.List) -> list[Any]:
    return _elements(interpreter, node.elts, "list")


def _tuple(interpreter: Interpreter, node: ast.Tuple) -> tuple[Any, ...]:
    return tuple(_elements(interpreter, node.elts, "tuple"))


def _set(interpreter: Interpreter, node: ast.Set) -> set[Any]:
    return set(interpreter.apply(set, _elements(interpreter, node.elts, "set")))


def _dict(interpreter: Interpreter, node: ast.Dict) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key_node, value_node in zip(node.keys, node.values, strict=True):
        if key_node is None:  # {**mapping}
            mapping = interpreter.evaluate(value_node)
            if not isinstance(mapping, Mapping):
                kind = type(mapping).__name__
                raise interpreter.error(TypeError(f"'{kind}' object is not a mapping"))
            interpreter.budget.check_size(len(result) + len(mapping), "dict", added=0)
            interpreter.apply(result.update, mapping)
        else:
            key = interpreter.evaluate(key_node)
            interpreter.apply(operator.setitem, result, key, interpreter.evaluate(value_node))
    interpreter.budget.check_size(len(result), "dict")
    return result


def _bin_op(interpreter: Interpreter, node: ast.BinOp) -> Any:
    left = interpreter.evaluate(node.left)
    right = interpreter.evaluate(node.right)
    interpreter.budget.line = node.lineno
    return binary(interpreter, node.op, left, right)


def _unary_op(interpreter: Interpreter, node: ast.UnaryOp) -> Any:
    operand = interpreter.evaluate(node.operand)
    if isinstance(node.op, ast.Not):
        return not interpreter.truth(operand)
    return interpreter.apply(_UNARY[type(node.op)], operand)


def _bool_op(interpreter: Interpreter, node: ast.BoolOp) -> Any:
    stop_when = isinstance(node.op, ast.Or)  # `or` stops at a true value, `and` at a false one
    value = None
    for value_node in node.values:
        value = interpreter.evaluate(value_node)
        if interpreter.truth(value) is stop_when:
            return value
    return value


def _compare(interpreter: Interpreter, node: ast.Compare) -> Any:
    left = interpreter.evaluate(node.left)
    result: Any = True
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        right = interpreter.evaluate(comparator)
        interpreter.budget.line = node.lineno
        _check_comparison(interpreter, op, left, right)
        result = interpreter.apply(_COMPARE[type(op)], left, right)
        if not interpreter.truth(result):
            return result
        left = right
    return result


def _check_comparison(interpreter: Interpreter, op: ast.cmpop, left: Any, right: Any) -> None:
    """Bound the C work of a comparison before it runs (``x in range(10**12)``, deep ``==``)."""
    if isinstance(op, ast.In | ast.NotIn):
        interpreter.budget.check_membership(left, right)
    elif not isinstance(op, ast.Is | ast.IsNot):
        interpreter.budget.check_work("comparison", left, right)


def _if_exp(interpreter: Interpreter, node: ast.IfExp) -> Any:
    chosen = node.body if interpreter.truth(interpreter.evaluate(node.test)) else node.orelse
    return interpreter.evaluate(chosen)


def _attribute(interpreter: Interpreter, node: ast.Attribute) -> Any:
    return interpreter.attribute(interpreter.evaluate(node.value), node.attr)


def _subscript(interpreter: Interpreter, node: ast.Subscript) -> Any:
    container = interpreter.evaluate(node.value)
    key = interpreter.evaluate(node.slice)
    interpreter.budget.line = node.lineno
    return interpreter.apply(operator.getitem, container, key)


def _slice(interpreter: Interpreter, node: ast.Slice) -> slice:
    parts = (node.lower, node.upper, node.step)
    return slice(*(None if part is None else interpreter.evaluate(part) for part in parts))


def _starred(interpreter: Interpreter, node: ast.Starred) -> Any:
    raise interpreter.budget.refuse("starred expressions belong in calls, displays and targets")


def _call(interpreter: Interpreter, node: ast.Call) -> Any:
    function = interpreter.evaluate(node.func)
    args: list[Any] = []
    for argument in node.args:
        if isinstance(argument, ast.Starred):
            args.extend(interpreter.collect(interpreter.evaluate(argument.value)))
        else:
            args.append(interpreter.evaluate(argument))
    kwargs: dict[str, Any] = {}
    for keyword in node.keywords:
        value = interpreter.evaluate(keyword.value)
        if keyword.arg is not None:
            kwargs[keyword.arg] = value
            continue
        if not isinstance(value, Mapping):
            kind = type(value).__name__
            raise interpreter.error(TypeError(f"argument after ** must be a mapping, not {kind}"))
        for key in value:
            if not isinstance(key, str):
                raise interpreter.error(TypeError("keywords must be strings"))
            if is_private_name(key):
                raise interpreter.budget.refuse(
                    f"keyword arguments may not start with '_' ({key!r})"
                )
            if key in kwargs:
                message = f"got multiple values for keyword argument '{key}'"
                raise interpreter.error(TypeError(message))
            kwargs[key] = value[key]
    interpreter.budget.line = node.lineno
    return interpreter.call(function, args, kwargs)


def _lambda(interpreter: Interpreter, node: ast.Lambda) -> SandboxFunction:
    return interpreter.make_function("<lambda>", node.args, node.body)


def _joined_str(interpreter: Interpreter, node: ast.JoinedStr) -> str:
    parts = [interpreter.evaluate(value) for value in node.values]
    interpreter.budget.check_size(sum(len(part) for part in parts), "str")
    return "".join(parts)


def _formatted_value(interpreter: Interpreter, node: ast.FormattedValue) -> str:
    value = interpreter.evaluate(node.value)
    if node.conversion != -1:  # !s, !r, !a
        value = interpreter.apply(interpreter.builtins.text, value, chr(node.conversion))
    spec = "" if node.format_spec is None else interpreter.evaluate(node.format_spec)
    if not spec:
        return str(interpreter.apply(interpreter.builtins.text, value))
    check_format_spec(interpreter.budget, spec)
    if type(value) not in _FORMATTABLE:
        raise interpreter.budget.refuse(
            f"format specs (':{spec}') apply only to int, float, str and bool values, "
            f"not to {type(value).__name__}"
        )
    return str(interpreter.apply(format, value, spec))


# ---------------------------------------------------------------------------------- comprehensions


def _comprehension(
    interpreter: Interpreter, generators: list[ast.comprehension], emit: Callable[[], None]
) -> None:
    first = interpreter.evaluate(generators[0].iter)  # in the enclosing scope, as Python does
    with interpreter.new_scope():
        _generate(interpreter, generators, 0, first, emit)


def _generate(
    interpreter: Interpreter,
    generators: list[ast.comprehension],
    index: int,
    iterable: Any,
    emit: Callable[[], None],
) -> None:
    generator = generators[index]
    if generator.is_async:
        raise interpreter.budget.refuse("async code is not allowed")
    for item in interpreter.iterate(iterable):
        interpreter.assign(generator.target, item)
        if all(interpreter.truth(interpreter.evaluate(test)) for test in generator.ifs):
            if index + 1 == len(generators):
                emit()
            else:
                inner = interpreter.evaluate(generators[index + 1].iter)
                _generate(interpreter, generators, index + 1, inner, emit)


def _list_comp(interpreter: Interpreter, node: ast.ListComp | ast.GeneratorExp) -> list[Any]:
    result: list[Any] = []
    limit = interpreter.budget.max_collection_size

    def emit() -> None:
        if len(result) >= limit:
            interpreter.budget.check_size(len(result) + 1, "list")
        result.append(interpreter.evaluate(node.elt))

    _comprehension(interpreter, node.generators, emit)
    interpreter.budget.check_size(len(result), "list")
    return result


def _set_comp(interpreter: Interpreter, node: ast.SetComp) -> set[Any]:
    result: set[Any] = set()
    limit = interpreter.budget.max_collection_size

    def emit() -> None:
        if len(result) >= limit:
            interpreter.budget.check_size(len(result) + 1, "set")
        interpreter.apply(result.add, interpreter.evaluate(node.elt))

    _comprehension(interpreter, node.generators, emit)
    interpreter.budget.check_size(len(result), "set")
    return result


def _dict_comp(interpreter: Interpreter, node: ast.DictComp) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    limit = interpreter.budget.max_collection_size

    def emit() -> None:
        if len(result) >= limit:
            interpreter.budget.check_size(len(result) + 1, "dict")
        key = interpreter.evaluate(node.key)
        interpreter.apply(operator.setitem, result, key, interpreter.evaluate(node.value))

    _comprehension(interpreter, node.generators, emit)
    interpreter.budget.check_size(len(result), "dict")
    return result


#: The expression nodes the interpreter evaluates, and how.
EXPRESSIONS: dict[type[ast.expr], Callable[[Interpreter, Any], Any]] = {
    ast.Constant: _constant,
    ast.Name: _name,
    ast.List: _list,
    ast.Tuple: _tuple,
    ast.Set: _set,
    ast.Dict: _dict,
    ast.BinOp: _bin_op,
    ast.UnaryOp: _unary_op,
    ast.BoolOp: _bool_op,
    ast.Compare: _compare,
    ast.IfExp: _if_exp,
    ast.Attribute: _attribute,
    ast.Subscript: _subscript,
    ast.Slice: _slice,
    ast.Starred: _starred,
    ast.Call: _call,
    ast.Lambda: _lambda,
    ast.JoinedStr: _joined_str,
    ast.FormattedValue: _formatted_value,
    ast.ListComp: _list_comp,
    ast.GeneratorExp: _list_comp,  # generators are evaluated eagerly, into a list
    ast.SetComp: _set_comp,
    ast.DictComp: _dict_comp,
}
