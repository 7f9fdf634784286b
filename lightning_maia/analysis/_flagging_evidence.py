"""The evidence :func:`~lightning_maia.analysis.flagging.flag` gathers: the model's outputs on
every input, the spurious units (its own ``spurious_check``), the class-bias audit's subgroups,
and which subgroup each input belongs to by what can be observed at test time.

Subgroup membership never reads the true class: an input's class concept is the concept of the
class the model *predicts*, and of the concepts read from the input (by a describer, or from
metadata as a perfect describer would read them) only those of other attributes than the class
attribute count (:func:`observed_concepts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents.tasks import Agent, TaskSpec
from lightning_maia.analysis import _risk as risk
from lightning_maia.analysis._class_bias import (
    SubgroupFinding,
    audit_class_bias,
    dataset_concepts,
    described_concepts,
    has_metadata_concepts,
)
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit
from lightning_maia.analysis._spurious import UnitJudgement, judged_directions
from lightning_maia.errors import MaiaError, bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars, preprocess_for
from lightning_maia.reporting._html_report import sections_from_toolbox
from lightning_maia.subject import Subject
from lightning_maia.tools.backends._base import ImageDescriber, ImageEditor, ImageGenerator
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit

WARN = "MisclassificationFlagger: "


@dataclass
class ModelOutputs:
    """What the model gave on every input: logits, the head's input, labels."""

    logits: Tensor
    features: Tensor
    labels: Tensor

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)

    @property
    def errors(self) -> Tensor:
        return (self.predictions != self.labels).long()


@torch.inference_mode()
def collect_outputs(
    model: nn.Module,
    head: nn.Module,
    dataset: Dataset[Any],
    batch_size: int,
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> ModelOutputs:
    """One pass over ``dataset`` (``(image, label)`` items, in order): logits and head inputs."""
    preprocess = preprocess_for(dataset, preprocess)  # declared model inputs go in as they are
    captured: list[Tensor] = []
    hook = head.register_forward_pre_hook(
        lambda _, args: captured.append(args[0].detach().float().flatten(1).cpu())
    )
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(())).device
    logits, labels = [], []
    try:
        for images, targets in DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=0
        ):
            images = images.to(device)
            logits.append(
                model(preprocess(images) if preprocess is not None else images).float().cpu()
            )
            labels.append(torch.as_tensor(targets).long())
    finally:
        hook.remove()
        model.train(was_training)
    if not logits:
        raise bad_option("dataset", "a non-empty dataset of (image, label) items", "an empty one")
    return ModelOutputs(torch.cat(logits), torch.cat(captured), torch.cat(labels))


def effective_head_weight(head: nn.Module) -> Tensor:
    """The (C, D) weight the head applies to its raw input: ``weight``, or for a masked head
    ``(weight @ projection) * mask`` (units it drops get no weight)."""
    weight = head.weight
    if not isinstance(weight, Tensor):
        raise bad_option("head", "a linear head with a weight tensor", type(head).__name__)
    weight = weight.detach().float()
    mask, projection = getattr(head, "mask", None), getattr(head, "projection", None)
    if isinstance(projection, Tensor):
        weight = weight @ projection.detach().float()
    if isinstance(mask, Tensor):
        weight = weight * mask.detach().float()[None]
    return weight.cpu()


def item_ids(dataset: Dataset[Any]) -> list[str]:
    """An id per item that names the dataset, so that two datasets never share one: the
    procedural origin (``SpuriousShapes[seed=0,split=holdout][3]``) where there is one."""
    origin = getattr(dataset, "origin", None)
    count = len(dataset)  # type: ignore[arg-type]
    if callable(origin):
        return [str(origin(i)) for i in range(count)]
    return [f"{type(dataset).__name__}@{id(dataset):x}[{i}]" for i in range(count)]


def unit_words(label: str) -> str:
    """``spurious: follows water background`` -> ``water background``."""
    return label.removeprefix("spurious: ").removeprefix("follows ")


@dataclass
class Experiments:
    """The agent and image backends the audits run with, what failures do, and what ran."""

    agent: Agent
    generator: ImageGenerator | None = None
    editor: ImageEditor | None = None
    describer: ImageDescriber | None = None
    preprocess: Callable[[Tensor], Tensor] | None = None
    candidate_attributes: tuple[str, ...] = ()
    on_error: str = "warn"
    seed: int = 0
    #: The report sections of every agent run, in order (the HTML report shows them).
    sections: list[Any] = field(default_factory=list)

    def run(self, toolbox: Toolbox, task: TaskSpec) -> UnitReport | None:
        """The agent's report on one unit; None when it failed and ``on_error`` is ``warn``."""
        try:
            return self.agent.run(toolbox, task)
        except Exception as error:  # a failing agent fails its unit, never the fit
            if self.on_error == "raise":
                raise
            rank_zero_warn(f"{WARN}the agent failed on {toolbox.unit.spec}: {error}")
            return None


