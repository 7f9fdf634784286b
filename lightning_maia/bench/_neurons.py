"""``lightning-maia bench neurons``: describing synthetic neurons with known ground truth.

MAIA's synthetic-neuron benchmark on the procedural world's suite (50 single-concept, 25 OR and
25 AND neurons; ``--quick``: 10, 5 and 5). Exemplars come once for the whole suite from a
ShapesWorld probe dataset; every unit then gets its own Toolbox over them. Describers:

- the agent (``--agent``, default ``scientist``): the offline scientist with its experiments;
- ``netdissect``: the single concept whose masks best overlap (IoU) the unit's mask over the
  whole probe dataset (its maps above the exemplar threshold, on every probe image);
- ``compositional`` (Mu & Andreas 2020): the AND / OR / AND NOT / NOT formula of concept masks
  with the best IoU over the probe dataset, found by beam search
  (:mod:`lightning_maia.analysis.compositional`);
- ``exemplars_only``: the scientist's hypothesis ranking alone, without experiments.

IoU is computed on the neurons' map cells (16 x 16 at 64 px): a concept covers a cell when at
least half its pixels show it. Both baselines run at two unit-mask thresholds (see
:data:`THRESHOLDS`): the exemplar pass's 0.99 quantile (``netdissect``, ``compositional``) and
half the unit's mean exemplar activation (``..._relative``). The compositional baseline's
``min_gain`` is chosen from :data:`MIN_GAINS` on a validation suite of another seed
(``seed + 1000``, quick size); the goals compare with the stronger of its two thresholds.

``--suite hard`` (:func:`~lightning_maia.world._neuron_suite.build_hard_suite`): the same kinds at
activation noise 0.1 and 0.25 (one model each), probe scenes of one to three objects with
distractor correlations between concepts, and neurons outside the scientist's grammar (NOT,
three-way OR, position, relative size), scored per kind.

Figures: ``accuracy`` per describer and kind (the agent first; the hard suite pools both noise
levels and adds ``accuracy_by_noise``), the agent's mean ``predictive_auroc`` (MAIA's
predictive score, prompts from the agent's own designer) and ``independent_auroc`` (prompts
from :class:`~lightning_maia.analysis._scoring.IndependentPromptWriter`, another seed and
grammar path), ``seconds_per_unit``, ``images_per_unit``, ``n_neurons`` and ``goals``.

**Why one file.** One benchmark: its baselines (netdissect, compositional) share the probe masks
computed here once per suite, and splitting them would pass those masks across modules for no
reader's gain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.analysis._scoring import (
    accuracy_by_kind,
    independent_predictive_score,
    matches_ground_truth,
    predictive_score,
)
from lightning_maia.analysis.compositional import explain_mask
from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    NEURONS_CELL_COVERAGE,
    NEURONS_EXEMPLARS_K,
    NEURONS_FULL,
    NEURONS_HARD_GOALS,
    NEURONS_HARD_MARGIN,
    NEURONS_HARD_PER_KIND_FULL,
    NEURONS_HARD_PER_KIND_QUICK,
    NEURONS_MIN_GAINS,
    NEURONS_QUICK,
    NEURONS_RELATIVE_THRESHOLD,
    NEURONS_STANDARD_GOAL,
    NEURONS_VALIDATION_SEED_OFFSET,
)
from lightning_maia.exemplars import ExemplarResult, compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit
from lightning_maia.world import ShapesWorld, build_neuron_suite, render_scene
from lightning_maia.world._datasets import ProceduralDataset
from lightning_maia.world._neuron_suite import HARD_NOISE, build_hard_suite, hard_probe_sampler
from lightning_maia.world._neurons import SyntheticNeuronModel

TABLE_KEYS: tuple[str, ...] = (
    "accuracy",
    "predictive_auroc",
    "independent_auroc",
    "seconds_per_unit",
    "images_per_unit",
    "n_neurons",
    "goals",
)

#: The agents ``--agent`` can name (offline ones: the benchmark never calls a service).
AGENTS: dict[str, Callable[[int], ScientistAgent]] = {
    "scientist": lambda seed: ScientistAgent(seed=seed),
    "exemplars_only": lambda seed: ScientistAgent(seed=seed, experiments=False),
}
SUITES: tuple[str, ...] = ("standard", "hard")
BASELINES: tuple[str, ...] = (
    "netdissect",
    "netdissect_relative",
    "compositional",
    "compositional_relative",
    "exemplars_only",
)

#: (mono, or, and) neurons, and ShapesWorld images for the exemplars.
FULL = NEURONS_FULL
QUICK = NEURONS_QUICK
#: Out-of-grammar neurons per hard kind (full, quick).
HARD_PER_KIND = {
    False: NEURONS_HARD_PER_KIND_FULL,
    True: NEURONS_HARD_PER_KIND_QUICK,
}


#: Unit-mask thresholds: the exemplar pass's (the maps' 0.99 quantile over the probe set), and
#: half the mean spatial-max activation of the unit's exemplars (fixed in advance: rare
#: concepts cover far less than 1% of cells, which a quantile threshold cannot isolate).
THRESHOLDS: tuple[str, ...] = ("quantile", "relative")
RELATIVE_THRESHOLD = NEURONS_RELATIVE_THRESHOLD
#: ``min_gain`` values the compositional baseline may take, chosen on a validation suite.
MIN_GAINS: tuple[float, ...] = NEURONS_MIN_GAINS
#: The validation suite's seed is the test seed plus this.
VALIDATION_SEED_OFFSET = NEURONS_VALIDATION_SEED_OFFSET


@dataclass
class ProbeMasks:
    """Every probe image's unit masks and concept masks, on the neurons' map cells.

    ``units[threshold][c]`` is unit ``c``'s (images * cells) mask: its map above that threshold
    (see :data:`THRESHOLDS`); ``concepts[name]`` the cells at least half covered by the concept.
    """

    units: dict[str, np.ndarray]  # threshold -> (C, images * cells) bool
    concepts: dict[str, np.ndarray]  # name -> (images * cells,) bool


def unit_thresholds(result: ExemplarResult, units: int) -> dict[str, torch.Tensor]:
    """Both :data:`THRESHOLDS` for the first ``units`` neurons of ``result``."""
    relative = [
        RELATIVE_THRESHOLD * float(result.for_unit(Unit("neurons", i)).activations.mean())
        for i in range(units)
    ]
    return {
        "quantile": result.layers["neurons"].thresholds.double(),
        "relative": torch.tensor(relative, dtype=torch.float64),
    }


def probe_masks(
    model: SyntheticNeuronModel, dataset: ProceduralDataset, thresholds: dict[str, torch.Tensor]
) -> ProbeMasks:
    """One pass over ``dataset``: unit masks at each threshold, and the concept masks."""
    unit_rows: dict[str, list[torch.Tensor]] = {name: [] for name in thresholds}
    concept_rows: dict[str, list[tuple[int, torch.Tensor]]] = {}
    seen = 0
    for start in range(0, len(dataset), 64):
        indices = range(start, min(start + 64, len(dataset)))
        images = torch.stack([dataset[i][0] for i in indices])
        with torch.no_grad():
            maps = model(images).double()  # (B, C, h, w)
        height, width = int(maps.shape[-2]), int(maps.shape[-1])
        for name, values in thresholds.items():
            above = maps.flatten(2) > values[None, :, None]
            unit_rows[name].append(above.permute(1, 0, 2))
        for offset, index in enumerate(indices):
            size = (int(images.shape[-2]), int(images.shape[-1]))
            rendering = render_scene(dataset.scene(index), size)
            for concept in rendering.scene.concepts():
                pixels = rendering.concept_mask(concept).float()[None, None]
                cells = F.adaptive_avg_pool2d(pixels, (height, width)).flatten()
                cells = cells >= NEURONS_CELL_COVERAGE
                concept_rows.setdefault(str(concept), []).append((seen + offset, cells))
        seen += len(indices)
    units = {name: torch.cat(rows, dim=1).flatten(1).numpy() for name, rows in unit_rows.items()}
    cells_per_image = height * width
    concepts: dict[str, np.ndarray] = {}
    for name, rows in sorted(concept_rows.items()):
        flat = np.zeros(seen * cells_per_image, bool)
        for index, cells in rows:
            flat[index * cells_per_image : (index + 1) * cells_per_image] = cells.numpy()
        concepts[name] = flat
    return ProbeMasks(units, concepts)


def _iou(unit: np.ndarray, concept: np.ndarray) -> float:
    union = int(np.count_nonzero(unit | concept))
    return int(np.count_nonzero(unit & concept)) / union if union else 0.0


def netdissect_report(masks: ProbeMasks, unit: Unit, threshold: str = "quantile") -> UnitReport:
    """NetDissect's label: the concept whose masks best overlap the unit's over the probe set."""
    started = time.perf_counter()
    unit_mask = masks.units[threshold][unit.index]
    scores = {name: _iou(unit_mask, mask) for name, mask in masks.concepts.items()}
    if not scores or not unit_mask.any():
        return UnitReport.failed(unit.spec, "describe_unit", "netdissect", "empty unit mask")
    best = max(scores, key=lambda name: scores[name])
    return UnitReport(
        unit=unit.spec,
        task="describe_unit",
        agent="netdissect",
        label=best,
        description=f"best IoU over the probe dataset: {best} ({scores[best]:.2f})",
        concepts=(best,),
        logic="single",
        seconds=time.perf_counter() - started,
    )


def compositional_report(
    masks: ProbeMasks, unit: Unit, threshold: str = "quantile", min_gain: float = 0.01
) -> UnitReport:
    """Mu & Andreas' label: the best-IoU formula of concept masks over the probe set."""
    started = time.perf_counter()
    unit_mask = masks.units[threshold][unit.index]
    agent = "compositional" if threshold == "quantile" else f"compositional_{threshold}"
    if not unit_mask.any():
        return UnitReport.failed(unit.spec, "describe_unit", agent, "empty unit mask")
    found = explain_mask(unit_mask, masks.concepts, min_gain=min_gain)
    return UnitReport(
        unit=unit.spec,
        task="describe_unit",
        agent=agent,
        label=str(found.formula),
        description=f"best IoU formula over the probe dataset: {found.formula} ({found.iou:.2f})",
        concepts=tuple(dict.fromkeys(found.formula.concepts)),
        logic=found.formula.logic,
        seconds=time.perf_counter() - started,
    )


