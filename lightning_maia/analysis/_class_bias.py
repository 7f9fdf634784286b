"""The class-bias audit (MAIA §5.2): which subgroups of each class does the model score low?

:func:`audit_class_bias` runs the agent's ``class_bias`` task on class-logit units (the class
probability, ``logits_as="probability"``) and collects the low-scoring subgroups it reports as
:class:`SubgroupFinding` rows. A finding names its class (``shape=circle``) and the subgroup's
concept (``colour=blue``); an input belongs to it when its concepts hold both
(:meth:`SubgroupFinding.matches`). Concepts of inputs come from procedural metadata
(:func:`dataset_concepts`, the scene behind each item) or from a describer
(:func:`described_concepts`), so membership can be computed for validation inputs either way.

For worlds with planted biases, :func:`planted_recovery` says which planted subgroups the audit
found with the right attribute, and :func:`check_subgroups` which reported subgroups were not
planted and, on labelled data, score no lower than their class's average (false positives).

**Why one file.** The audit, the concepts of inputs its findings are matched against, and the
checks against planted subgroups are one step (MAIA's section 5.2) that the flagger and the
benchmark use together.

>>> finding = SubgroupFinding("output:0", "circle", "shape=circle", "colour", "blue",
...                           "colour=blue", "blue circles", mean_score=0.2, class_mean=0.8)
>>> finding.matches(frozenset({"shape=circle", "colour=blue", "size=large"})), finding.severity
(True, 0.75)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from lightning_maia.agents import _scientist_audits as scientist_audits
from lightning_maia.agents._records import UnitReport
from lightning_maia.agents._scientist_design import ProceduralDesigner
from lightning_maia.agents._scientist_session import PolicyError, Session
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_designers import table_of
from lightning_maia.agents.tasks import Agent, TaskSpec
from lightning_maia.errors import BackendError, MaiaError, ToolError, bad_option
from lightning_maia.evaluation_constants import FLAG_IMAGES_PER_VALUE
from lightning_maia.subject import Subject
from lightning_maia.tools.backends._base import (
    ImageDescriber,
    ImageEditor,
    ImageGenerator,
    ImageItem,
)
from lightning_maia.tools.backends._procedural import ProceduralDescriber
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world._scene import Scene
from lightning_maia.world._subgroups import PlantedSubgroup
from lightning_maia.world.provenance import ProvenanceStore, resolve_store

log = logging.getLogger("lightning_maia")

ON_ERROR = ("warn", "raise")


@dataclass(frozen=True)
class SubgroupFinding:
    """One low-scoring subgroup of a class, as the class-bias audit reported it."""

    #: The class-logit unit audited, e.g. ``output:0``.
    unit: str
    #: The class, e.g. ``circle``.
    class_name: str
    #: The concept the class stands for, e.g. ``shape=circle`` ("" when unknown).
    class_concept: str
    #: The attribute varied, e.g. ``colour`` ("" when the agent did not say).
    attribute: str
    #: The attribute's value in the subgroup, e.g. ``blue``.
    value: str
    #: The subgroup's concept, e.g. ``colour=blue`` ("" when the agent did not say).
    concept: str
    #: The subgroup in words, e.g. ``blue circles``.
    description: str
    #: The class score (probability) measured on the subgroup's images.
    mean_score: float = math.nan
    #: The class score measured on images of the whole class.
    class_mean: float = math.nan
    #: The group the finding belongs to, e.g. ``circle whose colour is not red``.
    group: str = ""
    #: How many images the subgroup's score was measured on.
    images: int = 0

    @property
    def severity(self) -> float:
        """How far below the class the subgroup scores: ``1 - mean_score / class_mean`` in
        [0, 1] (0 when either is unknown)."""
        if not (math.isfinite(self.mean_score) and math.isfinite(self.class_mean)):
            return 0.0
        if self.class_mean <= 0:
            return 0.0
        return min(max(1.0 - self.mean_score / self.class_mean, 0.0), 1.0)

    def matches(self, concepts: frozenset[str] | set[str]) -> bool:
        """Whether an input with these concepts belongs to the subgroup: it shows the class
        concept and the subgroup concept."""
        if not self.concept or not self.class_concept:
            return False
        return self.class_concept in concepts and self.concept in concepts

    def to_row(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity}


def findings_from_report(
    report: UnitReport, class_name: str, class_concept: str
) -> list[SubgroupFinding]:
    """The subgroups of one ``class_bias`` report (none for a failed report).

    Entries the scientist writes carry attribute, value, concept, description, group, mean
    score, class mean and image count; a VLM's final answer may carry only a description and a
    score, which gives a finding that no input can be matched to.
    """
    if not report.ok:
        return []
    found = []
    details_mean = report.details.get("class_mean", math.nan)
    for entry in report.details.get("subgroups", []):
        attribute = str(entry.get("attribute", ""))
        value = str(entry.get("value", ""))
        concept = str(
            entry.get("concept", "") or (f"{attribute}={value}" if attribute and value else "")
        )
        found.append(
            SubgroupFinding(
                unit=report.unit,
                class_name=class_name,
                class_concept=class_concept,
                attribute=attribute,
                value=value,
                concept=concept,
                description=str(entry.get("description", "")) or f"{class_name} with {concept}",
                mean_score=_float(entry.get("mean_score")),
                class_mean=_float(entry.get("class_mean", details_mean)),
                group=str(entry.get("group", "")),
                images=int(entry.get("images", 0) or 0),
            )
        )
    return found


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class ClassBiasAudit:
    """What the class-bias audit found: one report per audited class and every finding."""

    reports: list[UnitReport] = field(default_factory=list)
    findings: list[SubgroupFinding] = field(default_factory=list)
    #: The toolbox each report ran on (its images feed the HTML report), by unit.
    toolboxes: dict[str, Toolbox] = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        """The distinct subgroups found, in words (one per group of low values)."""
        return list(reported_subgroups(self.findings))

    def to_dataframe(self) -> pd.DataFrame:
        """One row per finding."""
        columns = [*SubgroupFinding("", "", "", "", "", "", "").to_row()]
        return pd.DataFrame([f.to_row() for f in self.findings], columns=columns)


def audit_class_bias(
    model: nn.Module,
    class_names: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    agent: Agent | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    candidate_attributes: Sequence[str] = (),
    class_concepts: Mapping[str, str] | None = None,
    generator: ImageGenerator | None = None,
    editor: ImageEditor | None = None,
    describer: ImageDescriber | None = None,
    image_size: int = 64,
    images_per_value: int = FLAG_IMAGES_PER_VALUE,
    seed: int = 0,
    on_error: str = "warn",
    store: ProvenanceStore | None = None,
) -> ClassBiasAudit:
    """Run the ``class_bias`` task on the probability of each class in ``classes`` (default:
    all) and collect the low-scoring subgroups.

    Args:
        model: maps preprocessed images to class logits.
        class_names: the model's classes, in logit order.
        classes: the classes to audit (default: every class).
        agent: the agent (default: the offline :class:`ScientistAgent`).
        preprocess: maps display images in [0, 1] to model inputs.
        candidate_attributes: attributes to vary (default: every attribute the agent's designer
            knows but the class's own).
        class_concepts: class name -> the concept it stands for (default: the agent's designer,
            e.g. ``circle`` -> ``shape=circle``), for matching inputs to findings.
        generator, editor, describer: image backends (procedural by default).
        image_size: side of generated images.
        images_per_value: images the offline scientist measures per attribute value (its own
            default, 4, is too few to tell probabilities that vary from image to image apart);
            a VLM agent decides for itself.
        seed: seeds the agent's choices.
        on_error: ``warn`` (a failed report for a class the agent could not audit) or
            ``raise``.
        store: the provenance store of the toolboxes and their default backends (default: the
            default store); backends given must hold the same one.
    """
    if on_error not in ON_ERROR:
        raise bad_option("on_error", " or ".join(ON_ERROR), on_error)
    if isinstance(images_per_value, bool) or not isinstance(images_per_value, int):
        raise bad_option("images_per_value", "a positive integer", images_per_value)
    if images_per_value < 1:
        raise bad_option("images_per_value", "a positive integer", images_per_value)
    names = list(class_names)
    chosen = list(classes) if classes is not None else names
    unknown = [c for c in chosen if c not in names]
    if unknown or not chosen:
        raise bad_option("classes", f"some of {', '.join(names)}", chosen)
    agent = agent or ScientistAgent(seed=seed)
    designer = getattr(agent, "designer", None) or ProceduralDesigner()
    units = [f"output:{names.index(c)}" for c in chosen]
    subject = Subject(
        model, units, preprocess=preprocess, class_names=names, logits_as="probability"
    )
    audit = ClassBiasAudit()
    for class_name, unit in zip(chosen, units, strict=True):
        toolbox = Toolbox(
            subject,
            unit,
            generator=generator,
            editor=editor,
            describer=describer,
            image_size=image_size,
            seed=seed,
            store=store,
        )
        task = TaskSpec(
            "class_bias",
            class_names=tuple(names),
            target_class=class_name,
            candidate_attributes=tuple(candidate_attributes),
        )
        try:
            if isinstance(agent, ScientistAgent):
                report = _scientist_class_bias(agent, toolbox, task, images_per_value)
            else:
                report = agent.run(toolbox, task)
        except (MaiaError, OSError, TimeoutError) as error:
            if on_error == "raise":
                raise
            log.warning("class-bias audit of %s failed: %s", class_name, error)
            report = UnitReport.failed(unit, task.name, agent.name, str(error))
        if not report.ok and on_error == "raise":
            raise MaiaError(f"class-bias audit of {class_name} failed: {report.failure_reason}")
        concept = (class_concepts or {}).get(class_name) or designer.class_concept(class_name)
        audit.reports.append(report)
        audit.toolboxes[unit] = toolbox
        audit.findings += findings_from_report(report, class_name, concept or "")
    return audit


def _scientist_class_bias(
    agent: ScientistAgent, toolbox: Toolbox, task: TaskSpec, images_per_value: int
) -> UnitReport:
    """The scientist's ``class_bias`` with ``images_per_value`` images per value, recorded as
    :meth:`ScientistAgent.run` records a run (an adapter until the agent takes the option)."""
    started = time.perf_counter()
    session = Session(toolbox)
    logged_before = len(toolbox.experiments)
    rng = np.random.default_rng(agent.seed)
    try:
        report = scientist_audits.class_bias(
            session, agent.designer, task, rng, images_per_value=images_per_value
        )
    except (PolicyError, ToolError, BackendError) as error:
        report = UnitReport.failed(toolbox.unit.spec, task.name, agent.name, str(error))
    report.unit, report.task, report.agent = toolbox.unit.spec, task.name, agent.name
    report.steps = session.steps
    report.evidence = list(toolbox.experiments[logged_before:])
    report.images = session.images
    report.usage = toolbox.usage
    report.seconds = time.perf_counter() - started
    return report


# -- concepts of inputs ---------------------------------------------------------------------


def scene_concepts(scene: Scene) -> frozenset[str]:
    """Every concept of a procedural scene, as ``attribute=value`` strings."""
    return frozenset(str(concept) for concept in scene.concepts())


def has_scenes(dataset: Dataset[Any]) -> bool:
    """Whether the dataset (or the dataset under a ``Subset``) knows the scene of each item."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return callable(getattr(dataset, "scene", None))


def has_metadata_concepts(dataset: Dataset[Any]) -> bool:
    """Whether the concepts of each item can be read without looking at it: procedural scenes,
    or attribute columns (a ``metadata`` DataFrame or ``attributes(index)``)."""
    return has_scenes(dataset) or table_of(dataset) is not None


def dataset_concepts(dataset: Dataset[Any], indices: Sequence[int]) -> list[frozenset[str]]:
    """Concepts of dataset items from metadata, without rendering or describing: the scene
    behind each procedural item, else the item's attribute columns (``attribute=value``);
    ``Subset`` wrappers are followed."""
    if not has_scenes(dataset):
        table = table_of(dataset)
        if table is None:
            raise bad_option(
                "dataset",
                "a procedural dataset with a scene(index) method, or a dataset with a `metadata` "
                "DataFrame or `attributes(index)`",
                type(dataset).__name__,
            )
        return [frozenset(f"{a}={v}" for a, v in table.row(int(i)).items()) for i in indices]
    base, mapped = dataset, list(indices)
    while isinstance(base, Subset):
        mapped = [int(base.indices[i]) for i in mapped]
        base = base.dataset
    scene = base.scene  # type: ignore[attr-defined]
    return [scene_concepts(scene(i)) for i in mapped]


def described_concepts(
    images: Tensor,
    describer: ImageDescriber | None = None,
    store: ProvenanceStore | None = None,
) -> list[frozenset[str]]:
    """Concepts of display images (N, 3, H, W) in [0, 1], from a describer's words for each whole
    image (procedural by default: it reads the scene behind each image registered in ``store``,
    default: the default provenance store)."""
    describer = describer or ProceduralDescriber()
    found = resolve_store(store)
    items = [ImageItem(image, found.lookup(image)) for image in images]
    descriptions = describer.describe(items, [None] * len(items))
    return [frozenset(d.concepts) for d in descriptions]


# -- planted subgroups ----------------------------------------------------------------------


def finds_planted(finding: SubgroupFinding, planted: PlantedSubgroup) -> bool:
    """Whether a finding names the planted subgroup: its class, its attribute, and a value the
    class never took in train.

    >>> planted = PlantedSubgroup("circle", "colour", ("red",))
    >>> finding = SubgroupFinding("output:0", "circle", "shape=circle", "colour", "blue",
    ...                           "colour=blue", "blue circles")
    >>> finds_planted(finding, planted)
    True
    """
    return (
        finding.class_name == planted.class_name
        and finding.attribute == planted.attribute
        and finding.value not in planted.train_values
    )


def planted_recovery(
    findings: Sequence[SubgroupFinding], planted: Sequence[PlantedSubgroup]
) -> dict[str, bool]:
    """Planted subgroup (its description) -> whether some finding names it."""
    return {p.description: any(finds_planted(f, p) for f in findings) for p in planted}


def reported_subgroups(findings: Sequence[SubgroupFinding]) -> dict[str, list[SubgroupFinding]]:
    """The subgroups as the audit reports them: findings of one group (e.g. every low colour of
    ``circle whose colour is not red``) form one subgroup; a finding without a group is its own.
    """
    groups: dict[str, list[SubgroupFinding]] = {}
    for finding in findings:
        groups.setdefault(finding.group or finding.description, []).append(finding)
    return groups


def planted_score_drop(
    planted: PlantedSubgroup,
    scenes: Sequence[Scene],
    labels: Sequence[int],
    class_probabilities: Sequence[float],
    class_names: Sequence[str],
) -> float:
    """How much lower the model scores the planted subgroup than the rest of its class, on
    labelled data: ``1 - mean(inside) / mean(rest of the class)`` of the true-class probability
    (NaN when either side has no items). Near 0: the model did not take the planted shortcut,
    so there is no weak subgroup for an audit to find.
    """
    label = list(class_names).index(planted.class_name)
    inside: list[float] = []
    rest: list[float] = []
    for scene, y, probability in zip(scenes, labels, class_probabilities, strict=True):
        if int(y) == label:
            (inside if planted.contains(scene) else rest).append(float(probability))
    if not inside or not rest or _mean(rest) <= 0:
        return math.nan
    return 1.0 - _mean(inside) / _mean(rest)


@dataclass(frozen=True)
class SubgroupCheck:
    """One reported subgroup measured on labelled data."""

    #: The subgroup in words (its group, e.g. ``circle whose colour is not red``).
    subgroup: str
    class_name: str
    #: Its findings (one per low value).
    findings: tuple[SubgroupFinding, ...]
    #: Whether one of its findings names a planted subgroup.
    planted: bool
    #: Mean probability of the true class over the class's items in the subgroup (NaN if none).
    subgroup_mean: float
    #: ... and over all of the class's items.
    class_mean: float
    #: How many of the class's items are in the subgroup.
    items: int

    @property
    def false_positive(self) -> bool:
        """Not planted, and no lower than the class's average on the data (a subgroup with no
        items there is not shown to be low either)."""
        if self.planted:
            return False
        return not math.isfinite(self.subgroup_mean) or self.subgroup_mean >= self.class_mean


def check_subgroups(
    findings: Sequence[SubgroupFinding],
    planted: Sequence[PlantedSubgroup],
    concepts: Sequence[frozenset[str]],
    labels: Sequence[int],
    class_probabilities: Sequence[float],
    class_names: Sequence[str],
) -> list[SubgroupCheck]:
    """Measure each reported subgroup on labelled data: is it planted, and how do the class's
    items in it (those matching any of its findings) score against the class's average?
    ``class_probabilities[i]`` is the model's probability of item ``i``'s true class."""
    if not len(concepts) == len(labels) == len(class_probabilities):
        raise bad_option(
            "labels",
            "one label, probability and concept set per item",
            (len(concepts), len(labels)),
        )
    names = list(class_names)
    checks = []
    for subgroup, members in reported_subgroups(findings).items():
        class_name = members[0].class_name
        if class_name not in names:
            raise bad_option("findings", f"findings of the classes {', '.join(names)}", class_name)
        in_class = [i for i, y in enumerate(labels) if int(y) == names.index(class_name)]
        inside = [i for i in in_class if any(f.matches(concepts[i]) for f in members)]
        checks.append(
            SubgroupCheck(
                subgroup=subgroup,
                class_name=class_name,
                findings=tuple(members),
                planted=any(finds_planted(f, p) for f in members for p in planted),
                subgroup_mean=_mean([class_probabilities[i] for i in inside]),
                class_mean=_mean([class_probabilities[i] for i in in_class]),
                items=len(inside),
            )
        )
    return checks


def false_positives_per_class(
    checks: Sequence[SubgroupCheck], class_names: Sequence[str]
) -> dict[str, int]:
    """Class -> how many of its reported subgroups are false positives (see
    :class:`SubgroupCheck`)."""
    counts = dict.fromkeys(class_names, 0)
    for check in checks:
        if check.false_positive:
            counts[check.class_name] = counts.get(check.class_name, 0) + 1
    return counts


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


__all__ = [
    "ClassBiasAudit",
    "SubgroupCheck",
    "SubgroupFinding",
    "audit_class_bias",
    "check_subgroups",
    "dataset_concepts",
    "described_concepts",
    "false_positives_per_class",
    "findings_from_report",
    "finds_planted",
    "has_metadata_concepts",
    "has_scenes",
    "planted_recovery",
    "planted_score_drop",
    "reported_subgroups",
    "scene_concepts",
]