def checked_spurious_units(
    model: nn.Module,
    dataset: Dataset[Any],
    outputs: ModelOutputs,
    weight: Tensor,
    names: Sequence[str],
    evidence: SpuriousEvidence,
    experiments: Experiments,
    exemplars: ExemplarResult | None = None,
) -> tuple[dict[int, str], Tensor | None]:
    """The own ``spurious_check``: the agent judges the ``max_checked_units`` units that add
    most to the predicted logits. Returns unit index -> description of those judged spurious,
    and the directions their attribute's edits move the layer along
    (:func:`~lightning_maia.analysis._spurious.judged_directions`; None without a spurious
    verdict or an edit that changed the attribute alone)."""
    layer = evidence.feature_layer
    assert layer is not None
    contributions = risk.unit_contributions(outputs.features, weight, outputs.predictions)
    influence = contributions.clamp(min=0.0).mean(dim=0)
    ranked = influence.argsort(descending=True)[: evidence.max_checked_units].tolist()
    specs = [f"{layer}:{j}" for j in ranked]
    if exemplars is None:
        exemplars = compute_exemplars(
            model, dataset, specs, k=15, progress=False, preprocess=experiments.preprocess
        )
    subject = Subject(
        model, specs, preprocess=experiments.preprocess, class_names=list(names) or None
    )
    task = TaskSpec(
        "spurious_check",
        class_names=tuple(names),
        candidate_attributes=experiments.candidate_attributes,
    )
    judgements: list[UnitJudgement] = []
    for unit in ranked:
        toolbox = Toolbox(
            subject, f"{layer}:{unit}", exemplars=exemplars, generator=experiments.generator,
            editor=experiments.editor, describer=experiments.describer, seed=experiments.seed,
        )  # fmt: skip
        report = experiments.run(toolbox, task)
        if report is None:
            continue
        experiments.sections.append(sections_from_toolbox(report, toolbox))
        judgements.append(UnitJudgement(Unit(layer, unit), 0.0, report, toolbox))
    found = {
        j.unit.index: unit_words(j.report.label) for j in judgements if j.verdict == "spurious"
    }
    directions = judged_directions(
        model, judgements, experiments.candidate_attributes, preprocess=experiments.preprocess
    )
    return found, directions


def audited_subgroups(
    model: nn.Module, names: Sequence[str], audit: SubgroupAudit, experiments: Experiments
) -> list[SubgroupFinding]:
    """The class-bias audit's findings (none when it is off, or failed under ``warn``)."""
    if not audit.class_bias or not names:
        return []
    try:
        found = audit_class_bias(
            model,
            names,
            classes=audit.audit_classes,
            agent=experiments.agent,
            preprocess=experiments.preprocess,
            candidate_attributes=experiments.candidate_attributes,
            generator=experiments.generator,
            editor=experiments.editor,
            describer=experiments.describer,
            images_per_value=audit.images_per_value,
            seed=experiments.seed,
            on_error=experiments.on_error,
        )
    except (MaiaError, OSError, TimeoutError) as error:
        if experiments.on_error == "raise":
            raise
        rank_zero_warn(f"{WARN}the class-bias audit failed: {error}")
        return []
    for report in found.reports:
        experiments.sections.append(sections_from_toolbox(report, found.toolboxes[report.unit]))
    return found.findings


def input_concepts(
    dataset: Dataset[Any],
    count: int,
    audit: SubgroupAudit,
    experiments: Experiments,
    batch_size: int,
) -> list[frozenset[str]]:
    """The concepts read from each input (``audit.concepts``), or none each when that is off or
    the describer cannot read these images (under ``on_error="warn"``)."""
    nothing: list[frozenset[str]] = [frozenset()] * count
    if audit.concepts == "none":
        return nothing
    if audit.concepts == "metadata" or (
        audit.concepts == "auto" and has_metadata_concepts(dataset)
    ):
        return dataset_concepts(dataset, range(count))
    try:
        found: list[frozenset[str]] = []
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            images = torch.stack([dataset[i][0] for i in range(start, stop)])
            found += described_concepts(images.clamp(0.0, 1.0), experiments.describer)
        return found
    except (MaiaError, OSError, TimeoutError, ValueError) as error:
        if experiments.on_error == "raise":
            raise
        rank_zero_warn(
            f"{WARN}cannot read the concepts of the inputs ({error}); subgroup membership is left "
            "out (pass concepts='metadata' for procedural data or a describer that can describe "
            "these images)"
        )
        return nothing


