"""Resolve the agent and the image backends its experiments use, and check them before any pass.

A callback given ``designer=`` (a name of
:data:`~lightning_maia.agents.scientist_designers.DESIGNERS` or a designer object) builds the
offline scientist with it and the backends that read it; with no designer, the procedural one
serves procedural data as before, and data the agent cannot design on (no scenes, no attribute
columns, no generator) fails at setup with what to configure, not with every unit failed at fit end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from lightning_maia._options import Backends
from lightning_maia.agents._scientist_design import ExperimentDesigner
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_designers import (
    ExperimentSetup,
    check_experiment_setup,
    experiment_setup,
)
from lightning_maia.agents.tasks import Agent
from lightning_maia.errors import bad_option
from lightning_maia.tools.backends._base import ImageDescriber, ImageEditor, ImageGenerator

#: What ``agent=`` accepts besides an agent object: the offline scientist by name.
AGENT_NAMES = ("scientist",)


def resolve_agent(agent: Any, seed: int) -> Any:
    """The agent to run: an object with ``run(toolbox, task)``, ``"scientist"`` or
    None (both: the offline :class:`ScientistAgent`). Anything else fails here, at ``__init__``."""
    if agent is None or agent == "scientist":
        return ScientistAgent(seed=seed)
    if isinstance(agent, str) or not callable(getattr(agent, "run", None)):
        raise bad_option(
            "agent",
            "an agent object (ScientistAgent(), VLMAgent(client)), 'scientist' or None",
            agent,
        )
    return agent


@dataclass
class ResolvedExperiments:
    """The agent and backends a callback's runs use."""

    agent: Agent
    generator: ImageGenerator | None
    editor: ImageEditor | None
    describer: ImageDescriber | None
    #: False when nothing could be decided yet (no data known): the backends are as given, and
    #: a caller that caches the resolution tries again once the data is known.
    settled: bool = True

    def install(self, callback: Any) -> None:
        """Give ``callback`` this agent and these backends (its ``agent``, ``generator``,
        ``editor`` and ``describer`` attributes)."""
        callback.agent = self.agent
        callback.generator, callback.editor = self.generator, self.editor
        callback.describer = self.describer


def given_agent(agent: Any, resolved: Agent) -> Agent | None:
    """The agent the user gave, so a designer can equip it; None for the default scientist
    (``agent`` None or ``"scientist"``). ``resolved`` is what ``agent`` resolved to."""
    return None if agent is None or isinstance(agent, str) else resolved


def resolve_experiments(
    owner: str,
    *,
    agent: Agent | None,
    designer: str | ExperimentDesigner | None,
    dataset: Dataset[Any] | None,
    class_names: Any,
    candidate_attributes: Any,
    generator: ImageGenerator | None,
    editor: ImageEditor | None,
    describer: ImageDescriber | None,
    seed: int,
) -> ResolvedExperiments | None:
    """The agent and backends for ``dataset``; None when nothing can be decided yet (no data
    known and no designer given). Raises ConfigurationError naming what to configure."""
    if agent is not None and not isinstance(agent, ScientistAgent):
        return ResolvedExperiments(agent, generator, editor, describer)  # a VLM designs itself
    if designer is None and agent is not None:
        designer = agent.designer
    if designer is None and (dataset is None or generator is not None):
        return None  # the procedural default, as always
    if dataset is None and designer in ("auto", "retrieval"):
        return None  # the data's columns are read when the data is known
    setup: ExperimentSetup = experiment_setup(
        designer if designer is not None else "auto",
        dataset=dataset,
        class_names=list(class_names or []),
        generator=generator,
        editor=editor,
        describer=describer,
    )
    check_experiment_setup(
        setup,
        class_names=list(class_names or []),
        candidate_attributes=tuple(candidate_attributes or ()),
        owner=owner,
    )
    chosen = agent or ScientistAgent(designer=setup.designer, seed=seed)
    if isinstance(chosen, ScientistAgent) and chosen.designer is not setup.designer:
        chosen.designer = setup.designer
    return ResolvedExperiments(chosen, setup.generator, setup.editor, setup.describer)


def resolve_backends(
    backends: Backends | None,
    owner: str,
    *,
    dataset: Dataset[Any] | None,
    class_names: Any,
    candidate_attributes: Any = (),
    seed: int = 0,
) -> ResolvedExperiments:
    """What the option group ``backends`` resolves to on ``dataset``: the agent by name or
    object, with its designer's backends resolved and checked (:func:`resolve_experiments`);
    the backends as given, the agent resolved, when there is nothing to decide (the procedural
    default, or no data known yet: then ``settled`` is False). Raises ConfigurationError naming
    what to configure."""
    given = backends if backends is not None else Backends()
    agent = resolve_agent(given.agent, seed)
    resolved = resolve_experiments(
        owner, agent=given_agent(given.agent, agent), designer=given.designer, dataset=dataset,
        class_names=class_names, candidate_attributes=candidate_attributes,
        generator=given.generator, editor=given.editor, describer=given.describer, seed=seed,
    )  # fmt: skip
    if resolved is None:
        # Without data, a later resolution on the data may decide otherwise.
        return ResolvedExperiments(
            agent, given.generator, given.editor, given.describer, settled=dataset is not None
        )
    return resolved
