"""The evaluation constants: one module, each with its provenance, read by the modules."""

from __future__ import annotations

import inspect
import re

from lightning_maia import evaluation_constants
from lightning_maia.agents import _scientist_audits as scientist_audits
from lightning_maia.agents import _scientist_hypotheses as scientist_hypotheses
from lightning_maia.agents import scientist
from lightning_maia.analysis import _dfr as dfr
from lightning_maia.analysis import _scoring as scoring
from lightning_maia.analysis import compositional
from lightning_maia.bench import _faults as faults
from lightning_maia.bench import _neurons as neurons
from lightning_maia.bench import _spurious as spurious
from lightning_maia.bench import _world as world_bench


def test_every_constant_has_a_provenance_comment() -> None:
    # A constant's own `#:` comment, or the one of the group it directly follows.
    lines = inspect.getsource(evaluation_constants).splitlines()
    documented: set[str] = set()
    for number, line in enumerate(lines):
        match = re.match(r"([A-Z][A-Z0-9_]*)(: [^=]+)? = ", line)
        if not match:
            continue
        above = lines[number - 1]
        previous = re.match(r"([A-Z][A-Z0-9_]*)", above)
        if above.startswith("#:") or (previous and previous.group(1) in documented):
            documented.add(match.group(1))
    assert documented == set(evaluation_constants.as_dict())
    assert len(documented) > 60


def test_the_modules_read_their_constants_from_the_one_module() -> None:
    c = evaluation_constants
    assert scientist.HIT_LEVEL is c.SCIENTIST_HIT_LEVEL
    assert scientist.MISS_LEVEL is c.SCIENTIST_MISS_LEVEL
    assert scientist_audits.FOLLOWS is c.AUDIT_FOLLOWS
    assert scientist_audits.DOMINANCE is c.AUDIT_DOMINANCE
    assert scientist_hypotheses.MIN_AUROC is c.HYPOTHESIS_MIN_AUROC
    assert scientist_hypotheses.COMPLEXITY_PENALTY is c.HYPOTHESIS_COMPLEXITY_PENALTY
    assert scoring.INDEPENDENT_SEED_OFFSET == c.INDEPENDENT_SEED_OFFSET == 7919
    assert dfr.C_GRID is c.DFR_C_GRID and dfr.N_SUBSAMPLES == c.DFR_SUBSAMPLES == 10
    assert neurons.FULL is c.NEURONS_FULL and neurons.MIN_GAINS is c.NEURONS_MIN_GAINS
    assert neurons.HARD_PER_KIND == {False: 3, True: 1}
    assert spurious.C_GRID is c.REFIT_C_GRID and spurious.SUITES == {
        "standard": 0.95,
        "shortcut": 0.99,
    }
    assert spurious.QUICK.copies == (0, 3) and spurious.FULL.seeds == 3
    assert (spurious.FULL.train, spurious.FULL.val, spurious.FULL.test) == (3000, 800, 1600)
    assert faults.BOUNDS == {"wall_s": 90.0, "extra_peak_mb": 500.0, "artifact_bytes_per_unit": 1e6}
    assert world_bench.REPEATS == 3
    defaults = inspect.signature(scientist.ScientistAgent).parameters
    assert defaults["neutral_images"].default == c.SCIENTIST_NEUTRAL_IMAGES == 32
    explain = inspect.signature(compositional.explain_mask).parameters
    assert (explain["beam"].default, explain["min_gain"].default) == (5, 0.01)
    assert inspect.signature(scoring.predictive_score).parameters["n"].default == 16


def test_the_goal_names_come_from_the_constants() -> None:
    standard = neurons._goals("standard", {"mono": 1.0, "or": 0.95, "and": 0.94}, [{}])
    assert standard == {"mono>=0.95": True, "or>=0.95": True, "and>=0.95": False, "met": False}
    hard = neurons._goals(
        "hard", {"mono": 0.9, "or": 0.8, "and": 0.8}, [{"or": 0.65, "and": 0.66}, {"or": 0.5}]
    )
    assert hard == {
        "mono>=0.90": True,
        "or>=0.80": True,
        "and>=0.80": True,
        "or>=compositional+0.15": True,
        "and>=compositional+0.15": False,
        "met": False,
    }
