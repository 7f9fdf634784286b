"""``lightning-maia bench spurious``: removing spurious features from a head, MAIA's §5.1.

The setting (:mod:`lightning_maia.recipes.shapes_backbone`): a small backbone pretrained on
group-balanced procedural images (shape and background heads; cached after its first run),
frozen, under a fresh linear head trained with Lightning on ``SpuriousShapes`` training data
where the background matches the shape with p=0.95 -- the ERM model. Test: the exactly
group-balanced ``test`` split. Rows, each a head on the ERM model's penultimate features:

- ``erm_head``: the Lightning-trained ERM head itself -- the model a user already has, and
  the comparator of the goals;
- ``erm_all``: every unit, refit; ``l1_top50``: the L1 regression's top 50 units; ``l1_topk``:
  its top ``k``, where ``k`` is the number of units the agent kept; ``random_k``: ``k`` units
  drawn at random from the top 50 (mean and std over 5 draws per seed);
- ``maia``: the units among the top 50 that the agent judged ``core`` in ``spurious_check``
  (they follow the shape with the background held fixed; candidate attribute ``background``),
  or every top unit not judged ``spurious`` (:data:`KEEPS`), refit on the training data plus
  0, 1 or 3 copies of it shifted along the feature changes of the agent's background-only
  edits (:data:`COPIES`, :func:`~lightning_maia.analysis._spurious.counterfactual_augment`);
- ``erasure``: every unit, with the subspace along which the agent's background-only edits
  move the features projected out (its energy share from :data:`ERASE_ENERGIES`);
- ``dfr``: deep feature reweighting as Kirichenko et al. (:func:`~lightning_maia.analysis._dfr.
  dfr_head`): an L1 head on group-balanced subsamples of the held-out split, ``C`` chosen by
  worst-group accuracy on half of it, coefficients averaged over 10 subsamples -- an oracle
  that uses group labels.

Every refit row except ``dfr`` is fit on the unbalanced training data without group labels,
with standardised features and an L2 strength ``C`` from :data:`C_GRID` chosen per row (per
random draw for ``random_k``) by balanced accuracy on the validation split, never the test
split; ``per_seed[i]["c"]`` records the choices. The ``maia`` row's keep policy and copies
and the ``erasure`` row's energy are chosen the same way, jointly with ``C``
(``per_seed[i]["chosen"]``, the validation scores of every choice beside it). Goals compare
``maia`` with ``erm_head``.

Two settings (``--suite``, :data:`SUITES`): ``standard`` (p=0.95, as MAIA's) and ``shortcut``
(p=0.99, where the ERM head fails; ``bench all`` runs both, writing ``spurious.json`` and
``spurious_shortcut.json``). Full mode runs 3 backbone seeds and reports the mean and
``spread_over_seeds`` (std); ``--quick`` uses one.

**Why one file.** One benchmark read top-down: its rows and the choice of their constants on the
validation split belong together, so that no row can be given a protocol the others do not get.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_maia._options import Backends
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.tasks import Agent
from lightning_maia.analysis._dfr import dfr_head
from lightning_maia.analysis._spurious import (
    LinearHead,
    RefitProtocol,
    counterfactual_deltas,
    erase_remedy,
    head_metrics,
    refit_head,
    select_remedy,
)
from lightning_maia.analysis._spurious_options import SearchBudget
from lightning_maia.analysis.spurious_search import find_spurious_units
from lightning_maia.bench._provenance import state_dict_sha256
from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import ERASE_ENERGIES as ERASE_ENERGIES
from lightning_maia.evaluation_constants import (
    REFIT_C_GRID,
    REFIT_COPIES,
    REFIT_COPIES_QUICK,
    REFIT_KEEPS,
    SPURIOUS_ERM_EPOCHS,
    SPURIOUS_ERM_FAILS_BALANCED,
    SPURIOUS_ERM_FAILS_WORST,
    SPURIOUS_EXEMPLARS_K,
    SPURIOUS_GOAL_DFR_TOLERANCE,
    SPURIOUS_GOAL_VS_ERM,
    SPURIOUS_GOAL_VS_ERM_WORST,
    SPURIOUS_GOAL_VS_RANDOM_K,
    SPURIOUS_RANDOM_DRAWS,
    SPURIOUS_SEEDS_FULL,
    SPURIOUS_SEEDS_QUICK,
    SPURIOUS_SPLIT_SIZES,
    SPURIOUS_SUITES,
    SPURIOUS_TOP_UNITS,
)
from lightning_maia.recipes.shapes_backbone import (
    CLASSIFIER_FEATURE_LAYER,
    BackboneConfig,
    SplitFeatures,
    extract_features,
    load_backbone,
    spurious_splits,
    train_erm_classifier,
)

TABLE_KEYS: tuple[str, ...] = (
    "balanced_accuracy",
    "worst_group_accuracy",
    "k",
    "units_judged",
    "seeds",
    "seconds",
)
ROWS: tuple[str, ...] = (
    "erm_head",
    "erm_all",
    "l1_top50",
    "l1_topk",
    "random_k",
    "maia",
    "erasure",
    "dfr",
)
#: Inverse L2 strengths (on standardised features) a refit row may take: every row takes the
#: one with the best balanced accuracy on the validation split, never the test split.
C_GRID: tuple[float, ...] = REFIT_C_GRID
#: Keep policies the ``maia`` row may take (verdicts whose units it keeps): the units that
#: follow the class, as MAIA kept, or every unit not judged spurious; chosen on validation.
KEEPS: tuple[tuple[str, ...], ...] = REFIT_KEEPS
#: Counterfactual copies of every training item (:func:`~lightning_maia.analysis._spurious.
#: counterfactual_augment`) the ``maia`` row may add; chosen on validation (0: plain select).
COPIES: tuple[int, ...] = REFIT_COPIES
#: Settings (``--suite``): the background matches the shape in training with probability
#: ``p``. ``standard`` is MAIA's; at ``shortcut`` (1 in 100 training items off the shortcut)
#: the Lightning-trained ERM head fails (balanced accuracy 0.67, worst group 0 on seed 0).
SUITES: dict[str, float] = dict(SPURIOUS_SUITES)
# ERASE_ENERGIES (the ``erasure`` row's energy shares) comes from evaluation_constants as is.
_SPLIT_SIZES = dict(SPURIOUS_SPLIT_SIZES)

AGENTS: dict[str, Callable[[int], Agent]] = {
    "scientist": lambda seed: ScientistAgent(seed=seed),
}


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run."""

    seeds: int
    train: int = _SPLIT_SIZES["train"]
    val: int = _SPLIT_SIZES["val"]
    test: int = _SPLIT_SIZES["test"]
    holdout: int = _SPLIT_SIZES["holdout"]
    #: Units the L1 regression selects and the agent judges.
    top: int = SPURIOUS_TOP_UNITS
    random_draws: int = SPURIOUS_RANDOM_DRAWS
    erm_epochs: int = SPURIOUS_ERM_EPOCHS
    exemplars_k: int = SPURIOUS_EXEMPLARS_K
    #: Probability that a training item lies on its class's background.
    p: float = SUITES["standard"]
    #: Counterfactual copies the ``maia`` row chooses among on validation.
    copies: tuple[int, ...] = COPIES
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