def run(
    quick: bool = False, seed: int = 0, agent: str = "scientist", suite: str = "standard"
) -> dict[str, Any]:
    """Describe every neuron of the suite with the agent and the baselines; score them."""
    if agent not in AGENTS:
        raise bad_option("agent", ", ".join(AGENTS), agent)
    if suite not in SUITES:
        raise bad_option("suite", ", ".join(SUITES), suite)
    threads = torch.get_num_threads()
    # The world's tensors are tiny: one thread beats several fighting over two cores.
    torch.set_num_threads(1)
    try:
        return _run(quick, seed, agent, suite)
    finally:
        torch.set_num_threads(threads)


def _exemplars_and_masks(
    model: SyntheticNeuronModel, dataset: ProceduralDataset
) -> tuple[ExemplarResult, ProbeMasks, float]:
    tic = time.perf_counter()
    exemplars = compute_exemplars(
        model,
        dataset,
        ["neurons:*"],
        k=NEURONS_EXEMPLARS_K,
        num_workers=0,
        progress=False,
    )
    seconds = time.perf_counter() - tic
    masks = probe_masks(model, dataset, unit_thresholds(exemplars, len(model.specs)))
    return exemplars, masks, seconds


def choose_min_gains(
    settings: list[tuple[SyntheticNeuronModel, float | None]], dataset: ProceduralDataset
) -> dict[str, Any]:
    """The compositional baseline's ``min_gain`` per threshold: the one of :data:`MIN_GAINS`
    with the best accuracy over all neurons of a validation suite (ties: the smaller)."""
    masks = [(model, _exemplars_and_masks(model, dataset)[1]) for model, _ in settings]
    accuracy: dict[str, dict[str, float]] = {}
    for threshold in THRESHOLDS:
        accuracy[threshold] = {}
        for gain in MIN_GAINS:
            hits = [
                matches_ground_truth(
                    compositional_report(probe, Unit("neurons", i), threshold, gain), spec
                )
                for model, probe in masks
                for i, spec in enumerate(model.specs)
            ]
            accuracy[threshold][str(gain)] = sum(hits) / len(hits)
    chosen = {
        threshold: max(MIN_GAINS, key=lambda gain: (accuracy[threshold][str(gain)], -gain))
        for threshold in THRESHOLDS
    }
    return {"chosen": chosen, "validation_accuracy": accuracy}


