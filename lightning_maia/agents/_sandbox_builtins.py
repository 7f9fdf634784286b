"""The builtins and container methods a sandboxed program may call, each checked against the limits.

Functions that would consume an iterable in C (``sum``, ``sorted``, ``list``, ``str.join``, ...)
first take at most ``max_collection_size`` items from it, so that ``sum(range(10**12))`` is refused
instead of running for hours. ``enumerate``, ``zip``, ``map``, ``filter`` and ``reversed`` return
lists. The rules as a whole are described in :mod:`lightning_maia.agents._sandbox`.

**Why one file.** Each builtin is small and checked the same way against the limits; in one file
the allow-list of what a program may call is read whole.
"""

from __future__ import annotations

import ast
import builtins
import itertools
from collections.abc import Callable, Iterable, Mapping, Sized
from functools import partial
from typing import Any

from lightning_maia.agents._sandbox_rules import (
    ALLOWED_EXCEPTIONS,
    Budget,
    check_operation,
    text_size,
)

#: The public methods programs may call on builtin values; ``str.format`` is left out on purpose
#: (``"{0.__class__}".format(x)`` reads attributes).
SAFE_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(
        {
            "capitalize", "casefold", "center", "count", "endswith", "find", "index", "isalnum",
            "isalpha", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle",
            "isupper", "join", "ljust", "lower", "lstrip", "partition", "removeprefix",
            "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit",
            "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
            "zfill",
        }
    ),
    list: frozenset(
        {
            "append", "clear", "copy", "count", "extend", "index", "insert", "pop", "remove",
            "reverse", "sort",
        }
    ),
    dict: frozenset(
        {
            "clear", "copy", "get", "items", "keys", "pop", "popitem", "setdefault", "update",
            "values",
        }
    ),
    set: frozenset(
        {
            "add", "clear", "copy", "difference", "discard", "intersection", "isdisjoint",
            "issubset", "issuperset", "remove", "symmetric_difference", "union", "update",
        }
    ),
    tuple: frozenset({"count", "index"}),
    float: frozenset({"is_integer"}),
}  # fmt: skip
_SET_METHODS_TAKING_ITERABLES = frozenset(
    {"difference", "intersection", "isdisjoint", "issubset", "issuperset", "symmetric_difference"}
)
_TYPES = (bool, dict, float, int, list, set, str, tuple)
_MISSING: Any = object()