FULL = Settings(seeds=SPURIOUS_SEEDS_FULL)
# Quick drops the 1-copy choice: its refits are a tenth of the run, and 0 or 3 bracket it.
QUICK = Settings(seeds=SPURIOUS_SEEDS_QUICK, copies=REFIT_COPIES_QUICK)


def run(
    quick: bool = False, seed: int = 0, agent: str = "scientist", suite: str = "standard"
) -> dict[str, Any]:
    """Every row on every backbone seed of the setting ``suite``; the figures averaged over
    seeds."""
    if agent not in AGENTS:
        raise bad_option("agent", ", ".join(AGENTS), agent)
    if suite not in SUITES:
        raise bad_option("suite", ", ".join(SUITES), suite)
    started = time.perf_counter()
    settings = replace(QUICK if quick else FULL, p=SUITES[suite])
    seeds = [seed + offset for offset in range(settings.seeds)]
    results = [run_seed(s, settings, AGENTS[agent](s)) for s in seeds]
    balanced: dict[str, Any] = {}
    worst: dict[str, Any] = {}
    spread: dict[str, dict[str, float]] = {}
    for row in ROWS:
        if row == "random_k":
            draws = [m for r in results for m in r["random_draws"]]
            balanced[row] = _mean_std([m["balanced_accuracy"] for m in draws])
            worst[row] = _mean_std([m["worst_group_accuracy"] for m in draws])
            continue
        per_seed = {
            key: [r["rows"][row][key] for r in results]
            for key in ("balanced_accuracy", "worst_group_accuracy")
        }
        balanced[row] = _mean(per_seed["balanced_accuracy"])
        worst[row] = _mean(per_seed["worst_group_accuracy"])
        spread[row] = {key: float(np.std(values)) for key, values in per_seed.items()}
    maia, maia_worst = balanced["maia"], worst["maia"]
    # The comparator is the head the user already has: the Lightning-trained ERM head.
    erm_fails = bool(
        balanced["erm_head"] <= SPURIOUS_ERM_FAILS_BALANCED
        or worst["erm_head"] <= SPURIOUS_ERM_FAILS_WORST
    )
    goals = {
        "erm_head_fails": erm_fails,
        "maia_vs_erm_head": maia - balanced["erm_head"],
        "maia_vs_erm_head_worst_group": maia_worst - worst["erm_head"],
        "maia_vs_random_k": maia - balanced["random_k"]["mean"],
        "maia_vs_dfr": maia - balanced["dfr"],
        "maia_at_least_erm_head": bool(
            maia >= balanced["erm_head"] and maia_worst >= worst["erm_head"]
        ),
        # Stated for the setting where the ERM head fails (``--suite shortcut``).
        "met_where_erm_fails": bool(
            erm_fails
            and maia >= balanced["erm_head"] + SPURIOUS_GOAL_VS_ERM
            and maia_worst >= worst["erm_head"] + SPURIOUS_GOAL_VS_ERM_WORST
            and maia >= balanced["random_k"]["mean"] + SPURIOUS_GOAL_VS_RANDOM_K
            and maia >= balanced["dfr"] - SPURIOUS_GOAL_DFR_TOLERANCE
        ),
    }
    return {
        "balanced_accuracy": balanced,
        "worst_group_accuracy": worst,
        "k": _mean([r["k"] for r in results]),
        "units_judged": int(sum(r["units_judged"] for r in results)),
        "seeds": seeds,
        "backbone_sha256": [r["backbone_sha256"] for r in results],
        "seconds": time.perf_counter() - started,
        "spread_over_seeds": spread,
        "goals": goals,
        "per_seed": [{key: r[key] for key in r if key != "random_draws"} for r in results],
        "protocol": {
            "c_grid": list(C_GRID),
            "c_chosen_on": "validation balanced accuracy (dfr: held-out worst-group accuracy)",
            "keep_choices": [list(keep) for keep in KEEPS],
            "copies_choices": list(settings.copies),
            "erase_energy_choices": list(ERASE_ENERGIES),
            "chosen_on": "validation balanced accuracy (class labels only)",
            "train_shortcut_p": settings.p,
        },
        "suite": suite,
        "agent": agent,
        "quick": quick,
    }


