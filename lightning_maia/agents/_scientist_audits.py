"""The scientist's audits: ``spurious_check`` and ``class_bias``, as controlled experiments.

- ``spurious_check``: images of every (class, attribute value) pair, the rest varied; does the
  activation follow the class with the attribute held fixed, or the attribute with the class
  held fixed? Edits that change only the attribute, or only the class, of the most active
  images confirm it.
- ``class_bias``: images of the target class for every value of each attribute; values whose
  scores fall clearly below the rest of the class (split at the largest gap between value
  means) are the low-scoring subgroups. Edits that move a well-scored image into a subgroup,
  all else fixed, confirm the drop.

**Why one file.** The two audits share their image design (every class x attribute-value
cell, then edits of the most active images) and their verdict helpers; split, each half would
import the other's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents._scientist_design import ExperimentDesigner
from lightning_maia.agents._scientist_session import PolicyError, Session
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.errors import ToolError
from lightning_maia.evaluation_constants import (
    AUDIT_CLASS_SEPARATION,
    AUDIT_DOMINANCE,
    AUDIT_FOLLOWS,
    AUDIT_LOW_GAP_NOISE,
    AUDIT_LOW_GAP_SHARE,
    AUDIT_MAX_LEVELS,
)

#: A main effect at least this large (share of the grid's range) is one the unit follows.
FOLLOWS = AUDIT_FOLLOWS
#: ... and it must be this many times the other factor's effect to decide the verdict.
DOMINANCE = AUDIT_DOMINANCE
#: Most classes and attribute values one grid crosses.
MAX_LEVELS = AUDIT_MAX_LEVELS


def _value(concept: str) -> str:
    return concept.rpartition("=")[2]


def _grid_levels(concepts: Sequence[str], preferred: Sequence[str]) -> list[str]:
    """Up to MAX_LEVELS of ``concepts``, those seen in ``preferred`` first."""
    seen = [c for c in dict.fromkeys(preferred) if c in concepts]
    return [*seen, *(c for c in concepts if c not in seen)][:MAX_LEVELS]


def _exemplar_concepts(session: Session) -> list[str]:
    """Concepts of the exemplars' highlighted regions, most frequent first; none without
    exemplars (an audit can run on generated images alone)."""
    with session.step("read the dataset exemplars and describe their highlighted regions") as step:
        try:
            ids = [e.id for e in session.exemplars()]
            regions = session.describe(ids)
        except ToolError as error:
            step.error = str(error)
            return []
    counts: dict[str, int] = {}
    for region in regions:
        for concept in region:
            counts[concept] = counts.get(concept, 0) + 1
    return sorted(counts, key=lambda c: (-counts[c], c))


@dataclass
class _Measured:
    ids: list[str]
    activations: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.activations)) if self.activations else float("nan")


def _measure_prompts(session: Session, prompts: Sequence[str]) -> _Measured:
    ids = session.generate(prompts)
    return _Measured(ids, session.measure(ids))


def spurious_check(
    session: Session,
    designer: ExperimentDesigner,
    task: TaskSpec,
    rng: np.random.Generator,
    images_per_cell: int = 2,
) -> UnitReport:
    """Does the unit follow the class, or a candidate attribute with the class held fixed?"""
    classes = [designer.class_concept(name) for name in task.class_names]
    class_concepts = [c for c in classes if c is not None]
    if not class_concepts:
        raise PolicyError(f"no class among {list(task.class_names)} that the designer can draw")
    class_attribute = designer.attribute_of(class_concepts[0])
    attributes = [
        a
        for a in (task.candidate_attributes or designer.attributes())
        if a != class_attribute and designer.values(a)
    ]
    if not attributes:
        raise PolicyError(
            f"no candidate attribute the designer can vary among {list(task.candidate_attributes)}"
        )
    seen = _exemplar_concepts(session)
    class_levels = _grid_levels(class_concepts, seen)
    grids: dict[str, dict[tuple[str, str], _Measured]] = {}
    for attribute in attributes:
        values = _grid_levels(designer.values(attribute), seen)
        with session.step(f"cross the classes with {attribute}: {', '.join(values)}"):
            grid = {}
            for class_concept in class_levels:
                for value in values:
                    prompts = designer.prompts([class_concept, value], [], images_per_cell, rng)
                    if prompts:
                        grid[(class_concept, value)] = _measure_prompts(session, prompts)
            grids[attribute] = grid
            all_ids = [i for cell in grid.values() for i in cell.ids]
            session.log(
                f"classes x {attribute}",
                all_ids,
                "; ".join(f"{c} + {v}: {m.mean:.3f}" for (c, v), m in grid.items()),
                f"the unit follows the class, not the {attribute}",
            )
    cells = [m.mean for grid in grids.values() for m in grid.values()]
    low, high = min(cells), max(cells)
    span = high - low
    class_effect, top_class = 0.0, class_levels[0]
    attribute_effects: dict[str, float] = {}
    drivers: dict[str, str] = {}
    for attribute, grid in grids.items():
        class_means = _marginal(grid, 0)
        value_means = _marginal(grid, 1)
        if span > 0:
            class_effect = max(class_effect, _range(class_means) / span)
            attribute_effects[attribute] = _range(value_means) / span
        else:
            attribute_effects[attribute] = 0.0
        drivers[attribute] = max(value_means, key=lambda v: value_means[v])
        top_class = max(class_means, key=lambda c: class_means[c])
    top_attribute = max(attribute_effects, key=lambda a: attribute_effects[a])
    attribute_effect = attribute_effects[top_attribute]
    edits = _confirm_with_edits(session, designer, grids[top_attribute], class_levels, rng, span)
    if attribute_effect >= FOLLOWS and attribute_effect >= DOMINANCE * class_effect:
        verdict, concept = "spurious", drivers[top_attribute]
        label = f"spurious: follows {designer.label([concept], 'single')}"
    elif class_effect >= FOLLOWS and class_effect >= DOMINANCE * attribute_effect:
        verdict, concept = "core", top_class
        label = f"core: follows {designer.label([concept], 'single')}"
    else:
        verdict, concept = "unclear", ""
        label = "unclear: neither the class nor the attributes alone drive the unit"
    description = (
        f"With the other held fixed, the class moves the unit by {class_effect:.2f} and "
        f"{top_attribute} by {attribute_effect:.2f} of its range over the grid: {verdict}."
    )
    return UnitReport(
        unit="",
        task=task.name,
        agent="",
        label=label,
        description=description,
        concepts=(concept,) if concept else (),
        logic="single" if concept else "unknown",
        verdict=verdict,
        details={
            "class_effect": class_effect,
            "attribute_effects": attribute_effects,
            "top_class": top_class,
            "top_values": drivers,
            "edit_effects": edits,
            "grid_range": span,
        },
    )


def _marginal(grid: dict[tuple[str, str], _Measured], axis: int) -> dict[str, float]:
    levels: dict[str, list[float]] = {}
    for key, measured in grid.items():
        levels.setdefault(key[axis], []).append(measured.mean)
    return {level: float(np.mean(means)) for level, means in levels.items()}


def _range(means: dict[str, float]) -> float:
    return max(means.values()) - min(means.values()) if means else 0.0


def _confirm_with_edits(
    session: Session,
    designer: ExperimentDesigner,
    grid: dict[tuple[str, str], _Measured],
    class_levels: Sequence[str],
    rng: np.random.Generator,
    span: float,
) -> dict[str, float]:
    """Change only the attribute, then only the class, of the most active grid images."""
    ranked = sorted(
        ((a, i, key) for key, m in grid.items() for i, a in zip(m.ids, m.activations, strict=True)),
        reverse=True,
    )[:8]
    if not ranked or span <= 0:
        return {}
    effects = {}
    other_classes = [
        c for c in designer.values(designer.attribute_of(class_levels[0])) if c not in class_levels
    ]
    for name, position, avoid in (("attribute", 1, []), ("class", 0, other_classes)):
        sources, instructions = [], []
        for _, image_id, key in ranked:
            context = sorted(session.describe([image_id])[0])
            instruction = designer.removal_edit(key[position], avoid, context, rng)
            if instruction is not None:
                sources.append(image_id)
                instructions.append(instruction)
        if not sources:
            continue
        with session.step(f"change only the {name} of the most active images") as step:
            done = session.edit_then(step, sources, instructions, session.measure)
            if done is None:
                continue
            edited, after = done
            before = [session.activations[i] for i in sources]
            effects[name] = float(np.mean(before) - np.mean(after)) / span
            session.log(
                f"{name} changed, all else fixed",
                [*sources, *edited],
                f"activation fell by {effects[name]:.2f} of the grid's range",
                f"the unit follows the {name}",
            )
    return effects


# -- class_bias ---------------------------------------------------------------------------


def class_bias(
    session: Session,
    designer: ExperimentDesigner,
    task: TaskSpec,
    rng: np.random.Generator,
    images_per_value: int = 4,
) -> UnitReport:
    """Which values of which attributes lower the target class's score?"""
    assert task.target_class is not None  # TaskSpec checks it
    target = designer.class_concept(task.target_class)
    if target is None:
        raise PolicyError(f"the designer cannot draw the class {task.target_class!r}")
    class_attribute = designer.attribute_of(target)
    attributes = [
        a
        for a in (task.candidate_attributes or designer.attributes())
        if a != class_attribute and designer.values(a)
    ]
    if not attributes:
        raise PolicyError("no attribute to vary for the class-bias audit")
    count = max(8, 2 * images_per_value)
    with session.step(f"score {task.target_class} images and images of other classes"):
        inside = _measure_prompts(session, designer.prompts([target], [], 3 * count, rng) or [])
        outside = _measure_prompts(session, designer.prompts([], [target], count, rng) or [])
        session.log(
            f"{task.target_class} vs other classes",
            [*inside.ids, *outside.ids],
            f"mean score {inside.mean:.3f} on the class, {outside.mean:.3f} elsewhere",
            f"the model scores {task.target_class} above other classes",
        )
    class_mean, other_mean = inside.mean, outside.mean
    subgroups: list[dict[str, Any]] = []
    per_attribute: dict[str, dict[str, float]] = {}
    for attribute in attributes:
        measured: dict[str, _Measured] = {}
        with session.step(f"score {task.target_class} images for every {attribute}"):
            # Subgroups found so far are held out, so they do not drag other values down.
            found = [s["concept"] for s in subgroups]
            for value in designer.values(attribute):
                prompts = designer.prompts([target, value], found, images_per_value, rng)
                if prompts:
                    measured[value] = _measure_prompts(session, prompts)
            means = {value: m.mean for value, m in measured.items()}
            per_attribute[attribute] = means
            low = _low_values(measured, class_mean, other_mean)
            session.log(
                f"{task.target_class} by {attribute}",
                [i for m in measured.values() for i in m.ids],
                "; ".join(f"{v}: {m:.3f}" for v, m in means.items())
                + (f" -> low: {', '.join(low)}" if low else " -> no value clearly lower"),
                f"some {attribute} lowers the {task.target_class} score",
            )
        if not low:
            continue
        high = [v for v in means if v not in low]
        group = (
            f"{task.target_class} whose {attribute} is not {' or '.join(_value(v) for v in high)}"
            if len(low) > len(high)
            else None
        )
        _edit_into_subgroups(session, designer, measured, high, low, rng)
        for value in low:
            subgroups.append(
                {
                    "attribute": attribute,
                    "value": _value(value),
                    "concept": value,
                    "description": designer.label([target, value], "and"),
                    "group": group or designer.label([target, value], "and"),
                    "mean_score": means[value],
                    "class_mean": class_mean,
                    "images": len(measured[value].ids),
                }
            )
    if subgroups:
        verdict = "biased"
        groups = list(dict.fromkeys(s["group"] for s in subgroups))
        label = "low scores on " + "; ".join(groups)
    elif class_mean - other_mean > AUDIT_CLASS_SEPARATION * max(abs(class_mean), 1e-6):
        verdict, label = "unbiased", f"no subgroup of {task.target_class} scores clearly lower"
    else:
        verdict, label = "unclear", f"the model barely tells {task.target_class} from the rest"
    description = (
        f"{task.target_class}: mean score {class_mean:.3f} (other classes {other_mean:.3f}); "
        + (
            "; ".join(f"{s['description']} {s['mean_score']:.3f}" for s in subgroups)
            if subgroups
            else "no attribute value lowers it clearly"
        )
    )
    return UnitReport(
        unit="",
        task=task.name,
        agent="",
        label=label,
        description=description,
        concepts=tuple(dict.fromkeys(s["concept"] for s in subgroups)),
        logic="or" if len(subgroups) > 1 else ("single" if subgroups else "unknown"),
        verdict=verdict,
        details={
            "subgroups": subgroups,
            "class_mean": class_mean,
            "other_classes_mean": other_mean,
            "scores": per_attribute,
        },
    )


