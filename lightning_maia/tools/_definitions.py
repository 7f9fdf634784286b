"""One definition per tool: a name, a description, an input schema and one call.

A definition is read off a typed, documented function, so the JSON schema offered to a
function-calling model and the Python signature shown to a code-writing model can never
disagree with the code.

>>> def shout(text: str, times: int = 2) -> str:
...     '''Repeat a text loudly.
...
...     Args:
...         text: what to repeat.
...         times: how often.
...     '''
...     return " ".join([text.upper()] * times)
>>> definition = ToolDefinition.from_function(shout)
>>> definition.json_schema()["function"]["parameters"]["required"]
['text']
>>> print(definition.python_signature())
def shout(text: str, times: int = 2) -> str:
    \"\"\"Repeat a text loudly.
<BLANKLINE>
    Args:
        text: what to repeat.
        times: how often.
    \"\"\"
>>> definition.validate({"text": "hi", "times": "3"})
Traceback (most recent call last):
...
lightning_maia.errors.ToolError: shout: argument `times` must be an integer, got '3'

Ranges, lengths and list sizes are declared with :class:`Limits` in an ``Annotated`` type; they go
into the JSON schema (``minimum``, ``maximum``, ``maxLength``, ``minItems``, ``maxItems``) and are
checked by :meth:`ToolDefinition.validate`, so that a value in the schema's type but out of range
(a negative seed) is a ToolError for the model, never an exception deep in a backend:

>>> def draw(seed: Annotated[int, Limits(minimum=0)]) -> int:
...     return seed
>>> ToolDefinition.from_function(draw).validate({"seed": -5})
Traceback (most recent call last):
...
lightning_maia.errors.ToolError: draw: argument `seed` must be at least 0, got -5
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from lightning_maia.errors import ToolError

__all__ = ["Annotated", "Limits", "ToolDefinition"]

_ARG_LINE = re.compile(r"^\s{4,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "null": "null",
}


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary text and per-argument descriptions from a Google-style docstring."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    summary: list[str] = []
    arguments: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines:
        if line.strip() in ("Args:", "Arguments:"):
            in_args = True
            continue
        if in_args:
            if line.strip() and not line.startswith(" "):
                in_args = False
            elif match := _ARG_LINE.match("    " + line):
                current = match[1]
                arguments[current] = match[2].strip()
                continue
            elif current and line.strip():
                arguments[current] += " " + line.strip()
                continue
            if in_args:
                continue
        if not in_args:
            summary.append(line)
    return "\n".join(summary).strip(), arguments


@dataclass(frozen=True)
class Limits:
    """Bounds of a tool argument beyond its type: ``Annotated[int, Limits(minimum=0)]``.

    ``minimum`` / ``maximum`` bound numbers (inclusive), ``max_length`` the characters of a
    string, ``min_items`` / ``max_items`` the items of a list.
    """

    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    min_items: int | None = None
    max_items: int | None = None

    def schema(self) -> dict[str, Any]:
        names = {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "maxLength": self.max_length,
            "minItems": self.min_items,
            "maxItems": self.max_items,
        }
        return {name: value for name, value in names.items() if value is not None}


def _schema_of(annotation: Any) -> dict[str, Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        schema = _schema_of(inner)
        for limits in metadata:
            if isinstance(limits, Limits):
                schema.update(limits.schema())
        return schema
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": _JSON_TYPES[type(values[0])], "enum": values}
    if origin in (list, tuple, abc.Sequence):
        (item,) = get_args(annotation)[:1] or (str,)
        return {"type": "array", "items": _schema_of(item)}
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            schema = _schema_of(options[0])
            return {**schema, "nullable": True}
    raise TypeError(f"tool parameters must be JSON types, got {annotation!r}")


def _annotation_text(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    if get_origin(annotation) in (Union, types.UnionType):  # Optional[int] -> int | None
        return " | ".join(_annotation_text(option) for option in get_args(annotation))
    # Drop module paths: list[lightning_maia.tools._results.GeneratedImage] -> list[GeneratedImage]
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(annotation))


@dataclass(frozen=True)
class ToolDefinition:
    """A tool: name, description, parameters (JSON schema) and the function that runs it."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    argument_docs: Mapping[str, str]
    returns: str

    @classmethod
    def from_function(cls, function: Callable[..., Any], name: str | None = None) -> ToolDefinition:
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function, include_extras=True)
        summary, argument_docs = _parse_docstring(function.__doc__ or "")
        properties: dict[str, Any] = {}
        required: list[str] = []
        for parameter in signature.parameters.values():
            if parameter.name == "self":
                continue
            schema = _schema_of(hints[parameter.name])
            if parameter.name in argument_docs:
                schema["description"] = argument_docs[parameter.name]
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
            elif parameter.default is not None:
                schema["default"] = parameter.default
            properties[parameter.name] = schema
        returns = _annotation_text(hints.get("return", Any))
        return cls(
            name=name or function.__name__,
            description=summary,
            parameters={
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
            function=function,
            argument_docs=dict(argument_docs),
            returns=returns,
        )

    def json_schema(self) -> dict[str, Any]:
        """The OpenAI function-calling form of this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def python_signature(self) -> str:
        """A documented Python signature, as a code-writing model sees the tool."""
        signature = inspect.signature(self.function)
        hints = typing.get_type_hints(self.function)
        parts = []
        for parameter in signature.parameters.values():
            if parameter.name == "self":
                continue
            text = f"{parameter.name}: {_annotation_text(hints[parameter.name])}"
            if parameter.default is not inspect.Parameter.empty:
                text += f" = {parameter.default!r}"
            parts.append(text)
        doc = inspect.cleandoc(self.function.__doc__ or "").replace("\n", "\n    ")
        doc = re.sub(r"\n    \n", "\n\n", doc)
        return f'def {self.name}({", ".join(parts)}) -> {self.returns}:\n    """{doc}\n    """'

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check arguments against the schema; a mistake raises a ToolError fit for the agent."""
        if not isinstance(arguments, Mapping):
            raise ToolError(f"{self.name}: arguments must be an object, got {arguments!r}")
        properties = self.parameters["properties"]
        unknown = sorted(set(arguments) - set(properties))
        if unknown:
            raise ToolError(
                f"{self.name}: unknown argument(s) {', '.join(unknown)}; "
                f"it takes {', '.join(properties) or 'no arguments'}"
            )
        missing = [name for name in self.parameters["required"] if name not in arguments]
        if missing:
            raise ToolError(f"{self.name}: missing required argument(s) {', '.join(missing)}")
        for name, value in arguments.items():
            _check_value(self.name, name, properties[name], value)
        return dict(arguments)


def _check_value(tool: str, name: str, schema: Mapping[str, Any], value: Any) -> None:
    if value is None and schema.get("nullable"):
        return
    expected = schema["type"]
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
    }[expected]
    if not ok:
        raise ToolError(f"{tool}: argument `{name}` must be {_TYPE_WORDS[expected]}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolError(f"{tool}: argument `{name}` must be one of {schema['enum']}, got {value!r}")
    _check_limits(tool, name, schema, value)
    if expected == "array":
        for position, item in enumerate(value):
            _check_value(tool, f"{name}[{position}]", schema["items"], item)


def _check_limits(tool: str, name: str, schema: Mapping[str, Any], value: Any) -> None:
    problem: str | None = None
    if "minimum" in schema and value < schema["minimum"]:
        problem = f"must be at least {schema['minimum']}, got {value!r}"
    elif "maximum" in schema and value > schema["maximum"]:
        problem = f"must be at most {schema['maximum']}, got {value!r}"
    elif "maxLength" in schema and len(value) > schema["maxLength"]:
        problem = f"must have at most {schema['maxLength']:,} characters, got {len(value):,}"
    elif "minItems" in schema and len(value) < schema["minItems"]:
        problem = f"must have at least {schema['minItems']} item(s), got {len(value)}"
    elif "maxItems" in schema and len(value) > schema["maxItems"]:
        problem = f"must have at most {schema['maxItems']:,} items, got {len(value):,}"
    if problem is not None:
        raise ToolError(f"{tool}: argument `{name}` {problem}")