def run_seed(seed: int, settings: Settings, agent: Agent) -> dict[str, Any]:
    """All rows on the backbone of ``seed``: test figures, timings, verdict counts."""
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    backbone = load_backbone(seed, settings.backbone)
    timings["backbone"] = time.perf_counter() - tic
    splits = spurious_splits(
        seed,
        train=settings.train,
        val=settings.val,
        test=settings.test,
        holdout=settings.holdout,
        p=settings.p,
    )
    tic = time.perf_counter()
    features = {name: extract_features(backbone, data) for name, data in splits.items()}
    timings["features"] = time.perf_counter() - tic
    train, test = features["train"], features["test"]
    class_names = list(splits["train"].class_names)
    tic = time.perf_counter()
    model = train_erm_classifier(
        backbone,
        splits["train"],
        features=train,
        class_names=class_names,
        epochs=settings.erm_epochs,
        seed=seed,
    )
    timings["erm"] = time.perf_counter() - tic
    with torch.no_grad():
        erm_head = head_metrics(model.head(test.features), test.labels, test.groups)

    tic = time.perf_counter()
    # The remover's own search: the L1 ranking on the features the head reads, then the agent.
    found = find_spurious_units(
        model,
        splits["train"],
        class_names=class_names,
        candidate_attributes=("background",),
        feature_layer=CLASSIFIER_FEATURE_LAYER,
        backends=Backends(agent=agent),
        budget=SearchBudget(k=settings.top, exemplars_k=settings.exemplars_k),
        seed=seed,
        progress=True,
    )
    selection, judgements = found.selection, found.judgements
    timings["agent"] = time.perf_counter() - tic
    deltas = counterfactual_deltas(
        model, CLASSIFIER_FEATURE_LAYER, [j.toolbox for j in judgements if j.toolbox is not None]
    )
    tic = time.perf_counter()
    val = features["val"]
    # MAIA's row: the keep policy and the counterfactual copies (with C) best on validation.
    maia_choices: dict[tuple[tuple[str, ...], int], tuple[LinearHead, float, float]] = {}
    for keep in KEEPS:
        keep_units = [j.unit.index for j in judgements if j.verdict in keep]
        for copies in settings.copies if deltas.shape[0] else (0,):
            select = partial(
                _select, train, keep_units or selection.units[:1], deltas, copies, seed
            )
            head, c = _fit_on_validation(select, val)
            maia_choices[(keep, copies)] = (head, c, _evaluate(head, val)["balanced_accuracy"])
    keep_chosen, copies_chosen = max(maia_choices, key=lambda key: maia_choices[key][2])
    kept = [j.unit.index for j in judgements if j.verdict in keep_chosen]
    k = len(kept)
    fits: dict[str, Callable[[RefitProtocol], LinearHead]] = {
        "erm_all": lambda p: refit_head(train.features, train.labels, protocol=p),
        "l1_top50": lambda p: refit_head(train.features, train.labels, selection.units, protocol=p),
        "l1_topk": lambda p: refit_head(
            train.features, train.labels, selection.units[: max(k, 1)], protocol=p
        ),
    }
    heads: dict[str, LinearHead] = {}
    chosen_c: dict[str, float] = {}
    for name, fit in fits.items():
        heads[name], chosen_c[name] = _fit_on_validation(fit, val)
    heads["maia"], chosen_c["maia"], _ = maia_choices[(keep_chosen, copies_chosen)]
    erase_choices = {
        energy: _fit_on_validation(partial(_erase, train, deltas, energy), val)
        for energy in (ERASE_ENERGIES if deltas.shape[0] else ())
    }
    validation_erase = {
        str(energy): _evaluate(head, val)["balanced_accuracy"]
        for energy, (head, _) in erase_choices.items()
    }
    energy_chosen = max(erase_choices, key=lambda e: validation_erase[str(e)], default=None)
    if energy_chosen is not None:
        heads["erasure"], chosen_c["erasure"] = erase_choices[energy_chosen]
    else:  # no edit changed only the background: nothing to erase, every unit refit
        heads["erasure"], chosen_c["erasure"] = heads["erm_all"], chosen_c["erm_all"]
    holdout = features["holdout"]
    assert holdout.groups is not None
    dfr = dfr_head(holdout.features, holdout.labels, holdout.groups, seed=seed)
    heads["dfr"] = dfr.head
    chosen_c["dfr"] = dfr.c
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(settings.random_draws):
        units: list[int] = rng.choice(selection.units, size=max(k, 1), replace=False).tolist()
        head, _ = _fit_on_validation(partial(_refit_units, train, units), val)
        draws.append(_evaluate(head, test))
    rows = {name: _evaluate(head, test) for name, head in heads.items()}
    rows["erm_head"] = {key: erm_head[key] for key in ("balanced_accuracy", "worst_group_accuracy")}
    rows["random_k"] = {
        "balanced_accuracy": _mean([d["balanced_accuracy"] for d in draws]),
        "worst_group_accuracy": _mean([d["worst_group_accuracy"] for d in draws]),
    }
    validation = {name: _evaluate(head, val) for name, head in heads.items()}
    timings["refits"] = time.perf_counter() - tic
    verdicts: dict[str, int] = {}
    for judgement in judgements:
        verdicts[judgement.verdict] = verdicts.get(judgement.verdict, 0) + 1
    return {
        "seed": seed,
        "rows": rows,
        "validation": validation,
        "validation_erase": validation_erase,
        "validation_maia": {
            f"{'+'.join(keep)}/copies={copies}": score
            for (keep, copies), (_, _, score) in maia_choices.items()
        },
        "chosen": {
            "maia_keep": list(keep_chosen),
            "maia_copies": copies_chosen,
            "erase_energy": energy_chosen,
        },
        "random_draws": draws,
        "erm_head": erm_head,
        "c": chosen_c,
        "dfr_tuning_worst_group": {str(c): v for c, v in dfr.tuning_worst_group.items()},
        "k": k,
        "kept_units": kept,
        "units_judged": sum(j.verdict != "failed" for j in judgements),
        "verdicts": verdicts,
        "edit_pairs": int(deltas.shape[0]),
        "pretraining": dict(backbone.pretraining_metrics),
        "backbone_sha256": state_dict_sha256(backbone),
        "timings": timings,
    }


