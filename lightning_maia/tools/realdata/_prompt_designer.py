"""PromptDesigner: experiments as text prompts and edit instructions for diffusers pipelines.

For a world without a dataset to retrieve from, a text-to-image pipeline
(:class:`~lightning_maia.tools.backends._diffusers_backend.DiffusersGenerator`) draws what a
prompt built from the concepts says, and an InstructPix2Pix pipeline
(:class:`~lightning_maia.tools.backends._diffusers_backend.DiffusersEditor`) changes one
attribute. The vocabulary says which values each attribute can take; a describer that reads
pixels (the pixel, classifier or CLIP describer) must tell the scientist what was drawn.

>>> import numpy as np
>>> designer = PromptDesigner({"object": ["cat", "dog"], "colour": ["red", "blue"]},
...                           class_attribute="object")
>>> designer.prompts(["object=cat", "colour=red"], [], 1, np.random.default_rng(0))
['a photo of a red cat']
>>> designer.removal_edit("colour=red", [], ["object=cat", "colour=red"], np.random.default_rng(0))
'make the colour blue'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lightning_maia.errors import bad_option
from lightning_maia.tools.realdata._queries import fixed_attributes, split_concept


class PromptDesigner:
    """Concepts to prompts (``a photo of a red cat``) and instructions (``make the colour blue``).

    Args:
        vocabulary: attribute -> the values a prompt may name, e.g. ``{"colour": [...]}``.
        class_attribute: the attribute the classes are values of (``object``).
        template: the prompt, with ``{words}`` for the values (adjectives before the class).
        subject: the word standing for the thing when no class value is named.
    """

    name = "prompts"

    def __init__(
        self,
        vocabulary: Mapping[str, Sequence[str]],
        class_attribute: str | None = None,
        *,
        template: str = "a photo of a {words}",
        subject: str = "thing",
    ) -> None:
        if not vocabulary or any(not values for values in vocabulary.values()):
            raise bad_option("vocabulary", "attribute -> a non-empty list of values", vocabulary)
        if class_attribute is not None and class_attribute not in vocabulary:
            raise bad_option("class_attribute", f"one of {list(vocabulary)}", class_attribute)
        if "{words}" not in template:
            raise bad_option("template", "a text holding {words}", template)
        self.vocabulary = {a: [str(v) for v in values] for a, values in vocabulary.items()}
        self.class_attribute, self.template, self.subject = class_attribute, template, subject

    def can_design(self, concept: str) -> bool:
        pair = split_concept(concept)
        return pair is not None and pair[1] in self.vocabulary.get(pair[0], ())

    def attribute_of(self, concept: str) -> str:
        pair = split_concept(concept)
        return pair[0] if pair is not None else concept

    def values(self, attribute: str) -> list[str]:
        return [f"{attribute}={v}" for v in self.vocabulary.get(attribute, ())]

    def attributes(self) -> tuple[str, ...]:
        return tuple(a for a in self.vocabulary if a != self.class_attribute)

    def class_concept(self, class_name: str) -> str | None:
        if self.class_attribute is None or class_name not in self.vocabulary[self.class_attribute]:
            return None
        return f"{self.class_attribute}={class_name}"

    def neutral_prompts(self, count: int, rng: np.random.Generator) -> list[str]:
        return self.prompts([], [], count, rng) or []

    def prompts(
        self,
        present: Sequence[str],
        absent: Sequence[str],
        count: int,
        rng: np.random.Generator,
    ) -> list[str] | None:
        fixed = fixed_attributes(present, self.can_design)
        if fixed is None:
            return None
        banned = {p for p in map(split_concept, absent) if p is not None}
        prompts = []
        for _ in range(count):
            chosen = dict(fixed)
            for attribute, values in self.vocabulary.items():
                if attribute in chosen:
                    continue
                allowed = [v for v in values if (attribute, v) not in banned] or values
                chosen[attribute] = allowed[int(rng.integers(len(allowed)))]
            prompts.append(self._words(chosen))
        return prompts

    def _words(self, chosen: Mapping[str, str]) -> str:
        head = chosen.get(self.class_attribute or "", self.subject)
        adjectives = [v for a, v in chosen.items() if a != self.class_attribute]
        return self.template.format(words=" ".join([*adjectives, head]))

    def removal_edit(
        self,
        concept: str,
        avoid: Sequence[str],
        context: Sequence[str],
        rng: np.random.Generator,
    ) -> str | None:
        pair = split_concept(concept)
        if pair is None or pair[0] not in self.vocabulary:
            return None
        banned = {pair[1]} | {p[1] for p in map(split_concept, avoid) if p and p[0] == pair[0]}
        choices = [v for v in self.vocabulary[pair[0]] if v not in banned]
        if not choices:
            return None
        value = choices[int(rng.integers(len(choices)))]
        return (
            f"make it a {value}"
            if pair[0] == self.class_attribute
            else f"make the {pair[0]} {value}"
        )

    def label(self, concepts: Sequence[str], logic: str) -> str:
        words = [p[1] if (p := split_concept(c)) else c for c in concepts]
        return {"or": " OR ", "and": " AND "}.get(logic, ", ").join(words)
