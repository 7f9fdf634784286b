"""Option groups the three callbacks share: who experiments with what, and where results go.

Each group is a small frozen dataclass, so a callback's constructor takes the arguments that
belong together as one value, and LightningCLI configures them as nested mappings::

    callbacks:
      - class_path: lightning_maia.callbacks.SpuriousFeatureRemover
        init_args:
          backends: {agent: scientist, designer: retrieval}
          output: {output_dir: maia_runs, on_error: raise}

>>> Backends(designer="retrieval").designer, Output().on_error
('retrieval', 'warn')
>>> Output(on_error="ignore")
Traceback (most recent call last):
...
lightning_maia.errors.ConfigurationError: `on_error` can be one of ('warn', 'raise'), got 'ignore'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_maia.agents._scientist_design import ExperimentDesigner
from lightning_maia.agents.tasks import Agent
from lightning_maia.errors import bad_option
from lightning_maia.tools.backends._base import ImageDescriber, ImageEditor, ImageGenerator

ON_ERROR = ("warn", "raise")
OnError = Literal["warn", "raise"]


@dataclass(frozen=True)
class Backends:
    """The agent and the image backends its experiments use.

    With everything left at None the offline scientist runs with the designer that fits the data
    (procedural scenes, attribute columns, or a generator); a configuration that cannot design an
    experiment fails at the callback's ``setup`` and says what to configure.
    """

    #: The agent: an object with ``run(toolbox, task)`` (``ScientistAgent()``,
    #: ``VLMAgent(client)``), or ``"scientist"`` / None for the offline scientist.
    agent: Agent | Literal["scientist"] | None = None
    #: How the offline scientist designs experiments: a name of
    #: :data:`~lightning_maia.agents.scientist_designers.DESIGNERS` (``auto``, ``procedural``,
    #: ``retrieval``, ``prompts``) or a designer object; None picks one from the data.
    designer: str | ExperimentDesigner | None = None
    #: Makes images from text prompts (e.g. ``DiffusersGenerator``); None: the designer's own.
    generator: ImageGenerator | None = None
    #: Edits images by instruction (e.g. ``DiffusersEditor``); None: the designer's own.
    editor: ImageEditor | None = None
    #: Describes images in words (e.g. a CLIP vocabulary); None: the designer's own.
    describer: ImageDescriber | None = None


@dataclass(frozen=True)
class Output:
    """Where a callback writes its reports, and what it does when a run fails."""

    #: Folder for reports and tables; None: ``<trainer.log_dir>/maia``.
    output_dir: str | None = None
    #: ``"warn"`` logs a failed run and training goes on; ``"raise"`` stops training with it.
    on_error: OnError = "warn"
    #: Show progress bars on long passes (exemplars, features, agent runs).
    progress: bool = True

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise bad_option("on_error", f"one of {ON_ERROR}", self.on_error)
        if not isinstance(self.progress, bool):
            raise bad_option("progress", "True or False", self.progress)