def _select(
    train: SplitFeatures,
    units: list[int],
    deltas: Tensor,
    copies: int,
    seed: int,
    protocol: RefitProtocol,
) -> LinearHead:
    return select_remedy(
        train.features,
        train.labels,
        units,
        protocol=protocol,
        deltas=deltas if copies else None,
        copies=copies,
        seed=seed,
    )


def _erase(
    train: SplitFeatures, deltas: Tensor, energy: float, protocol: RefitProtocol
) -> LinearHead:
    return erase_remedy(train.features, train.labels, deltas, energy=energy, protocol=protocol)


def _refit_units(train: SplitFeatures, units: list[int], protocol: RefitProtocol) -> LinearHead:
    return refit_head(train.features, train.labels, units, protocol=protocol)


def _fit_on_validation(
    fit: Callable[[RefitProtocol], LinearHead], val: SplitFeatures
) -> tuple[LinearHead, float]:
    """The head of the :data:`C_GRID` value with the best balanced accuracy on ``val``."""
    best: tuple[float, float, LinearHead] | None = None
    for c in C_GRID:
        head = fit(RefitProtocol(c=c))
        score = _evaluate(head, val)["balanced_accuracy"]
        if best is None or score > best[0]:
            best = (score, c, head)
    assert best is not None
    return best[2], best[1]


def _evaluate(head: LinearHead, split: SplitFeatures) -> dict[str, float]:
    return head_metrics(head.logits(split.features), split.labels, split.groups)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}