def observed_concepts(
    findings: Sequence[SubgroupFinding],
    predicted: Sequence[str],
    concepts: Sequence[frozenset[str]],
) -> list[frozenset[str]]:
    """Per input, what the audit can observe at test time: the class concept of the *predicted*
    class (``predicted[i]`` a class name), and the read concepts of every attribute but the
    class attribute (so a describer that reads the shape cannot smuggle in the true class).

    >>> red = SubgroupFinding("output:0", "circle", "shape=circle", "colour", "red",
    ...                       "colour=red", "red circles", mean_score=0.1, class_mean=0.8)
    >>> [sorted(c) for c in observed_concepts([red], ["square"],
    ...                                       [frozenset({"shape=circle", "colour=red"})])]
    [['colour=red']]
    """
    if len(predicted) != len(concepts):
        raise bad_option("predicted", f"one class per input ({len(concepts)})", len(predicted))
    class_concepts = {f.class_name: f.class_concept for f in findings if f.class_concept}
    class_attributes = {c.split("=", 1)[0] for c in class_concepts.values()}
    observed = []
    for name, row in zip(predicted, concepts, strict=True):
        kept = {c for c in row if c.split("=", 1)[0] not in class_attributes}
        if name in class_concepts:
            kept.add(class_concepts[name])
        observed.append(frozenset(kept))
    return observed


def risk_features(
    outputs: ModelOutputs,
    weight: Tensor,
    units: dict[int, str],
    findings: Sequence[SubgroupFinding],
    concepts: Sequence[frozenset[str]],
    names: Sequence[str],
    reference: Tensor | None = None,
    directions: Tensor | None = None,
) -> tuple[Tensor, list[SubgroupFinding | None], list[int | None]]:
    """(N, 5) ``[msp risk, reliance, subgroup, counterfactual risk, edit counterfactual risk]``
    (:data:`risk.MAIA_FEATURES`), the matched subgroups and the top units.

    The counterfactual risk mean-ablates the spurious units to ``reference`` (their mean on
    unlabelled reference data, see :func:`ablation_reference`; None: to zero); the edit
    counterfactual risk also the input's component along the spurious edits' ``directions``
    (0 for every input when none are known).
    """
    predictions = outputs.predictions
    reliance = risk.spurious_reliance(outputs.features, weight, list(units), predictions)
    observed = observed_concepts(findings, named(predictions, names), concepts)
    subgroup, matched = risk.subgroup_membership(findings, observed)
    msp = risk.baseline_risks(outputs.logits)["msp"]
    counterfactual = risk.counterfactual_risk(
        outputs.logits, outputs.features, weight, list(units), reference
    )
    edited = (
        risk.counterfactual_risk(
            outputs.logits, outputs.features, weight, list(units), reference, directions
        )
        if directions is not None and directions.shape[1] > 0
        else torch.zeros_like(counterfactual)
    )
    top = risk.top_spurious_unit(outputs.features, weight, list(units), predictions)
    features = torch.stack([msp, reliance, subgroup, counterfactual, edited], dim=1)
    return features, matched, top


def ablation_reference(outputs: ModelOutputs) -> Tensor:
    """(D,) what an ablated unit is set to: its mean over ``outputs`` (no labels read).

    Mean ablation, not zero: on the shapes benchmark's validation (holdout) split the
    counterfactual risk separates errors with AUROC 0.98 (seed 0) and 0.98 (seed 1) when the
    spurious units are set to their mean, 0.90 and 0.96 when they are set to zero.
    """
    return outputs.features.mean(dim=0)


def named(indices: Tensor, names: Sequence[str]) -> list[str]:
    """Class names of class indices (the index as text past the known names)."""
    return [names[i] if i < len(names) else str(i) for i in indices.tolist()]


__all__ = [
    "Experiments",
    "ModelOutputs",
    "ablation_reference",
    "audited_subgroups",
    "checked_spurious_units",
    "collect_outputs",
    "effective_head_weight",
    "input_concepts",
    "item_ids",
    "named",
    "observed_concepts",
    "risk_features",
    "unit_words",
]
