"""What the HTML report shows, as data: its images, the flagged inputs and one section per unit.

:func:`sections_from_toolbox` builds a unit's section from the toolbox its run used (the
exemplars it fetched and every image its experiments name); :mod:`lightning_maia.reporting`'s
``render_report`` draws the sections as HTML.

>>> from lightning_maia.agents._records import UnitReport
>>> section = UnitSection(UnitReport("layer4:17", "describe_unit", "scientist", score=0.8))
>>> section.shown_score, UnitSection(section.report, score=0.5).shown_score
(0.8, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from lightning_maia.agents._records import UnitReport
from lightning_maia.tools.toolbox import Toolbox


@dataclass
class ReportImage:
    """One picture of the report, with what it showed."""

    #: Float (3, H, W) in [0, 1] (a tensor or array), or encoded PNG bytes.
    image: Tensor | np.ndarray | bytes
    #: Where it came from, e.g. "dataset item 142" or "text2image 'a red star' (seed 3)".
    caption: str = ""
    #: The unit's activation on it, where measured.
    activation: float | None = None
    #: Bool (H, W): the region the unit highlighted; pixels outside it are dimmed.
    mask: Tensor | np.ndarray | None = None
    #: Words for the (highlighted region of the) image, where described.
    description: str = ""


@dataclass
class FlaggedInput:
    """One input the MisclassificationFlagger flagged, as its report lists it."""

    #: The input's position in the scored dataset.
    index: int
    label: str
    prediction: str
    #: The MAIA risk: the estimated probability that the prediction is wrong.
    risk: float
    #: Why it was flagged, in words.
    reason: str
    #: Float (3, H, W) in [0, 1], or None to list the input without a thumbnail.
    image: Tensor | np.ndarray | bytes | None = None


@dataclass
class UnitSection:
    """Everything the report shows for one unit and task."""

    report: UnitReport
    #: The unit's dataset exemplars, highest activation first.
    exemplars: list[ReportImage] = field(default_factory=list)
    #: The images of ``report.evidence`` by image id.
    experiment_images: dict[str, ReportImage] = field(default_factory=dict)
    #: The unit's label per epoch, oldest first: dicts such as ``{"epoch": 2, "label": "stars",
    #: "changed": True}``; a true ``changed`` marks where the description drifted.
    history: list[dict[str, Any]] = field(default_factory=list)
    #: A score computed outside the run (e.g. a description's predictive AUROC); when None,
    #: the report's own score is shown.
    score: float | None = None

    @property
    def shown_score(self) -> float | None:
        return self.score if self.score is not None else self.report.score


def sections_from_toolbox(
    report: UnitReport,
    toolbox: Toolbox,
    *,
    history: Sequence[Mapping[str, Any]] = (),
    score: float | None = None,
) -> UnitSection:
    """The section of ``report`` with the images of the ``toolbox`` it ran on: the exemplars
    the run fetched (with their masks) and every image its experiments name.

    Ids a toolbox does not hold are skipped (they show as text only); exemplars are not
    computed here when the run never asked for them.
    """
    descriptions = {
        image_id: text
        for experiment in report.evidence
        for image_id, text in experiment.descriptions.items()
    }
    # One ReportImage per id, so that an image shown twice is encoded once.
    images = {
        stored.id: _report_image(stored.id, toolbox, descriptions) for stored in toolbox.images
    }
    wanted = dict.fromkeys(
        image_id for experiment in report.evidence for image_id in experiment.image_ids
    )
    return UnitSection(
        report=report,
        exemplars=[images[s.id] for s in toolbox.images if s.source == "exemplar"],
        experiment_images={image_id: images[image_id] for image_id in wanted if image_id in images},
        history=[dict(entry) for entry in history],
        score=score,
    )


def _report_image(image_id: str, toolbox: Toolbox, descriptions: Mapping[str, str]) -> ReportImage:
    stored = toolbox.images.get(image_id)
    caption = stored.provenance()
    result = toolbox.exemplar_result if stored.source == "exemplar" else None
    name_of = getattr(result.dataset, "item_name", None) if result is not None else None
    if callable(name_of) and stored.dataset_index is not None:
        # An exemplar is named by its file (an image folder), its dataset index kept after it.
        caption = f"{name_of(stored.dataset_index)} ({caption})"
    return ReportImage(
        image=stored.image,
        caption=caption,
        activation=stored.activation,
        mask=stored.mask,
        description=descriptions.get(image_id, ""),
    )
