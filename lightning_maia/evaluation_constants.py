"""The numbers that decide evaluation outcomes, in one place, each with where it comes from.

Verdict thresholds of the offline scientist, score cut-offs, the baselines' IoU settings,
benchmark sizes, seeds, regularisation grids, shortcut rates and goals live here as named
constants; the modules that use them import them from here (under their old local names, so
``ScientistAgent``'s ``HIT_LEVEL`` is still ``scientist.HIT_LEVEL``). Every benchmark JSON
records them all under ``constants`` (:func:`as_dict`, through
:func:`lightning_maia.bench._provenance.with_provenance`), so a figure can be read against the
protocol that produced it.

Provenance, as each comment states it:

- *paper*: fixed by the paper the method comes from (MAIA, Rott Shaham et al. 2024; NetDissect,
  Bau et al. 2017; Compositional explanations, Mu & Andreas 2020; DFR, Kirichenko et al. 2023).
- *issue*: fixed by the benchmark's goal as the project's issue states it.
- *validation*: the value a benchmark chooses at run time from a grid on a validation split
  (the grid is here; the choice is in the JSON).
- *design default*: set when the code was written, not tuned on any recorded split; retuning
  one must use a validation split (for the neurons benchmark, seed
  ``+ NEURONS_VALIDATION_SEED_OFFSET``), never the test suite.

Nothing here imports from the package: every layer may read it.

>>> as_dict()["SCIENTIST_HIT_LEVEL"], as_dict()["DFR_C_GRID"][:2]
(0.5, [1.0, 0.7])
"""

from __future__ import annotations

from typing import Any

# -- offline scientist: verdicts on one unit (agents/scientist*.py) ------------------------------

#: On the 0 (neutral) .. 1 (exemplar) activation scale, an image at least this active is a hit.
#: Design default (first scientist, 70111db): the midpoint of the scale.
SCIENTIST_HIT_LEVEL = 0.5
#: ... and one below this is inactive. Design default: half the hit level, leaving a dead band.
SCIENTIST_MISS_LEVEL = 0.25
#: The neutral level of the scale is this quantile of the activations on neutral images.
#: Design default: a low quartile, robust to a neutral image that happens to hold the concept.
SCIENTIST_NEUTRAL_QUANTILE = 0.25
#: A concept becomes a candidate hypothesis when its exemplar-enrichment score is at least this
#: ... Design default.
SCIENTIST_CANDIDATE_MIN_SCORE = 0.2
#: ... and it is seen in at least this share of the exemplars' highlighted regions. Design default.
SCIENTIST_CANDIDATE_MIN_FREQUENCY = 0.25
#: Images the scientist generates per experiment. Design default (MAIA's experiments use a few
#: images per prompt; 8 keeps a unit under a second on the procedural world).
SCIENTIST_IMAGES_PER_EXPERIMENT = 8
#: Neutral images that set the bottom of the activation scale. Design default.
SCIENTIST_NEUTRAL_IMAGES = 32
#: Hypotheses tested per unit, and rounds of refinement. Design defaults.
SCIENTIST_MAX_CANDIDATES = 4
SCIENTIST_MAX_ROUNDS = 3

# -- offline scientist: accepting a hypothesis (agents/_scientist_hypotheses.py) ---------------

#: What a pair hypothesis must gain in AUROC over a single one to be preferred. Design default:
#: an Occam margin, so noise does not turn a single concept into an OR / AND.
HYPOTHESIS_COMPLEXITY_PENALTY = 0.02
#: A hypothesis is accepted when its predicted-positive images beat the rest by this share of
#: the exemplar level (effect size) ... Design default.
HYPOTHESIS_MIN_EFFECT = 0.3
#: ... and rank above them this reliably (AUROC). Design default.
HYPOTHESIS_MIN_AUROC = 0.8
#: From exemplars alone: OR when the top concept misses at least this share of the exemplars.
#: Design default (a fifth).
HYPOTHESIS_OR_MISSING_SHARE = 0.2
#: ... AND when a second concept is this frequent in the exemplars ...
HYPOTHESIS_AND_MIN_FREQUENCY = 0.8
#: ... and this enriched over the neutral images. Design defaults.
HYPOTHESIS_AND_MIN_SCORE = 0.7
#: A concept is shared by missed exemplars when at least this share of them shows it.
HYPOTHESIS_SHARED_SHARE = 0.5
#: A concept distinguishes right from wrong when its frequency differs by at least this.
HYPOTHESIS_DISTINGUISHING_LIFT = 0.5

# -- offline scientist: audits (agents/_scientist_audits.py) ----------------------------------