def _length(sized: Sized) -> int:
    try:
        return len(sized)
    except OverflowError:  # len(range(10**20)) does not fit a C integer
        if not isinstance(sized, range):
            raise
        step = sized.step
        return max(0, (sized.stop - sized.start + step - (1 if step > 0 else -1)) // step)


class SandboxBuiltin:
    """A builtin offered to programs: its name and the checked function behind it."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        self.name = name
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<built-in function {self.name}>"


class SafeMethod(SandboxBuiltin):
    """A method of a str, list, dict, set, tuple or float value from the safe-method allow-list."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<method {self.name}>"


class Output:
    """Captured ``print`` output, cut at ``limit`` characters with a note saying so."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.truncated = False
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        room = self.limit - self._size
        if len(text) > room:
            text = text[: max(room, 0)]
            self.truncated = True
        if text:
            self._parts.append(text)
            self._size += len(text)

    def getvalue(self) -> str:
        text = "".join(self._parts)
        if self.truncated:
            text += (
                f"\n[output truncated: the program printed more than {self.limit:,} characters]\n"
            )
        return text


class Builtins:
    """The builtins of one run, bound to its budget and output.

    ``resolve`` turns a value the program passes as a function (a ``key=``, ``map``'s first
    argument) into something safe to call, or raises the refusal.
    """

    def __init__(
        self,
        budget: Budget,
        output: Output,
        resolve: Callable[[Any], Callable[..., Any]],
        allowed_types: tuple[type, ...],
    ) -> None:
        self.budget = budget
        self.output = output
        self.resolve = resolve
        self.classes: tuple[type, ...] = _TYPES + ALLOWED_EXCEPTIONS + allowed_types
        names = "abs all any enumerate filter isinstance len map max min print range reversed round"
        names += " sorted sum zip"
        self.namespace: dict[str, Any] = {
            name: SandboxBuiltin(name, getattr(self, f"_{name}")) for name in names.split()
        }
        self.namespace.update({kind.__name__: kind for kind in _TYPES + ALLOWED_EXCEPTIONS})
        #: What calling a builtin type runs: ``str(x)`` is bounded like ``print(x)``.
        self.constructors: dict[type, SandboxBuiltin] = {
            kind: SandboxBuiltin(kind.__name__, getattr(self, f"_{kind.__name__}"))
            for kind in _TYPES
        }
        #: Every builtin function of this run by name, for a builtin kept from an earlier run.
        self.by_name: dict[str, SandboxBuiltin] = {
            builtin.name: builtin
            for builtin in [*self.namespace.values(), *self.constructors.values()]
            if isinstance(builtin, SandboxBuiltin)
        }

    # ------------------------------------------------------------------------------ helpers

    def collect(self, iterable: Iterable[Any]) -> list[Any]:
        """The items of ``iterable`` as a list, refused past ``max_collection_size`` items."""
        limit = self.budget.max_collection_size
        if isinstance(iterable, Sized):
            self.budget.check_size(_length(iterable), type(iterable).__name__)
            return list(iterable)
        items = list(itertools.islice(iterable, limit + 1))
        self.budget.check_size(len(items), "list")
        return items

    def text(self, value: Any, conversion: str = "s") -> str:
        """``str(value)`` (``repr`` for ``"r"``, ``ascii`` for ``"a"``), refused when too long."""
        if conversion == "s" and type(value) is str:
            return value
        limit = self.budget.max_collection_size
        self.budget.check_size(text_size(value, limit), "str", added=0)
        converters: dict[str, Callable[[Any], str]] = {"s": str, "r": repr, "a": ascii}
        convert = converters[conversion]
        text = convert(value)
        self.budget.check_size(len(text), "str")
        return text

    def function_argument(self, value: Any) -> Callable[..., Any] | None:
        """A function passed as an argument (``key=``, ``map(f, ...)``), checked; None stays."""
        return None if value is None else self.resolve(value)

    # ------------------------------------------------------------------------------ builtins

    def _print(
        self, *values: Any, sep: str | None = " ", end: str | None = "\n", flush: bool = False
    ) -> None:
        for name, text in (("sep", sep), ("end", end)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{name} must be None or a string, not {type(text).__name__}")
        for index, value in enumerate(values):
            if index:
                self.output.write(" " if sep is None else sep)
            self.output.write(self.text(value))
        self.output.write("\n" if end is None else end)

    def _len(self, value: Any) -> int:
        return len(value)

    def _range(self, *args: Any) -> range:
        return range(*args)  # lazy: its items cost steps when iterated, and size when collected

    def _min(self, *args: Any, key: Any = None, default: Any = _MISSING) -> Any:
        return self._extreme(builtins.min, args, key, default)

    def _max(self, *args: Any, key: Any = None, default: Any = _MISSING) -> Any:
        return self._extreme(builtins.max, args, key, default)

    def _extreme(self, choose: Any, args: tuple[Any, ...], key: Any, default: Any) -> Any:
        if not args:
            raise TypeError(f"{choose.__name__} expected at least 1 argument, got 0")
        items = self.collect(args[0]) if len(args) == 1 else list(args)
        if key is None:
            self.budget.check_work(f"{choose.__name__}()", items)
        extra = {} if default is _MISSING else {"default": default}
        return choose(items, key=self.function_argument(key), **extra)

    def _sum(self, iterable: Iterable[Any], start: Any = 0) -> Any:
        if isinstance(start, str):
            raise TypeError("sum() can't sum strings [use ''.join(seq) instead]")
        total = start
        for item in self.collect(iterable):
            check_operation(self.budget, ast.Add, total, item)
            total = total + item
        return total

    def _sorted(
        self, iterable: Iterable[Any], *, key: Any = None, reverse: bool = False
    ) -> list[Any]:
        items = self.collect(iterable)
        self._check_sort("sorted()", items, key)
        items.sort(key=self.function_argument(key), reverse=reverse)
        return items

    def _check_sort(self, what: str, items: list[Any], key: Any) -> None:
        # Sorting compares items about log2(n) times each; with a key the keys are compared,
        # and computing each key costs steps in the interpreter.
        if key is None:
            self.budget.check_work(what, items)

    def _reversed(self, sequence: Any) -> list[Any]:
        return self.collect(reversed(sequence))

    def _enumerate(self, iterable: Iterable[Any], start: int = 0) -> list[tuple[int, Any]]:
        return self.collect(enumerate(iterable, start))

    def _zip(self, *iterables: Iterable[Any], strict: bool = False) -> list[tuple[Any, ...]]:
        return self.collect(zip(*iterables, strict=strict))

    def _map(self, function: Any, *iterables: Iterable[Any]) -> list[Any]:
        if not iterables:
            raise TypeError("map() must have at least two arguments.")
        call = self.resolve(function)
        rows = self.collect(zip(*iterables, strict=False))
        return [call(*row) for row in rows]

    def _filter(self, function: Any, iterable: Iterable[Any]) -> list[Any]:
        call = self.function_argument(function)
        items = self.collect(iterable)
        return [item for item in items if (call(item) if call is not None else item)]

    def _abs(self, value: Any) -> Any:
        return abs(value)

    def _round(self, number: Any, ndigits: Any = None) -> Any:
        if isinstance(ndigits, int) and abs(ndigits) > 1000:
            raise self.budget.refuse("round() to more than 1000 digits is not allowed")
        return round(number) if ndigits is None else round(number, ndigits)

    def _any(self, iterable: Iterable[Any]) -> bool:
        return any(self.collect(iterable))

    def _all(self, iterable: Iterable[Any]) -> bool:
        return all(self.collect(iterable))

    def _isinstance(self, value: Any, classes: Any) -> bool:
        for kind in classes if isinstance(classes, tuple) else (classes,):
            if not isinstance(kind, type) or kind not in self.classes:
                raise self.budget.refuse(
                    "isinstance() accepts only builtin types, the allowed exceptions and the "
                    f"result types of the tools, not {kind!r}"
                )
        return isinstance(value, classes)

    # ------------------------------------------------------------------------------ types

    def _str(self, value: Any = "") -> str:
        return self.text(value)

    def _int(self, *args: Any) -> int:
        return int(*args)

    def _float(self, *args: Any) -> float:
        return float(*args)

    def _bool(self, value: Any = False) -> bool:
        return bool(value)

    def _list(self, iterable: Iterable[Any] = ()) -> list[Any]:
        return self.collect(iterable)

    def _tuple(self, iterable: Iterable[Any] = ()) -> tuple[Any, ...]:
        return tuple(self.collect(iterable))

    def _set(self, iterable: Iterable[Any] = ()) -> set[Any]:
        items = self.collect(iterable)
        self.budget.check_work("set()", items)  # hashing every item
        return set(items)

    def _dict(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        self._dict_update(result, *args, **kwargs)
        return result

    # ------------------------------------------------------------------------------ methods

    def method(self, value: Any, name: str) -> SafeMethod | None:
        """The allow-listed method ``name`` of a builtin value, or None when it is not one."""
        for kind, names in SAFE_METHODS.items():
            if not (isinstance(value, kind) and name in names):
                continue
            label = f"{kind.__name__}.{name}"
            checked = getattr(self, f"_{kind.__name__}_{name}", None)
            if checked is not None:
                return SafeMethod(label, partial(checked, value))
            if kind is set and name in _SET_METHODS_TAKING_ITERABLES:
                return SafeMethod(label, partial(self._set_method, value, name))
            return SafeMethod(label, getattr(value, name))
        return None

    def _str_join(self, separator: str, iterable: Iterable[Any]) -> str:
        items = self.collect(iterable)
        size = sum(len(item) for item in items if isinstance(item, str))
        self.budget.check_size(size + len(separator) * max(len(items) - 1, 0), "str")
        return separator.join(items)

    def _str_replace(self, text: str, old: str, new: str, count: int = -1) -> str:
        if isinstance(old, str) and isinstance(new, str) and isinstance(count, int):
            found = text.count(old) if old else len(text) + 1
            found = found if count < 0 else min(found, count)
            self.budget.check_size(len(text) + found * (len(new) - len(old)), "str")
        return text.replace(old, new, count)

    def _padded(self, text: str, name: str, width: Any, *args: Any) -> str:
        if isinstance(width, int):
            self.budget.check_size(width, "str")
        return str(getattr(text, name)(width, *args))

    def _str_ljust(self, text: str, width: Any, *args: Any) -> str:
        return self._padded(text, "ljust", width, *args)

    def _str_rjust(self, text: str, width: Any, *args: Any) -> str:
        return self._padded(text, "rjust", width, *args)

    def _str_center(self, text: str, width: Any, *args: Any) -> str:
        return self._padded(text, "center", width, *args)

    def _str_zfill(self, text: str, width: Any) -> str:
        return self._padded(text, "zfill", width)

    def _list_append(self, items: list[Any], item: Any) -> None:
        self.budget.check_size(len(items) + 1, "list", added=1)
        items.append(item)

    def _list_insert(self, items: list[Any], index: Any, item: Any) -> None:
        self.budget.check_size(len(items) + 1, "list", added=1)
        items.insert(index, item)

    def _list_extend(self, items: list[Any], iterable: Iterable[Any]) -> None:
        new = self.collect(iterable)
        self.budget.check_size(len(items) + len(new), "list", added=len(new))
        items.extend(new)

    def _list_copy(self, items: list[Any]) -> list[Any]:
        self.budget.check_size(len(items), "list")
        return items.copy()

    def _list_sort(self, items: list[Any], *, key: Any = None, reverse: bool = False) -> None:
        self._check_sort("list.sort()", items, key)
        items.sort(key=self.function_argument(key), reverse=reverse)

    def _list_count(self, items: list[Any], value: Any) -> int:
        self.budget.check_work("list.count()", items, per_item=value)
        return items.count(value)

    def _list_index(self, items: list[Any], value: Any, *bounds: Any) -> int:
        self.budget.check_work("list.index()", items, per_item=value)
        return items.index(value, *bounds)

    def _list_remove(self, items: list[Any], value: Any) -> None:
        self.budget.check_work("list.remove()", items, per_item=value)
        items.remove(value)

    def _tuple_count(self, items: tuple[Any, ...], value: Any) -> int:
        self.budget.check_work("tuple.count()", items, per_item=value)
        return items.count(value)

    def _tuple_index(self, items: tuple[Any, ...], value: Any, *bounds: Any) -> int:
        self.budget.check_work("tuple.index()", items, per_item=value)
        return items.index(value, *bounds)

    def _dict_update(self, mapping: dict[Any, Any], *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            raise TypeError(f"expected at most 1 positional argument, got {len(args)}")
        if args:
            source = args[0]
            pairs = source if isinstance(source, Mapping) else self.collect(source)
            size = len(mapping) + len(pairs) + len(kwargs)
            self.budget.check_size(size, "dict", added=len(pairs))
            mapping.update(pairs)
        self.budget.check_size(len(mapping) + len(kwargs), "dict", added=len(kwargs))
        mapping.update(kwargs)

    def _dict_setdefault(self, mapping: dict[Any, Any], key: Any, default: Any = None) -> Any:
        self.budget.check_size(len(mapping) + 1, "dict", added=1)
        return mapping.setdefault(key, default)

    def _dict_copy(self, mapping: dict[Any, Any]) -> dict[Any, Any]:
        self.budget.check_size(len(mapping), "dict")
        return mapping.copy()

    def _set_add(self, items: set[Any], item: Any) -> None:
        self.budget.check_size(len(items) + 1, "set", added=1)
        self.budget.check_work("set.add()", item)
        items.add(item)

    def _set_update(self, items: set[Any], *iterables: Iterable[Any]) -> None:
        others = [self.collect(iterable) for iterable in iterables]
        added = sum(len(other) for other in others)
        self.budget.check_size(len(items) + added, "set", added=added)
        items.update(*others)

    def _set_union(self, items: set[Any], *iterables: Iterable[Any]) -> set[Any]:
        others = [self.collect(iterable) for iterable in iterables]
        self.budget.check_size(len(items) + sum(len(other) for other in others), "set")
        return items.union(*others)

    def _set_copy(self, items: set[Any]) -> set[Any]:
        self.budget.check_size(len(items), "set")
        return items.copy()

    def _set_method(self, items: Any, name: str, *iterables: Iterable[Any]) -> Any:
        return getattr(items, name)(*(self.collect(iterable) for iterable in iterables))
