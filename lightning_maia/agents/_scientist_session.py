"""One run of the scientist on a toolbox: its steps, its tool calls, and batched measurements.

Every tool call goes through :meth:`Session.call`, which records it (arguments, the text an agent
would read back, the images it made or used, errors, seconds) under the current step; the
helpers split work into calls the toolbox accepts and return plain values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from lightning_maia.agents._records import Step, ToolCallRecord
from lightning_maia.agents._scientist_hypotheses import Observation
from lightning_maia.errors import MaiaError, ToolError
from lightning_maia.tools._results import (
    EditPair,
    ExemplarImage,
    Experiment,
    GeneratedImage,
    ImageDescription,
    UnitCall,
    observation,
)
from lightning_maia.tools.toolbox import Toolbox

#: What a measurement of edited images returns (activations, observations).
Measured = TypeVar("Measured")


def _image_ids(result: Any) -> list[str]:
    """The images a tool result made or names."""
    items = result if isinstance(result, list) else [result]
    ids: list[str] = []
    for item in items:
        if isinstance(item, (GeneratedImage, ExemplarImage, ImageDescription)):
            ids.append(item.id)
        elif isinstance(item, EditPair):
            ids.append(item.edited)
        elif isinstance(item, UnitCall):
            ids.append(item.highlighted)
        elif isinstance(item, Experiment):
            ids.extend(item.image_ids)
    return ids


class PolicyError(MaiaError):
    """The unit or the backends left the policy nothing to work with; the message says why."""


class Session:
    """The record of one run: steps with their tool calls, and what was measured."""

    def __init__(self, toolbox: Toolbox) -> None:
        self.toolbox = toolbox
        self.steps: list[Step] = []
        #: Images the run made (generated or edited) or read (exemplars).
        self.images = 0
        self.activations: dict[str, float] = {}
        self.highlighted: dict[str, str] = {}
        self.concepts: dict[str, frozenset[str]] = {}
        self._step: Step | None = None

    @property
    def batch(self) -> int:
        return self.toolbox.max_images_per_call

    @contextmanager
    def step(self, request: str) -> Iterator[Step]:
        """A policy move: the tool calls made inside belong to it."""
        step = Step(index=len(self.steps), request=request)
        self.steps.append(step)
        self._step, started = step, time.perf_counter()
        try:
            yield step
        finally:
            step.seconds = time.perf_counter() - started
            self._step = None

    def call(self, tool: str, **arguments: Any) -> Any:
        """Run one tool and record it; a tool error is recorded, then raised."""
        started = time.perf_counter()
        record = ToolCallRecord(tool=tool, arguments=dict(arguments), observation="")
        if self._step is not None:
            self._step.tool_calls.append(record)
        try:
            result = getattr(self.toolbox, tool)(**arguments)
        except MaiaError as error:
            record.error = str(error)
            record.observation = f"error: {error}"
            raise
        finally:
            record.seconds = time.perf_counter() - started
        record.observation = observation(result)
        record.image_ids = _image_ids(result)
        return result

    # -- batched helpers ------------------------------------------------------------------

    def exemplars(self) -> list[ExemplarImage]:
        found: list[ExemplarImage] = self.call("dataset_exemplars")
        self.images += len(found)
        for exemplar in found:
            self.activations[exemplar.id] = exemplar.activation
        return found

    def generate(self, prompts: Sequence[str]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(prompts), self.batch):
            made = self.call("text2image", prompts=list(prompts[start : start + self.batch]))
            ids.extend(image.id for image in made)
        self.images += len(ids)
        return ids

    def edit(self, image_ids: Sequence[str], instructions: Sequence[str]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(image_ids), self.batch):
            pairs = self.call(
                "edit_images",
                image_ids=list(image_ids[start : start + self.batch]),
                instructions=list(instructions[start : start + self.batch]),
            )
            ids.extend(pair.edited for pair in pairs)
        self.images += len(ids)
        return ids

    def edit_then(
        self,
        step: Step,
        image_ids: Sequence[str],
        instructions: Sequence[str],
        measure: Callable[[list[str]], Measured],
    ) -> tuple[list[str], Measured] | None:
        """Edit the images, then ``measure`` the edits (e.g. :meth:`observe`); None where a tool
        refused, with the error recorded on ``step`` so that the run goes on."""
        try:
            edited = self.edit(image_ids, instructions)
            return edited, measure(edited)
        except ToolError as error:
            step.error = str(error)
            return None

    def measure(self, image_ids: Sequence[str]) -> list[float]:
        for start in range(0, len(image_ids), self.batch):
            calls = self.call("call_units", image_ids=list(image_ids[start : start + self.batch]))
            for unit_call in calls:
                self.activations[unit_call.id] = unit_call.activation
                self.highlighted[unit_call.id] = unit_call.highlighted
        return [self.activations[image_id] for image_id in image_ids]

    def describe(self, image_ids: Sequence[str]) -> list[frozenset[str]]:
        """The concepts each image shows (its highlighted region, where it has one)."""
        todo = [image_id for image_id in dict.fromkeys(image_ids) if image_id not in self.concepts]
        for start in range(0, len(todo), self.batch):
            described = self.call("describe_images", image_ids=todo[start : start + self.batch])
            for description in described:
                self.concepts[description.id] = frozenset(description.concepts)
        return [self.concepts[image_id] for image_id in image_ids]

    def observe(self, image_ids: Sequence[str]) -> list[Observation]:
        """Measure and describe whole images."""
        activations = self.measure(image_ids)
        concepts = self.describe(image_ids)
        return [
            Observation(image_id, activation, found)
            for image_id, activation, found in zip(image_ids, activations, concepts, strict=True)
        ]

    def region_concepts(self, image_ids: Sequence[str]) -> list[frozenset[str]]:
        """The concepts of each measured image's highlighted region."""
        return self.describe([self.highlighted[image_id] for image_id in image_ids])

    def log(self, title: str, image_ids: Sequence[str], conclusion: str, hypothesis: str) -> None:
        self.call(
            "log_experiment",
            title=title,
            image_ids=list(image_ids),
            conclusion=conclusion,
            hypothesis=hypothesis,
        )