#: A main effect at least this large (share of the grid's range) is one the unit follows.
#: Design default.
AUDIT_FOLLOWS = 0.3
#: ... and it must be this many times the other factor's effect to decide the verdict.
#: Design default.
AUDIT_DOMINANCE = 1.5
#: Most classes and attribute values one grid crosses. Design default (cost bound).
AUDIT_MAX_LEVELS = 6
#: Class-bias audit: the class stands out ("unbiased", not "unclear") when its mean score beats
#: the other classes' by this share of its own. Design default.
AUDIT_CLASS_SEPARATION = 0.1
#: A subgroup's values are low when the largest gap between sorted value means is at least this
#: share of how far the class stands out ... Design default.
AUDIT_LOW_GAP_SHARE = 0.2
#: ... and this many standard errors of the noise. Design default (a 3-sigma rule).
AUDIT_LOW_GAP_NOISE = 3.0

# -- scoring descriptions (analysis/_scoring.py, analysis/compositional.py) -------------------

#: Images per prompt group (positive and neutral) in MAIA's predictive score. Design default.
PREDICTIVE_IMAGES = 16
#: Offset of the independent prompt writer's seed from the scoring seed: another stream of
#: draws. Design default (a prime, so it collides with no seed offset used elsewhere).
INDEPENDENT_SEED_OFFSET = 7919
#: Beam width and longest formula of the compositional search (Mu & Andreas 2020's beam search
#: over formulas; the width and length here are design defaults, not tuned).
COMPOSITIONAL_BEAM = 5
COMPOSITIONAL_MAX_LENGTH = 3
#: Default IoU gain a longer formula must bring over a shorter one (the neurons benchmark
#: chooses its own from :data:`NEURONS_MIN_GAINS` on validation). Design default.
COMPOSITIONAL_MIN_GAIN = 0.01

# -- DFR baseline (analysis/_dfr.py) -----------------------------------------------------------

#: Kirichenko et al. 2023 (DFR): the paper's grid of inverse L1 strengths; C is chosen by
#: worst-group accuracy on half the held-out split.
DFR_C_GRID: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
#: Balanced subsamples whose fits are averaged. Kirichenko et al. use 10 for tuning and 20 to fit;
#: here 10 for both (cost on two CPU cores).
DFR_SUBSAMPLES = 10

# -- bench neurons (bench/_neurons.py) ---------------------------------------------------------

#: (mono, or, and) neurons and ShapesWorld probe images: MAIA's synthetic-neuron suite has 50
#: single-concept, 25 OR and 25 AND neurons (paper); 2000 probe images is a design default.
NEURONS_FULL: tuple[int, int, int, int] = (50, 25, 25, 2000)
#: ``--quick``: a fifth of the neurons, half the probe images (CI budget).
NEURONS_QUICK: tuple[int, int, int, int] = (10, 5, 5, 1000)
#: Out-of-grammar neurons per hard kind, full and quick. Design defaults (cost).
NEURONS_HARD_PER_KIND_FULL = 3
NEURONS_HARD_PER_KIND_QUICK = 1
#: Exemplars per unit: MAIA shows 15 dataset exemplars.
NEURONS_EXEMPLARS_K = 15
#: The relative unit-mask threshold: this share of the unit's mean exemplar activation. Fixed in
#: advance, not tuned (rare concepts cover far less than 1% of cells, which a quantile cannot
#: isolate). The quantile threshold is the exemplar pass's 0.99 (lightning_maia/exemplars.py),
#: where NetDissect (Bau et al. 2017) uses the top 0.5% (0.995) and labels at IoU >= 0.04; the
#: baseline here takes the best-IoU concept without a cut-off, as MAIA's comparison does.
NEURONS_RELATIVE_THRESHOLD = 0.5
#: A concept covers a map cell when at least this share of the cell's pixels shows it. Design
#: default (majority).
NEURONS_CELL_COVERAGE = 0.5
#: ``min_gain`` values the compositional baseline may take; the choice is made on a validation
#: suite (seed + :data:`NEURONS_VALIDATION_SEED_OFFSET`, quick size) and recorded in the JSON.
NEURONS_MIN_GAINS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1)
#: The validation suite's seed is the test seed plus this (another suite, never the test one).
NEURONS_VALIDATION_SEED_OFFSET = 1000
#: Issue goal: the agent's accuracy on each kind of the standard suite.
NEURONS_STANDARD_GOAL = 0.95
#: Issue goals on the hard suite: accuracy per kind ...
NEURONS_HARD_GOALS: tuple[tuple[str, float], ...] = (("mono", 0.90), ("or", 0.80), ("and", 0.80))
#: ... and the margin over the stronger compositional baseline on OR and AND.
NEURONS_HARD_MARGIN = 0.15

# -- bench spurious (bench/_spurious.py) -------------------------------------------------------

