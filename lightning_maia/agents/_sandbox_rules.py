"""The rules of the program sandbox: its exceptions, its limits and the refusals made before a run.

The interpreter (:mod:`lightning_maia.agents._sandbox_nodes`) and the builtins it offers
(:mod:`lightning_maia.agents._sandbox_builtins`) share these; the rules as a whole are described in
:mod:`lightning_maia.agents._sandbox`.

**Why one file.** Every refusal the sandbox makes, with the limits it checks, stays in one file
so that the security boundary can be reviewed in one reading.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import re
import time
from collections.abc import ItemsView, KeysView, ValuesView
from typing import Any

from lightning_maia.errors import MaiaError

#: The largest integer a program may build, in bits (``2 ** 65536`` has 65,537).
MAX_INT_BITS = 65_536
#: How deeply the program's own functions may call each other.
MAX_CALL_DEPTH = 50
#: All the items a run builds, together, may reach this many times ``max_collection_size``.
ALLOCATION_FACTOR = 20
#: The deepest nesting of containers that a comparison, search, sort or hash may walk.
MAX_NESTING = 100
#: The builtin exception classes a program may name in ``except`` clauses and raise.
ALLOWED_EXCEPTIONS: tuple[type[Exception], ...] = (
    Exception,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    ZeroDivisionError,
)


class SandboxViolation(MaiaError):  # noqa: N818 (the name the agents use)
    """A construct the sandbox refuses: an import, a dunder, an attribute of a foreign object, ...

    A program cannot catch it; the run ends and reports it as ``refused at line N: ...``.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class SandboxLimitExceeded(SandboxViolation):
    """A program ran past a limit: steps, time, call depth, or the size of what it builds."""


class ProgramError(Exception):
    """An exception the program caused, carried with the line of the program that raised it.

    Internal: it separates what the program did wrong (reported in ``ProgramResult.error``) from
    bugs of the interpreter itself, which propagate as they are.
    """

    def __init__(self, error: BaseException, line: int | None) -> None:
        super().__init__(error)
        self.error = error
        self.line = line


class Budget:
    """Counts the steps, time and items of one run and refuses what goes past the limits.

    ``line`` is the program line being evaluated, kept current by the interpreter so that every
    refusal names where it happened.
    """

    def __init__(self, *, max_steps: int, timeout_s: float, max_collection_size: int) -> None:
        self.max_steps = max_steps
        self.timeout_s = timeout_s
        self.max_collection_size = max_collection_size
        self.steps = 0
        self.allocated = 0
        self.line: int | None = None
        self._deadline = time.monotonic() + timeout_s

    def tick(self) -> None:
        """Count one evaluated node; past the step or time limit the run stops."""
        if self.steps >= self.max_steps:
            raise SandboxLimitExceeded(f"step limit of {self.max_steps} reached", self.line)
        self.steps += 1
        if time.monotonic() > self._deadline:
            raise SandboxLimitExceeded(f"time limit of {self.timeout_s:g} s reached", self.line)

    def refuse(self, message: str) -> SandboxViolation:
        """A refusal at the current line, to raise."""
        return SandboxViolation(message, self.line)

    def check_size(self, size: int, kind: str, *, added: int | None = None) -> None:
        """Refuse a ``kind`` (list, str, ...) of ``size`` items before it is built.

        ``added`` is how many new items it costs when it grows an existing one (default: all).
        """
        if size > self.max_collection_size:
            noun = "characters" if kind == "str" else "items"
            raise SandboxLimitExceeded(
                f"a {kind} of {size:,} {noun} is larger than the limit of "
                f"{self.max_collection_size:,} (max_collection_size)",
                self.line,
            )
        self.allocated += size if added is None else added
        total = self.max_collection_size * ALLOCATION_FACTOR
        if self.allocated > total:
            raise SandboxLimitExceeded(
                f"the program built more than {total:,} items in all "
                f"({ALLOCATION_FACTOR} x max_collection_size)",
                self.line,
            )

    def check_work(self, operation: str, *operands: Any, per_item: Any = None) -> None:
        """Refuse ``operation`` (``==``, ``in``, ``list.count``, ``sorted``, ...) before it runs
        when C code would walk more than ``max_collection_size`` items of its operands, or
        containers nested deeper than ``MAX_NESTING``; the walk of this check is bounded too.

        ``per_item`` is a value compared with every item of the first operand (the needle of a
        search), so its own size counts once per item.
        """
        limit = self.max_collection_size
        total = sum(structure_work(operand, limit) for operand in operands)
        if per_item is not None and operands:
            needle = structure_work(per_item, limit)
            if needle > 1:
                total += needle * max(_flat_length(operands[0]), 1)
        if total > limit:
            raise SandboxLimitExceeded(
                f"{operation} on these values would walk more than {limit:,} items, or "
                f"containers nested more than {MAX_NESTING} deep (max_collection_size)",
                self.line,
            )

    def check_membership(self, item: Any, container: Any) -> None:
        """Refuse ``item in container`` when it would scan too much (``"a" in range(10**12)``)."""
        if isinstance(container, range):
            if type(item) in (int, bool):
                return  # answered by arithmetic
            length = _range_length(container)
            if length > self.max_collection_size:
                raise SandboxLimitExceeded(
                    f"`in` on a range of {length:,} numbers scans it item by item for a "
                    f"{type(item).__name__}; the limit is {self.max_collection_size:,} "
                    "(max_collection_size)",
                    self.line,
                )
            return
        if isinstance(container, str | bytes):
            return  # bounded by the size of strings a program can build
        if isinstance(container, dict | set | frozenset | KeysView):
            self.check_work("`in`", item)  # hashing the item
        else:
            self.check_work("`in`", container, per_item=item)

    def check_int_bits(self, bits: int, operation: str) -> None:
        """Refuse an integer result of about ``bits`` bits before computing it."""
        if bits > MAX_INT_BITS:
            raise SandboxLimitExceeded(
                f"the result of {operation} would have about {bits:,} bits, more than the limit "
                f"of {MAX_INT_BITS:,}",
                self.line,
            )


