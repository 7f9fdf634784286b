"""The offline scientist: a deterministic hypothesis-testing policy over MAIA's tools.

No language model: the policy reads the unit's dataset exemplars and what their highlighted
regions show, ranks candidate concepts by how much more often they show there than in neutral
images, and tests them with controlled experiments — each concept alone (the others absent),
each pair together, and each concept removed by an edit that changes nothing else. Every
hypothesis (one concept, two joined by OR, two joined by AND) is then judged on all measured
images; the best-supported one is the description, the experiments its evidence. Images the
current best explains badly (active but predicted not, or the reverse) bring new candidates for
another round.

Concepts are strings from the describer, and prompts and edits come from an
:class:`~lightning_maia.agents._scientist_design.ExperimentDesigner`, so the same policy runs on
any world whose describer yields concepts. ``spurious_check`` and ``class_bias`` are answered
by :mod:`lightning_maia.agents._scientist_audits`.

>>> from lightning_maia.subject import Subject
>>> from lightning_maia.tools.toolbox import Toolbox
>>> from lightning_maia.world import ShapesWorld, build_neuron_suite
>>> model = build_neuron_suite(seed=0, n_mono=1, n_or=0, n_and=0)
>>> toolbox = Toolbox(Subject(model, ["neurons:0"]), "neurons:0",
...                   exemplar_data=ShapesWorld(size=200, seed=0))
>>> report = ScientistAgent().run(toolbox, TaskSpec())
>>> report.label, report.concepts, report.logic
('triangles', ('shape=triangle',), 'single')
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from lightning_maia.agents._records import UnitReport
from lightning_maia.agents._scientist_audits import class_bias, spurious_check
from lightning_maia.agents._scientist_design import ExperimentDesigner, ProceduralDesigner
from lightning_maia.agents._scientist_hypotheses import (
    Hypothesis,
    HypothesisFit,
    Observation,
    Scale,
    candidate_hypotheses,
    distinguishing_concepts,
    fit_hypotheses,
    rank_concepts,
    ranked_hypothesis,
    shared_concepts,
)
from lightning_maia.agents._scientist_session import PolicyError, Session
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.errors import BackendError, ToolError, bad_option
from lightning_maia.evaluation_constants import (
    SCIENTIST_CANDIDATE_MIN_FREQUENCY,
    SCIENTIST_CANDIDATE_MIN_SCORE,
    SCIENTIST_HIT_LEVEL,
    SCIENTIST_IMAGES_PER_EXPERIMENT,
    SCIENTIST_MAX_CANDIDATES,
    SCIENTIST_MAX_ROUNDS,
    SCIENTIST_MISS_LEVEL,
    SCIENTIST_NEUTRAL_IMAGES,
    SCIENTIST_NEUTRAL_QUANTILE,
)
from lightning_maia.tools.toolbox import Toolbox

#: On the 0 (neutral) .. 1 (exemplar) scale: an image at least this active is a hit.
HIT_LEVEL = SCIENTIST_HIT_LEVEL
#: ... and one below this is inactive.
MISS_LEVEL = SCIENTIST_MISS_LEVEL


class ScientistAgent:
    """The offline, deterministic scientist (see the module docstring).

    Args:
        designer: turns concepts into prompts and edits (procedural by default).
        seed: seeds the designer's choices; the same seed and toolbox give the same report.
        experiments: False ranks hypotheses from the exemplars alone (a baseline).
        images_per_experiment: images per condition of an experiment.
        neutral_images: images for the base rates of concepts and activations.
        max_candidates: concepts from the exemplar ranking tested in the first round.
        max_rounds: rounds of experiments (later rounds test what the best hypothesis missed).
        name: the agent's name in reports.
    """

    def __init__(
        self,
        designer: ExperimentDesigner | None = None,
        *,
        seed: int = 0,
        experiments: bool = True,
        images_per_experiment: int = SCIENTIST_IMAGES_PER_EXPERIMENT,
        neutral_images: int = SCIENTIST_NEUTRAL_IMAGES,
        max_candidates: int = SCIENTIST_MAX_CANDIDATES,
        max_rounds: int = SCIENTIST_MAX_ROUNDS,
        name: str | None = None,
    ) -> None:
        for option, value in (
            ("images_per_experiment", images_per_experiment),
            ("neutral_images", neutral_images),
            ("max_candidates", max_candidates),
            ("max_rounds", max_rounds),
        ):
            if value < 1:
                raise bad_option(option, "a positive integer", value)
        self.designer: ExperimentDesigner = designer or ProceduralDesigner()
        self.seed = seed
        self.experiments = experiments
        self.images_per_experiment = images_per_experiment
        self.neutral_images = neutral_images
        self.max_candidates = max_candidates
        self.max_rounds = max_rounds
        self.name = name or ("scientist" if experiments else "exemplars_only")

    def run(self, toolbox: Toolbox, task: TaskSpec) -> UnitReport:
        """Run ``task`` on the toolbox's unit; model-caused failures give a failed report."""
        started = time.perf_counter()
        session = Session(toolbox)
        logged_before = len(toolbox.experiments)
        rng = np.random.default_rng(self.seed)
        unit = toolbox.unit.spec
        try:
            if task.name == "describe_unit":
                report = self._describe_unit(session, rng)
            elif task.name == "spurious_check":
                report = spurious_check(session, self.designer, task, rng)
            else:
                report = class_bias(session, self.designer, task, rng)
        except (PolicyError, ToolError, BackendError) as error:
            report = UnitReport.failed(unit, task.name, self.name, str(error))
        report.unit, report.task, report.agent = unit, task.name, self.name
        report.steps = session.steps
        report.evidence = list(toolbox.experiments[logged_before:])
        report.images = session.images
        report.usage = toolbox.usage
        report.seconds = time.perf_counter() - started
        return report

    # -- describe_unit --------------------------------------------------------------------

    def _describe_unit(self, session: Session, rng: np.random.Generator) -> UnitReport:
        exemplar_ids, exemplar_concepts, peak = self._read_exemplars(session)
        neutral = self._neutral_probe(session, rng)
        ranking = rank_concepts(exemplar_concepts, [o.concepts for o in neutral])
        ranking = [r for r in ranking if self.designer.can_design(r.concept)]
        if not ranking:
            raise PolicyError("the exemplars' descriptions name no concept the designer can test")
        with session.step("rank candidate concepts by enrichment in the highlighted regions"):
            session.log(
                "exemplar regions vs neutral images",
                exemplar_ids,
                "; ".join(str(r) for r in ranking[:6]),
                "the unit detects what its exemplars' highlighted regions share",
            )
        if not self.experiments:
            found = ranked_hypothesis(ranking, exemplar_concepts, self._same_attribute)
            assert found is not None
            return self._report(found, None, [], ranking)
        neutral_level = np.quantile([o.activation for o in neutral], SCIENTIST_NEUTRAL_QUANTILE)
        scale = Scale(float(neutral_level), peak)
        if scale.span <= 1e-6:
            raise PolicyError(
                f"the unit is no more active on its exemplars ({peak:.3g}) than on neutral "
                f"images ({scale.base:.3g})"
            )
        candidates = [
            r.concept
            for r in ranking
            if r.score >= SCIENTIST_CANDIDATE_MIN_SCORE
            and r.frequency >= SCIENTIST_CANDIDATE_MIN_FREQUENCY
        ][: self.max_candidates] or [ranking[0].concept]
        observations = list(neutral)
        tested: set[tuple[str, ...]] = set()
        fits: list[HypothesisFit] = []
        for _ in range(self.max_rounds):
            observations += self._test_candidates(session, candidates, tested, scale, rng)
            hypotheses = candidate_hypotheses(candidates, self._same_attribute)
            fits = fit_hypotheses(hypotheses, observations, scale)
            new = self._missed_concepts(session, fits[0].hypothesis, observations, scale)
            new = [c for c in new if c not in candidates][:2]
            if not new:
                break
            candidates = [*candidates, *new]
        if not fits[0].accepted:
            # Nothing holds up: the strongest exemplar alone may show what the rest dilute.
            strongest = [r.concept for r in ranking if r.concept in exemplar_concepts[0]]
            extra = [c for c in strongest if c not in candidates][: self.max_candidates]
            if extra:
                candidates = [*candidates, *extra]
                observations += self._test_candidates(session, candidates, tested, scale, rng)
                hypotheses = candidate_hypotheses(candidates, self._same_attribute)
                fits = fit_hypotheses(hypotheses, observations, scale)
        best = fits[0]
        with session.step(f"choose the best-supported hypothesis: {best.hypothesis}"):
            session.log(
                "hypotheses judged on every measured image",
                [o.image_id for o in observations],
                "; ".join(str(f) for f in fits[:5]),
                str(best.hypothesis),
            )
        return self._report(best.hypothesis, best, fits, ranking)

    def _read_exemplars(self, session: Session) -> tuple[list[str], list[frozenset[str]], float]:
        with session.step("read the dataset exemplars and describe their highlighted regions"):
            exemplars = session.exemplars()
            if not exemplars:
                raise PolicyError("the unit has no dataset exemplars")
            ids = [e.id for e in exemplars]
            concepts = session.describe(ids)
        peak = float(np.median([e.activation for e in exemplars]))
        return ids, concepts, peak

    def _neutral_probe(self, session: Session, rng: np.random.Generator) -> list[Observation]:
        with session.step("measure the unit and describe neutral images (base rates)"):
            prompts = self.designer.neutral_prompts(self.neutral_images, rng)
            ids = session.generate(prompts)
            if not self.experiments:
                concepts = session.describe(ids)
                return [Observation(i, 0.0, c) for i, c in zip(ids, concepts, strict=True)]
            return session.observe(ids)

    def _same_attribute(self, first: str, second: str) -> bool:
        return self.designer.attribute_of(first) == self.designer.attribute_of(second)

    def _test_candidates(
        self,
        session: Session,
        candidates: Sequence[str],
        tested: set[tuple[str, ...]],
        scale: Scale,
        rng: np.random.Generator,
    ) -> list[Observation]:
        """Each untested concept alone (then removed), and each untested pair together."""
        found: list[Observation] = []
        for concept in candidates:
            if (concept,) not in tested:
                tested.add((concept,))
                others = [c for c in candidates if c != concept]
                found += self._experiment(session, [concept], others, [concept], scale, rng)
        for index, first in enumerate(candidates):
            for second in candidates[index + 1 :]:
                if (first, second) in tested or self._same_attribute(first, second):
                    continue
                tested.add((first, second))
                others = [c for c in candidates if c not in (first, second)]
                together = self._experiment(session, [first, second], others, [], scale, rng)
                found += together
                if together and np.mean([scale(o.activation) for o in together]) >= HIT_LEVEL:
                    # Both together work: does each alone, with all else fixed? (AND vs OR)
                    ids = [o.image_id for o in together]
                    found += self._removals(session, ids, [first, second], candidates, scale, rng)
        return found

    def _experiment(
        self,
        session: Session,
        present: Sequence[str],
        absent: Sequence[str],
        remove: Sequence[str],
        scale: Scale,
        rng: np.random.Generator,
    ) -> list[Observation]:
        """Images showing ``present`` and none of ``absent``; then each of ``remove`` taken out."""
        what = " and ".join(present)
        prompts = self.designer.prompts(present, absent, self.images_per_experiment, rng)
        if not prompts:
            return []
        title = f"{what} {'together' if len(present) > 1 else 'alone'}"
        request = f"test {title}, without {', '.join(absent) or 'other candidates'}"
        with session.step(request) as step:
            try:
                ids = session.generate(prompts)
                observations = session.observe(ids)
            except ToolError as error:
                step.error = str(error)
                return []
            level = float(np.mean([scale(o.activation) for o in observations]))
            session.log(
                title,
                ids,
                f"mean activation {level:.2f} of the exemplar level",
                f"{what} {'together' if len(present) > 1 else 'alone'} activate the unit",
            )
        if remove:
            observations += self._removals(session, ids, remove, [*present, *absent], scale, rng)
        return observations

    def _removals(
        self,
        session: Session,
        image_ids: Sequence[str],
        remove: Sequence[str],
        avoid: Sequence[str],
        scale: Scale,
        rng: np.random.Generator,
    ) -> list[Observation]:
        """Edit each concept of ``remove`` out of the images, all else fixed; measure the drop."""
        found: list[Observation] = []
        for concept in remove:
            sources, instructions = [], []
            for image_id in image_ids:
                instruction = self.designer.removal_edit(
                    concept, avoid, sorted(session.concepts[image_id]), rng
                )
                if instruction is not None and concept in session.concepts[image_id]:
                    sources.append(image_id)
                    instructions.append(instruction)
            if not sources:
                continue
            with session.step(f"remove {concept} from the images, holding all else fixed") as step:
                done = session.edit_then(step, sources, instructions, session.observe)
                if done is None:
                    continue
                edited, observations = done
                before = np.mean([scale(session.activations[i]) for i in sources])
                after = np.mean([scale(o.activation) for o in observations])
                session.log(
                    f"{concept} present vs absent",
                    [*sources, *edited],
                    f"removing {concept} moved the activation from {before:.2f} to {after:.2f} "
                    f"of the exemplar level (effect size {before - after:.2f})",
                    f"the unit needs {concept}",
                )
            found += observations
        return found

    def _missed_concepts(
        self,
        session: Session,
        hypothesis: Hypothesis,
        observations: Sequence[Observation],
        scale: Scale,
    ) -> list[str]:
        """Concepts that may explain what ``hypothesis`` gets wrong, most likely first: what
        the highlighted regions of active images it calls inactive share, then what active
        images it calls active have and the inactive ones it calls active lack."""
        active = [scale(o.activation) >= HIT_LEVEL for o in observations]
        inactive = [scale(o.activation) < MISS_LEVEL for o in observations]
        predicted = [hypothesis.holds(o.concepts) for o in observations]
        missed = [o for o, a, p in zip(observations, active, predicted, strict=True) if a and not p]
        regions = session.region_concepts([o.image_id for o in missed])
        found = shared_concepts(
            # An empty highlight (a threshold above a weak response): the whole image stands in.
            [region or o.concepts for o, region in zip(missed, regions, strict=True)],
            [o.concepts for o in observations],
        )
        found += distinguishing_concepts(
            [
                o.concepts
                for o, a, p in zip(observations, active, predicted, strict=True)
                if a and p
            ],
            [
                o.concepts
                for o, i, p in zip(observations, inactive, predicted, strict=True)
                if i and p
            ],
        )
        return [c for c in dict.fromkeys(found) if self.designer.can_design(c)]

    def _report(
        self,
        hypothesis: Hypothesis,
        fit: HypothesisFit | None,
        fits: Sequence[HypothesisFit],
        ranking: Sequence[object],
    ) -> UnitReport:
        label = self.designer.label(hypothesis.concepts, hypothesis.logic)
        if fit is None:
            description = f"The unit's exemplars point to {label} (ranked from exemplars only)."
        else:
            support = "supported" if fit.accepted else "only weakly supported"
            description = (
                f"The unit detects {label}: {support} by the experiments (correlation "
                f"{fit.correlation:.2f}, AUROC {fit.auroc:.2f}, effect size {fit.effect:.2f} of "
                f"the exemplar level, over {fit.n_true + fit.n_false} measured images)."
            )
        return UnitReport(
            unit="",
            task="describe_unit",
            agent=self.name,
            label=label,
            description=description,
            concepts=hypothesis.concepts,
            logic=hypothesis.logic,
            details={
                "hypotheses": [str(f) for f in fits[:8]],
                "ranking": [str(r) for r in ranking[:8]],
                "accepted": bool(fit.accepted) if fit is not None else None,
            },
        )