#: Inverse L2 strengths (on standardised features) a refit row may take; each row takes the one
#: with the best balanced accuracy on the validation split. Design grid (half-decades).
REFIT_C_GRID: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
#: Keep policies the ``maia`` row may take: the units that follow the class (as MAIA kept), or
#: every unit not judged spurious; chosen on validation.
REFIT_KEEPS: tuple[tuple[str, ...], ...] = (("core",), ("core", "unclear"))
#: Counterfactual copies per training item the ``maia`` row may add; chosen on validation.
REFIT_COPIES: tuple[int, ...] = (0, 1, 3)
#: ``--quick`` drops the 1-copy choice: its refits are a tenth of the run; 0 and 3 bracket it.
REFIT_COPIES_QUICK: tuple[int, ...] = (0, 3)
#: Shares of the edits' feature-change energy the erased subspace may explain; the ``erasure``
#: row takes the one (with its C) that scores best on validation.
ERASE_ENERGIES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
#: Shortcut rates (``--suite``): the background matches the shape in training with probability
#: p. ``standard`` 0.95 is MAIA's (paper, §5.1); ``shortcut`` 0.99 is where the Lightning-trained
#: ERM head fails (balanced accuracy 0.67, worst group 0, measured on seed 0).
SPURIOUS_SUITES: tuple[tuple[str, float], ...] = (("standard", 0.95), ("shortcut", 0.99))
#: Backbone seeds (full, quick). Design defaults (several seeds, within the CPU budget).
SPURIOUS_SEEDS_FULL = 3
SPURIOUS_SEEDS_QUICK = 1
#: Items per split: train, validation, test, holdout. Design defaults.
SPURIOUS_SPLIT_SIZES: tuple[tuple[str, int], ...] = (
    ("train", 3000),
    ("val", 800),
    ("test", 1600),
    ("holdout", 1600),
)
#: Units the L1 regression selects and the agent judges (the ``l1_top50`` row). Design default
#: after MAIA §5.1, whose agent judges the units an L1 regression selects.
SPURIOUS_TOP_UNITS = 50
#: Random-k draws of the ``random_k`` row. Design default.
SPURIOUS_RANDOM_DRAWS = 5
#: Epochs of the ERM head and exemplars per unit. Design defaults (exemplars as MAIA: 15).
SPURIOUS_ERM_EPOCHS = 10
SPURIOUS_EXEMPLARS_K = 15
#: The ERM head fails when its balanced accuracy is at most this ... (issue)
SPURIOUS_ERM_FAILS_BALANCED = 0.85
#: ... or its worst-group accuracy at most this (issue).
SPURIOUS_ERM_FAILS_WORST = 0.5
#: Issue goals where the ERM head fails: maia beats it by these margins (balanced, worst group),
#: random-k by this, and stays within this of DFR.
SPURIOUS_GOAL_VS_ERM = 0.10
SPURIOUS_GOAL_VS_ERM_WORST = 0.25
SPURIOUS_GOAL_VS_RANDOM_K = 0.15
SPURIOUS_GOAL_DFR_TOLERANCE = 0.05

# -- bench faults (bench/_faults.py) ------------------------------------------------------------

#: Issue bounds on a fit whose agent fails: wall seconds, extra peak RSS (MB), artifact bytes per
#: unit.
FAULTS_BOUNDS: tuple[tuple[str, float], ...] = (
    ("wall_s", 90.0),
    ("extra_peak_mb", 500.0),
    ("artifact_bytes_per_unit", 1_000_000),
)
#: Issue bound: seconds from SIGTERM (sent while the agent runs an endless program) to the exit.
FAULTS_SIGTERM_EXIT_S = 15.0

# -- timing benchmarks: sizes (bench/_exemplars.py, bench/_tools.py, bench/_world.py) -------------

#: Exemplar pass: images (full, quick), passes timed, batch size, k, probed channels.
EXEMPLARS_IMAGES_FULL = 2000
EXEMPLARS_IMAGES_QUICK = 512
EXEMPLARS_REPEATS = 3
EXEMPLARS_BATCH_SIZE = 64
EXEMPLARS_K = 15
EXEMPLARS_UNITS = 512
#: Tool timings: calls timed (full, quick; the median is reported), exemplar images.
TOOLS_REPEATS_FULL = 21
TOOLS_REPEATS_QUICK = 5
TOOLS_EXEMPLAR_IMAGES = 256
#: Rendering throughput: passes timed, scenes at 64 px and 224 px (full, quick), objects per scene.
WORLD_REPEATS = 3
WORLD_SCENES_FULL: tuple[int, int] = (2000, 500)
WORLD_SCENES_QUICK: tuple[int, int] = (200, 50)
WORLD_MAX_OBJECTS = 3


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    return value


def as_dict() -> dict[str, Any]:
    """Every constant of this module by name, JSON-ready (tuples as lists), in file order."""
    return {
        name: _json_value(value)
        for name, value in globals().items()
        if name.isupper() and not name.startswith("_")
    }
