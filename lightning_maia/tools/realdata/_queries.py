"""The text of retrieval prompts and edit instructions the real-data designers write.

A retrieval prompt names what an image must show, what it should show where the data allow,
and what it must not show; an edit instruction names the attribute it changes and its values.
A VLM agent can write them too.

>>> query = parse_query("retrieve digit=3, colour=red; prefer size=large; without colour=blue")
>>> query.present, query.prefer, query.absent
({'digit': '3', 'colour': 'red'}, {'size': 'large'}, {'colour': {'blue'}})
>>> format_query(query) == "retrieve digit=3, colour=red; prefer size=large; without colour=blue"
True
>>> parse_change("change colour from red to blue")
('colour', 'red', 'blue')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lightning_maia.errors import GrammarError


@dataclass
class Query:
    """What a retrieved image must show (``present``), should show (``prefer``) and must not."""

    present: dict[str, str] = field(default_factory=dict)
    prefer: dict[str, str] = field(default_factory=dict)
    absent: dict[str, set[str]] = field(default_factory=dict)


def split_concept(concept: str) -> tuple[str, str] | None:
    """``attribute=value`` as a pair, or None for a concept without ``=``."""
    attribute, sep, value = concept.partition("=")
    if not sep or not attribute.strip() or not value.strip():
        return None
    return attribute.strip(), value.strip()


def fixed_attributes(
    present: Iterable[str], designable: Callable[[str], bool] = lambda concept: True
) -> dict[str, str] | None:
    """The attribute values the ``present`` concepts fix; None when one is not
    ``attribute=value``, is not ``designable``, or gives an attribute a second value."""
    fixed: dict[str, str] = {}
    for concept in present:
        pair = split_concept(concept)
        if pair is None or not designable(concept) or fixed.get(pair[0], pair[1]) != pair[1]:
            return None
        fixed[pair[0]] = pair[1]
    return fixed


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        if not part or part == "anything":
            continue
        pair = split_concept(part)
        if pair is None:
            raise GrammarError(
                f"cannot read {part!r} in a retrieval prompt; write attribute=value, e.g. "
                "'retrieve colour=red, digit=3; without colour=blue'",
                [part],
            )
        pairs.append(pair)
    return pairs


def parse_query(prompt: str) -> Query:
    """Read ``retrieve a=x, b=y; prefer c=z; without d=w`` (clauses after the first optional)."""
    clauses = [c.strip() for c in prompt.strip().split(";")]
    head = clauses[0]
    if not head.lower().startswith("retrieve"):
        raise GrammarError(
            f"a retrieval prompt starts with 'retrieve', got {prompt!r}; e.g. "
            "'retrieve colour=red; without digit=3' or 'retrieve anything'",
            [head.split(" ")[0]],
        )
    query = Query(present=dict(_pairs(head[len("retrieve") :])))
    for clause in clauses[1:]:
        word, _, rest = clause.partition(" ")
        if word == "prefer":
            query.prefer.update(_pairs(rest))
        elif word == "without":
            for attribute, value in _pairs(rest):
                query.absent.setdefault(attribute, set()).add(value)
        elif clause:
            raise GrammarError(
                f"unknown clause {clause!r}; use 'prefer ...' or 'without ...'", [word]
            )
    return query


def _join(values: Mapping[str, str]) -> str:
    return ", ".join(f"{a}={v}" for a, v in values.items())


def format_query(query: Query) -> str:
    """The prompt :func:`parse_query` reads back as ``query``."""
    text = "retrieve " + (_join(query.present) or "anything")
    if query.prefer:
        text += "; prefer " + _join(query.prefer)
    absent = [(a, v) for a, values in query.absent.items() for v in sorted(values)]
    if absent:
        text += "; without " + ", ".join(f"{a}={v}" for a, v in absent)
    return text


_CHANGE = re.compile(r"^change (?P<attribute>[\w ]+?) (?:from (?P<old>.+?) )?to (?P<new>.+)$")


def parse_change(instruction: str) -> tuple[str, str, str] | None:
    """``change ATTRIBUTE [from OLD] to NEW`` as ``(attribute, old or "", new)``; else None."""
    found = _CHANGE.match(instruction.strip())
    if found is None:
        return None
    return found["attribute"].strip(), (found["old"] or "").strip(), found["new"].strip()


def format_change(attribute: str, old: str, new: str) -> str:
    return f"change {attribute} from {old} to {new}" if old else f"change {attribute} to {new}"