def _low_values(measured: dict[str, _Measured], class_mean: float, other_mean: float) -> list[str]:
    """Values below the largest gap between sorted value means, when that gap is clear: at
    least a fifth of how far the class stands out, and well over the noise."""
    if len(measured) < 2:
        return []
    ordered = sorted(measured, key=lambda v: measured[v].mean)
    means = [measured[v].mean for v in ordered]
    gaps = np.diff(means)
    cut = int(np.argmax(gaps))
    spread = [a - measured[v].mean for v in ordered for a in measured[v].activations]
    noise = float(np.std(spread)) / np.sqrt(max(min(len(m.ids) for m in measured.values()), 1))
    scale = max(means[-1] - other_mean, 1e-9)
    low = ordered[: cut + 1]
    if (
        gaps[cut]
        < max(
            AUDIT_LOW_GAP_SHARE * scale,
            AUDIT_LOW_GAP_NOISE * noise,
        )
        or np.mean(means[: cut + 1]) >= class_mean
    ):
        return []
    return low


def _edit_into_subgroups(
    session: Session,
    designer: ExperimentDesigner,
    measured: dict[str, _Measured],
    high: Sequence[str],
    low: Sequence[str],
    rng: np.random.Generator,
) -> None:
    """Edit well-scored images into a low-scoring value, all else fixed, and measure."""
    sources = [i for v in high for i in measured[v].ids][:8]
    if not sources or not low:
        return
    keep = [v for v in measured if v not in low]
    instructions, kept = [], []
    for image_id in sources:
        context = sorted(session.describe([image_id])[0])
        current = next((v for v in high if v in context), None)
        if current is None:
            continue
        instruction = designer.removal_edit(current, keep, context, rng)
        if instruction is not None:
            kept.append(image_id)
            instructions.append(instruction)
    if not kept:
        return
    with session.step("move well-scored images into the low-scoring subgroups") as step:
        try:
            edited = session.edit(kept, instructions)
            after = session.measure(edited)
        except ToolError as error:
            step.error = str(error)
            return
        before = [session.activations[i] for i in kept]
        session.log(
            "into the subgroup, all else fixed",
            [*kept, *edited],
            f"score fell from {np.mean(before):.3f} to {np.mean(after):.3f}",
            f"{', '.join(low)} lowers the score",
        )
