"""The evaluation constants: one module, each with its provenance, read by the modules."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from lightning_maia import evaluation_constants, exemplars
from lightning_maia.agents import _scientist_audits as scientist_audits
from lightning_maia.agents import _scientist_hypotheses as scientist_hypotheses
from lightning_maia.agents import scientist
from lightning_maia.analysis import _class_bias as class_bias
from lightning_maia.analysis import _dfr as dfr
from lightning_maia.analysis import _risk as risk
from lightning_maia.analysis import _scoring as scoring
from lightning_maia.analysis import _spurious as spurious_analysis
from lightning_maia.analysis import compositional, flagging
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit, Thresholds
from lightning_maia.analysis._spurious_options import Refit, SearchBudget
from lightning_maia.bench import _faults as faults
from lightning_maia.bench import _flagging as flagging_bench
from lightning_maia.bench import _neurons as neurons
from lightning_maia.bench import _overhead as overhead
from lightning_maia.bench import _realdata as realdata
from lightning_maia.bench import _spurious as spurious
from lightning_maia.bench import _world as world_bench
from lightning_maia.world import _neuron_suite as neuron_suite


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
    assert len(documented) > 120


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


def _default(function: Callable[..., Any], name: str) -> Any:
    return inspect.signature(function).parameters[name].default


def test_the_flagging_and_remover_defaults_are_the_constants() -> None:
    c = evaluation_constants
    assert SpuriousEvidence().max_checked_units == c.FLAG_MAX_CHECKED_UNITS == 8
    assert SubgroupAudit().images_per_value == c.FLAG_IMAGES_PER_VALUE == 12
    assert _default(class_bias.audit_class_bias, "images_per_value") == 12
    assert (Thresholds().flag_threshold, Thresholds().top_n) == (0.5, 20)
    assert risk.L2_CANDIDATES is c.RISK_L2_CANDIDATES and risk.L2_FOLDS == c.RISK_L2_FOLDS == 5
    assert _default(risk.cross_fitted_risk, "folds") == _default(flagging.flag, "folds") == 2
    assert _default(risk.flag_reason, "reliance_threshold") == c.FLAG_REASON_RELIANCE == 0.5
    assert _default(risk.flag_reason, "confidence_threshold") == c.FLAG_REASON_CONFIDENCE
    assert spurious_analysis.REFIT_GRID is c.REMOVER_CV_C_GRID
    assert (spurious_analysis.REFIT.c, spurious_analysis.REFIT.max_iter) == (0.01, 2000)
    assert _default(spurious_analysis.choose_refit, "folds") == c.REMOVER_CV_FOLDS == 5
    for function in (spurious_analysis.spurious_subspace, spurious_analysis.erase_remedy):
        assert (_default(function, "energy"), _default(function, "max_rank")) == (0.9, 16)
    assert (SearchBudget().k, SearchBudget().exemplars_k) == (50, 15)
    assert Refit().erase_energy == c.REMOVER_ERASE_ENERGY == realdata.ERASE_ENERGY == 0.8
    assert _default(exemplars.compute_exemplars, "k") == c.EXEMPLAR_PASS_K == 15
    assert _default(exemplars.compute_exemplars, "quantile") == c.EXEMPLAR_MASK_QUANTILE == 0.99


def test_the_benchmarks_and_the_world_read_the_new_constants() -> None:
    c = evaluation_constants
    assert flagging_bench.QUICK_SEEDS is c.FLAGGING_SEEDS_QUICK
    assert (flagging_bench.FULL.seeds, flagging_bench.FULL.bootstrap) == (3, 1000)
    assert (flagging_bench.QUICK.seeds, flagging_bench.QUICK.bootstrap) == (1, 200)
    assert flagging_bench.LEARNED is c.FLAGGING_LEARNED_DROP
    assert (flagging_bench.AUROC_GAIN, flagging_bench.AUPR_GAIN) == (0.03, 0.08)
    assert flagging_bench.BIASED_SIZE is c.FLAGGING_BIASED_SIZE
    assert flagging_bench.SEEDS_NOTE.endswith("; full runs 3")
    assert realdata.KEEP is c.REALDATA_KEEP and realdata.COPIES is c.REALDATA_COPIES
    assert {name: s.classes for name, s in realdata.SUITES.items()} == {
        "standard": 6,
        "four_digits": 4,
    }
    assert {(s.width, s.colour_weight, s.top) for s in realdata.SUITES.values()} == {(32, 0.1, 16)}
    quick, full = realdata.settings_for(True, "standard"), realdata.settings_for(False, "standard")
    assert (quick.seeds, quick.top, quick.erm_epochs) == (2, 12, 10)
    assert (full.seeds, full.top, full.erm_epochs, full.random_draws, full.copies) == (
        3,
        16,
        20,
        5,
        2,
    )
    assert realdata.GOALS[0] == (
        "maia_select worst-group >= erm_head + 0.25 and balanced >= erm_head + 0.03"
    )
    assert realdata.GOALS[2] == "maia_select and maia_erase balanced >= random_k + 0.10"
    assert realdata.GOALS[4] == "flagging: maia AUROC >= msp + 0.03 and AUPR >= msp + 0.08"
    assert overhead.UNITS is c.OVERHEAD_UNITS and overhead.STUB_DELAY_S is c.OVERHEAD_STUB_DELAY_S
    assert neuron_suite.HARD_NOISE is c.NEURONS_HARD_NOISE == (0.1, 0.25)
    assert neuron_suite.HARD_PER_KIND is c.NEURONS_HARD_PER_KIND_FULL
    assert neuron_suite.DISTRACTORS is c.NEURONS_DISTRACTORS
    assert neuron_suite.DISTRACTOR_RATE is c.NEURONS_DISTRACTOR_RATE
    assert _default(neuron_suite.build_neuron_suite, "noise_std") == c.NEURONS_NOISE_STD == 0.02


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