def describe_suite(
    model: SyntheticNeuronModel,
    dataset: ProceduralDataset,
    agent_name: str,
    seed: int,
    min_gains: dict[str, float],
) -> dict[str, Any]:
    """Every describer's reports on every neuron of ``model``, probe data ``dataset``."""
    exemplars, masks, exemplar_seconds = _exemplars_and_masks(model, dataset)
    subject = Subject(model, ["neurons:*"])
    agents = {agent_name: AGENTS[agent_name](seed)}
    agents.setdefault("exemplars_only", AGENTS["exemplars_only"](seed))
    names = [agent_name, *(n for n in BASELINES if n != agent_name)]
    reports: dict[str, list[UnitReport]] = {name: [] for name in names}
    predictive: list[float] = []
    independent: list[float] = []
    for index in range(len(model.specs)):
        unit = Unit("neurons", index)
        for name in names:
            if name.startswith(("netdissect", "compositional")):
                method, _, threshold = name.partition("_")
                threshold = threshold or "quantile"
                if method == "netdissect":
                    reports[name].append(netdissect_report(masks, unit, threshold))
                else:
                    gain = min_gains[threshold]
                    reports[name].append(compositional_report(masks, unit, threshold, gain))
                continue
            toolbox = Toolbox(subject, unit, exemplars=exemplars, seed=seed)
            report = agents[name].run(toolbox, TaskSpec())
            if name == agent_name:
                report.score = predictive_score(toolbox, report, seed=seed).auroc
                predictive.append(report.score)
                independent.append(independent_predictive_score(toolbox, report, seed=seed).auroc)
            reports[name].append(report)
    return {
        "reports": reports,
        "names": names,
        "predictive": predictive,
        "independent": independent,
        "exemplar_seconds": exemplar_seconds,
    }