# ----------------------------------------------------------------------------------- static rules

_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Import: "import statements are not allowed",
    ast.ImportFrom: "import statements are not allowed",
    ast.Global: "global and nonlocal statements are not allowed",
    ast.Nonlocal: "global and nonlocal statements are not allowed",
    ast.ClassDef: "class definitions are not allowed",
    ast.AsyncFunctionDef: "async code is not allowed",
    ast.AsyncFor: "async code is not allowed",
    ast.AsyncWith: "async code is not allowed",
    ast.Await: "async code is not allowed",
    ast.Yield: "yield is not allowed (functions cannot be generators)",
    ast.YieldFrom: "yield is not allowed (functions cannot be generators)",
    ast.With: "with statements are not allowed",
    ast.Match: "match statements are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed; assign on a line of its own",
}
if hasattr(ast, "TryStar"):  # Python 3.11+
    _REFUSED_NODES[ast.TryStar] = "except* is not allowed"


def check_program(tree: ast.Module) -> None:
    """Refuse the constructs that never run, before anything runs.

    Raises :class:`SandboxViolation` for a refused construct and a :class:`ProgramError` holding a
    ``SyntaxError`` for what Python's compiler, which the sandbox never calls, would reject.
    """
    _check_node(tree, in_loop=False, in_function=False)


def _check_node(node: ast.AST, *, in_loop: bool, in_function: bool) -> None:
    line = getattr(node, "lineno", None)
    refusal = _refusal(node)
    if refusal is not None:
        raise SandboxViolation(refusal, line)
    if isinstance(node, ast.Break | ast.Continue) and not in_loop:
        word = "break" if isinstance(node, ast.Break) else "continue"
        raise ProgramError(SyntaxError(f"'{word}' outside loop"), line)
    if isinstance(node, ast.Return) and not in_function:
        raise ProgramError(SyntaxError("'return' outside function"), line)
    if isinstance(node, ast.FunctionDef | ast.Lambda):
        in_loop, in_function = False, True
    loop_body: set[int] = set()
    if isinstance(node, ast.For | ast.While):
        loop_body = {id(statement) for statement in node.body}
    for child in ast.iter_child_nodes(node):
        _check_node(child, in_loop=in_loop or id(child) in loop_body, in_function=in_function)


def _refusal(node: ast.AST) -> str | None:
    message = _REFUSED_NODES.get(type(node))
    if message is not None:
        return message
    names: list[str | None] = []
    if isinstance(node, ast.Name):
        names.append(node.id)
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            return f"attributes starting with an underscore are not allowed ({node.attr!r})"
        if isinstance(node.ctx, ast.Store | ast.Del):
            return "assigning to or deleting attributes is not allowed"
    elif isinstance(node, ast.FunctionDef):
        if node.decorator_list:
            return "decorators are not allowed"
        names.append(node.name)
    elif isinstance(node, ast.arg):
        names.append(node.arg)
    elif isinstance(node, ast.keyword | ast.ExceptHandler):
        names.append(node.arg if isinstance(node, ast.keyword) else node.name)
    for name in names:
        if is_private_name(name):
            return f"names starting with an underscore are not allowed ({name!r})"
    return None


def is_private_name(name: str | None) -> bool:
    """Whether a name is refused: it starts with ``_`` and is not the throwaway ``_`` itself."""
    return name is not None and name.startswith("_") and name != "_"


# ------------------------------------------------------------------------------ size of operations

