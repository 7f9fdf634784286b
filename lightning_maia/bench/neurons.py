"""``lightning-maia bench neurons``: describing synthetic neurons with known ground truth.

MAIA's synthetic-neuron benchmark on the procedural world's suite (50 single-concept, 25 OR and
25 AND neurons; ``--quick``: 10, 5 and 5). Exemplars come once for the whole suite from a
ShapesWorld dataset; every unit then gets its own Toolbox over them. Three describers run:

- the agent (``--agent``, default ``scientist``): the offline scientist with its experiments;
- ``netdissect``: the single concept whose masks best overlap (IoU) the unit's thresholded
  exemplar maps, over the exemplar scenes;
- ``exemplars_only``: the scientist's hypothesis ranking alone, without experiments.

Figures: ``accuracy`` per describer and kind (mono, or, and, all; the agent first), the agent's
mean ``predictive_auroc`` (MAIA's predictive score of its descriptions), ``seconds_per_unit``
(its share of the exemplar pass included), ``images_per_unit`` and ``n_neurons``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lightning_maia.agents.records import UnitReport
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.analysis.scoring import (
    accuracy_by_kind,
    matches_ground_truth,
    predictive_score,
)
from lightning_maia.errors import bad_option
from lightning_maia.exemplars import ExemplarResult, compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit
from lightning_maia.world import ShapesWorld, build_neuron_suite, render_scene
from lightning_maia.world.datasets import ProceduralDataset

TABLE_KEYS: tuple[str, ...] = (
    "accuracy",
    "predictive_auroc",
    "seconds_per_unit",
    "images_per_unit",
    "n_neurons",
)

#: The agents ``--agent`` can name (offline ones: the benchmark never calls a service).
AGENTS: dict[str, Callable[[int], ScientistAgent]] = {
    "scientist": lambda seed: ScientistAgent(seed=seed),
    "exemplars_only": lambda seed: ScientistAgent(seed=seed, experiments=False),
}

#: (mono, or, and) neurons, and ShapesWorld images for the exemplars.
FULL = (50, 25, 25, 2000)
QUICK = (10, 5, 5, 1000)


def netdissect_report(result: ExemplarResult, dataset: ProceduralDataset, unit: Unit) -> UnitReport:
    """NetDissect's label: the concept whose masks best overlap the unit's exemplar masks.

    IoU over the exemplars: summed intersection over summed union, a concept absent from an
    exemplar counting as an empty mask there.
    """
    started = time.perf_counter()
    exemplars = result.for_unit(unit)
    masks = result.masks(unit)
    size = (int(masks.shape[-2]), int(masks.shape[-1]))
    intersection: dict[str, int] = {}
    area: dict[str, int] = {}
    for index, mask in zip(exemplars.dataset_indices.tolist(), masks, strict=True):
        rendering = render_scene(dataset.scene(index), size)
        for concept in sorted(rendering.scene.concepts()):
            concept_mask = rendering.concept_mask(concept)
            name = str(concept)
            intersection[name] = intersection.get(name, 0) + int((concept_mask & mask).sum())
            area[name] = area.get(name, 0) + int(concept_mask.sum())
    highlighted = int(masks.sum())

    def iou(name: str) -> float:
        union = highlighted + area[name] - intersection[name]
        return intersection[name] / union if union else 0.0

    best = max(sorted(area), key=iou) if area else None
    if best is None:
        return UnitReport.failed(unit.spec, "describe_unit", "netdissect", "no exemplars")
    return UnitReport(
        unit=unit.spec,
        task="describe_unit",
        agent="netdissect",
        label=best,
        description=f"best IoU with the exemplar masks: {best} ({iou(best):.2f})",
        concepts=(best,),
        logic="single",
        seconds=time.perf_counter() - started,
    )


def run(quick: bool = False, seed: int = 0, agent: str = "scientist") -> dict[str, Any]:
    """Describe every neuron of the suite with the agent and both baselines; score them."""
    if agent not in AGENTS:
        raise bad_option("agent", ", ".join(AGENTS), agent)
    threads = torch.get_num_threads()
    # The world's tensors are tiny: one thread beats several fighting over two cores.
    torch.set_num_threads(1)
    try:
        return _run(quick, seed, agent)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool, seed: int, agent_name: str) -> dict[str, Any]:
    started = time.perf_counter()
    n_mono, n_or, n_and, n_images = QUICK if quick else FULL
    model = build_neuron_suite(seed=seed, n_mono=n_mono, n_or=n_or, n_and=n_and)
    specs = model.specs
    dataset = ShapesWorld(size=n_images, seed=seed)
    tic = time.perf_counter()
    exemplars = compute_exemplars(
        model, dataset, ["neurons:*"], k=15, num_workers=0, progress=False
    )
    exemplar_seconds = time.perf_counter() - tic
    subject = Subject(model, ["neurons:*"])
    agents = {agent_name: AGENTS[agent_name](seed)}
    agents.setdefault("exemplars_only", AGENTS["exemplars_only"](seed))
    names = [agent_name, *(n for n in ("netdissect", "exemplars_only") if n != agent_name)]
    reports: dict[str, list[UnitReport]] = {name: [] for name in names}
    for index in range(len(specs)):
        unit = Unit("neurons", index)
        for name in names:
            if name == "netdissect":
                reports[name].append(netdissect_report(exemplars, dataset, unit))
                continue
            toolbox = Toolbox(subject, unit, exemplars=exemplars, seed=seed)
            report = agents[name].run(toolbox, TaskSpec())
            if name == agent_name:
                report.score = predictive_score(toolbox, report, seed=seed).auroc
            reports[name].append(report)
    main = reports[agent_name]
    share = exemplar_seconds / len(specs)
    scores = [r.score for r in main if r.score is not None]
    return {
        "accuracy": {name: accuracy_by_kind(reports[name], specs) for name in names},
        "predictive_auroc": float(np.mean(scores)) if scores else None,
        "seconds_per_unit": share + float(np.mean([r.seconds for r in main])),
        "images_per_unit": float(np.mean([r.images for r in main])),
        "n_neurons": len(specs),
        "agent": agent_name,
        "kinds": {kind: sum(s.kind == kind for s in specs) for kind in ("mono", "or", "and")},
        "seed": seed,
        "quick": quick,
        "exemplar_images": n_images,
        "exemplar_seconds": exemplar_seconds,
        "failed_runs": sum(not r.ok for r in main),
        "misses": {
            spec.name: report.label or str(report.failure_reason)
            for spec, report in zip(specs, main, strict=True)
            if not matches_ground_truth(report, spec)
        },
        "seconds": time.perf_counter() - started,
    }