def suite_settings(
    suite: str, seed: int, quick: bool
) -> tuple[list[tuple[SyntheticNeuronModel, float | None]], ProceduralDataset]:
    """The suite's models (one per noise level, with that level) and its probe dataset."""
    n_mono, n_or, n_and, n_images = QUICK if quick else FULL
    if suite == "standard":
        model = build_neuron_suite(seed=seed, n_mono=n_mono, n_or=n_or, n_and=n_and)
        return [(model, None)], ShapesWorld(size=n_images, seed=seed)
    per_kind = HARD_PER_KIND[quick]
    settings: list[tuple[SyntheticNeuronModel, float | None]] = [
        (build_hard_suite(seed, n_mono, n_or, n_and, per_kind=per_kind, noise_std=noise), noise)
        for noise in HARD_NOISE
    ]
    return settings, ShapesWorld(size=n_images, seed=seed, sampler=hard_probe_sampler(seed))


def _run(quick: bool, seed: int, agent_name: str, suite: str) -> dict[str, Any]:
    started = time.perf_counter()
    n_images = (QUICK if quick else FULL)[3]
    # Constants of the baselines come from another seed's suite, never from the test suite.
    validation = choose_min_gains(*suite_settings(suite, seed + VALIDATION_SEED_OFFSET, True))
    settings, dataset = suite_settings(suite, seed, quick)
    runs = [
        (noise, model, describe_suite(model, dataset, agent_name, seed, validation["chosen"]))
        for model, noise in settings
    ]
    names = runs[0][2]["names"]
    specs = [spec for _, model, _ in runs for spec in model.specs]
    reports = {name: [r for _, _, out in runs for r in out["reports"][name]] for name in names}
    main = reports[agent_name]
    predictive = [v for _, _, out in runs for v in out["predictive"]]
    independent = [v for _, _, out in runs for v in out["independent"]]
    exemplar_seconds = sum(out["exemplar_seconds"] for _, _, out in runs)
    accuracy = {name: accuracy_by_kind(reports[name], specs) for name in names}
    figures: dict[str, Any] = {
        "accuracy": accuracy,
        "predictive_auroc": float(np.mean(predictive)) if predictive else None,
        "independent_auroc": float(np.mean(independent)) if independent else None,
        "seconds_per_unit": exemplar_seconds / len(specs)
        + float(np.mean([r.seconds for r in main])),
        "images_per_unit": float(np.mean([r.images for r in main])),
        "n_neurons": len(specs),
        "goals": _goals(
            suite,
            accuracy[agent_name],
            [accuracy["compositional"], accuracy["compositional_relative"]],
        ),
        "agent": agent_name,
        "suite": suite,
        "kinds": {
            kind: sum(s.kind == kind for s in specs)
            for kind in dict.fromkeys(s.kind for s in specs)
        },
        "seed": seed,
        "seeds": [seed],
        "validation_seed": seed + VALIDATION_SEED_OFFSET,
        "compositional_min_gain": validation,
        "quick": quick,
        "exemplar_images": n_images,
        "exemplar_seconds": exemplar_seconds,
        "failed_runs": sum(not r.ok for r in main),
        "misses": {
            f"{spec.name}@{noise}" if noise is not None else spec.name: report.label
            or str(report.failure_reason)
            for (noise, model, out) in runs
            for spec, report in zip(model.specs, out["reports"][agent_name], strict=True)
            if not matches_ground_truth(report, spec)
        },
    }
    if suite == "hard":
        figures["accuracy_by_noise"] = {
            str(noise): {
                name: accuracy_by_kind(out["reports"][name], model.specs) for name in names
            }
            for noise, model, out in runs
        }
    figures["seconds"] = time.perf_counter() - started
    return figures


def _goals(
    suite: str, agent: dict[str, float | None], compositional: list[dict[str, float | None]]
) -> dict[str, Any]:
    """The benchmark's goals: standard >= 0.95 per kind; hard >= 0.90 / 0.80 / 0.80 and >= the
    stronger compositional baseline (either threshold) + 0.15 on or / and."""

    def value(figures: dict[str, float | None], kind: str) -> float:
        found = figures.get(kind)
        return float(found) if found is not None else 0.0

    def strongest(kind: str) -> float:
        return max(value(figures, kind) for figures in compositional)

    goals = (
        [(kind, NEURONS_STANDARD_GOAL) for kind in ("mono", "or", "and")]
        if suite == "standard"
        else list(NEURONS_HARD_GOALS)
    )
    checks = {f"{kind}>={goal:.2f}": value(agent, kind) >= goal for kind, goal in goals}
    if suite != "standard":
        margin = NEURONS_HARD_MARGIN
        for kind in ("or", "and"):
            checks[f"{kind}>=compositional+{margin:.2f}"] = (
                value(agent, kind) >= strongest(kind) + margin
            )
    return {**checks, "met": all(checks.values())}