_SEQUENCES = (str, bytes, list, tuple)
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[#0+ \-]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def check_operation(budget: Budget, operation: type[ast.operator], left: Any, right: Any) -> None:
    """Refuse a binary operation whose result would be too large, before computing it."""
    if operation is ast.Mult:
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, _SEQUENCES):
                times = _as_index(count)
                if times is not None:
                    budget.check_size(len(sequence) * max(times, 0), type(sequence).__name__)
                return
        if isinstance(left, int) and isinstance(right, int):
            budget.check_int_bits(left.bit_length() + right.bit_length(), "*")
    elif operation is ast.Add:
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            budget.check_size(len(left) + len(right), type(left).__name__)
    elif operation is ast.Pow:
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            budget.check_int_bits(math.ceil(right * math.log2(abs(left))), "**")
    elif operation is ast.LShift:
        if isinstance(left, int) and isinstance(right, int) and left != 0 and right > 0:
            budget.check_int_bits(left.bit_length() + right, "<<")
    elif operation is ast.Mod:
        if isinstance(left, str | bytes):
            text = left if isinstance(left, str) else left.decode("latin-1")
            check_percent_format(budget, text)
            size = len(text) + text_size(right, budget.max_collection_size)
            budget.check_size(size, "str", added=0)  # "%s" % (huge,) converts huge to text
    elif operation is ast.BitOr and _is_set_or_dict(left) and _is_set_or_dict(right):
        budget.check_size(len(left) + len(right), type(left).__name__)


def _is_set_or_dict(value: Any) -> bool:
    return isinstance(value, set | frozenset | dict)


def _as_index(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if hasattr(type(value), "__index__"):
        return int(operator.index(value))
    return None


def check_percent_format(budget: Budget, template: str) -> None:
    """Refuse ``%``-formatting whose widths or precisions are ``*`` or past the size limit."""
    for match in _PERCENT_FIELD.finditer(template):
        for number in match.groups():
            if number == "*":
                raise budget.refuse("'*' widths in %-formatting are not allowed; use f-strings")
            if number is not None:
                _check_width(budget, number)


def check_format_spec(budget: Budget, spec: str) -> None:
    """Refuse a format spec (``f"{x:>20.3f}"``) whose width or precision is past the size limit."""
    for number in _DIGITS.findall(spec):
        _check_width(budget, number)


def _check_width(budget: Budget, digits: str) -> None:
    width = int(digits) if len(digits) <= 12 else budget.max_collection_size + 1
    if width > budget.max_collection_size:
        budget.check_size(width, "str", added=0)


# ------------------------------------------------------------------------------ work of C code

_CONTAINERS = (list, tuple, set, frozenset, dict, KeysView, ValuesView, ItemsView)


def structure_work(value: Any, limit: int) -> int:
    """About how many items C code walks to compare, hash or search ``value`` (a shared item is
    counted every time it is reached, as C code reaches it), counting no further than past
    ``limit``; containers nested deeper than ``MAX_NESTING`` count as past the limit.

    >>> row = [0] * 1000
    >>> structure_work([row] * 1000, 10**9) > 10**6  # 1,000 references to one list of 1,000
    True
    """
    if not _walks(value):
        return 1
    total = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending and total <= limit:
        item, depth = pending.pop()
        if depth >= MAX_NESTING:
            return limit + 1
        if isinstance(item, _CONTAINERS):
            total += 1 + len(item)
            if total > limit:
                break
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        else:
            fields = dataclasses.fields(item)
            total += 1 + len(fields)
            children = [getattr(item, field.name) for field in fields]
        pending.extend((child, depth + 1) for child in children if _walks(child))
    return total


def _walks(value: Any) -> bool:
    return isinstance(value, _CONTAINERS) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


def _flat_length(value: Any) -> int:
    return len(value) if isinstance(value, _CONTAINERS) else 1


def _range_length(values: range) -> int:
    step = values.step
    return max(0, (values.stop - values.start + step - (1 if step > 0 else -1)) // step)


# ------------------------------------------------------------------------------ size of text


def text_size(value: Any, limit: int) -> int:
    """About how many characters ``str(value)`` has, counting no further than past ``limit``.

    >>> text_size([1, "ab"], 100)  # str([1, 'ab']) has 9
    12
    """
    total = 0
    pending = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            pending.extend(item)
        elif isinstance(item, KeysView | ValuesView | ItemsView):  # dict_values([...])
            total += 14 + 2 * len(item)
            pending.extend(item)
        elif isinstance(item, slice):
            total += 16
            pending.extend((item.start, item.stop, item.step))
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, BaseException):
            total += 2 + len(type(item).__name__)
            pending.extend(item.args)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            fields = dataclasses.fields(item)
            total += 2 + len(type(item).__name__) + 4 * len(fields)
            pending.extend(getattr(item, field.name) for field in fields)
        else:
            total += 24
    return total
