"""``lightning-maia bench flagging``: flagging likely misclassifications, and the class-bias audit.

Two parts, one command:

1. **Error detection**, on each of ``sizes.seeds`` seeds (``seed``, ``seed + 1``, ...). The ERM
   model of the spurious benchmark (its backbone, splits, seed, ERM epochs and exemplars: the
   frozen pretrained shapes backbone, a linear head trained with Lightning on ``SpuriousShapes``
   with p=0.95) is evaluated on the exactly balanced ``test`` split. The agent's
   ``spurious_check`` (the remover's judge, exemplars from the training data) judges the head's
   most influential units (all 128 in full mode, 48 with ``--quick``). Every test input gets the
   baseline risks (MSP, margin, energy, entropy) and the MAIA-informed risk of
   :class:`MisclassificationFlagger`: the counterfactual risk (the predicted class's probability
   lost when the units judged spurious are mean-ablated to their ``holdout`` means), the edit
   counterfactual risk (the same with the directions the judged units' background-only edits
   move the features along ablated too), reliance on those units and membership in the subgroups
   the class-bias audit of the four class logits found, combined by a logistic regression fitted
   on the separate, independent ``holdout`` split, its L2 strength chosen by cross-validated
   AUROC on that split (the test split is only scored; every constant is the holdout's).
   Subgroup membership uses only what the audit observes at test time: the class the model
   *predicts* and the input's other attributes (the background, ...) as a describer reads them;
   never the true class or shape. Figures: ``auroc`` and ``aupr_error`` (errors as positives),
   each a dict over ``msp``, ``margin``, ``energy``, ``entropy``, ``maia``, the mean over seeds;
   ``maia_minus_msp`` the mean gains; ``error_detection.per_seed`` each seed's figures with
   bootstrap 95% intervals (inputs resampled ``sizes.bootstrap`` times, per seed; the gain over
   MSP on the same resamples), accuracy, the units and subgroups, the fitted weights, and
   ablations (fewer features; reliance on the spurious units among the remover's l1 top 50 only,
   as the spurious benchmark's remover judges them).
2. **Planted subgroups.** A small CNN is trained from scratch with Lightning on 64 px
   ``BiasedShapes`` (circles only red, squares only on snow, triangles only on water, stars
   only large in train; crosses and hearts unbiased); the class-bias audit runs on each class
   probability. ``bias_recovery`` is the fraction of planted subgroups reported with the right
   attribute; ``bias_false_positives`` counts, per class, the reported subgroups that were not
   planted and score no lower than the class's average on the test split. Whether the model
   took each planted shortcut at all is measured on the val split
   (``class_bias.planted_score_drop_val``; ``bias_recovery_learned`` counts only those): a
   shortcut the model did not take leaves no weak subgroup for any audit to find.

Goals (means over seeds): ``auroc.maia >= auroc.msp + 0.03`` and ``aupr_error.maia >=
aupr_error.msp + 0.08``; ``bias_recovery >= 0.9`` with at most one false positive per class
(part 2 runs on the first seed). ``--quick`` runs fewer seeds, judges fewer units, draws fewer
bootstrap resamples and trains the CNN on fewer images; the backbones are the spurious
benchmark's (shipped for seeds 0-2, else pretrained on first use, counted in the time).

**Why one file.** One command with two parts that share its sizes, seeds and the JSON they
write.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_auroc

from lightning_maia._options import Backends
from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.analysis._class_bias import (
    audit_class_bias,
    check_subgroups,
    dataset_concepts,
    false_positives_per_class,
    planted_recovery,
    planted_score_drop,
    reported_subgroups,
)
from lightning_maia.analysis._flagging_evidence import (
    ablation_reference,
    collect_outputs,
    item_ids,
    unit_words,
)
from lightning_maia.analysis._risk import (
    SCORES,
    baseline_risks,
    counterfactual_risk,
    error_detection_metrics,
    fit_risk_combiner,
    spurious_reliance,
    unit_contributions,
)
from lightning_maia.analysis._spurious import judge_units, judged_directions, l1_top_units
from lightning_maia.analysis.flagging import FlaggingResult, SubgroupAudit, flag
from lightning_maia.bench._provenance import state_dict_sha256
from lightning_maia.bench._spurious import FULL as SPURIOUS_FULL
from lightning_maia.bench._spurious import Settings as SpuriousSettings
from lightning_maia.errors import bad_option
from lightning_maia.evaluation_constants import (
    FLAGGING_BIASED_SIZE,
    FLAGGING_BOOTSTRAP_FULL,
    FLAGGING_BOOTSTRAP_QUICK,
    FLAGGING_GOAL_AUPR_GAIN,
    FLAGGING_GOAL_AUROC_GAIN,
    FLAGGING_GOAL_BIAS_RECOVERY,
    FLAGGING_GOAL_FALSE_POSITIVES,
    FLAGGING_LEARNED_DROP,
    FLAGGING_SEEDS_FULL,
    FLAGGING_SEEDS_QUICK,
)
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.recipes.shapes_backbone import (
    CLASSIFIER_FEATURE_LAYER,
    RenderedDataset,
    extract_features,
    load_backbone,
    spurious_splits,
    train_erm_classifier,
)
from lightning_maia.world._datasets import SpuriousShapes
from lightning_maia.world._subgroups import BIASABLE_ATTRIBUTES, BiasedShapes

TABLE_KEYS: tuple[str, ...] = (
    "auroc",
    "aupr_error",
    "bias_recovery",
    "bias_false_positives",
    "goals",
    "seconds",
)

AGENTS = ("scientist",)
#: Seeds of ``--quick`` (two took 192 s on an idle machine, past its 180 s budget), and what
#: the JSON says of it.
QUICK_SEEDS = FLAGGING_SEEDS_QUICK
SEEDS_NOTE = (
    f"--quick runs {QUICK_SEEDS} seed(s) of part 1 to stay in its time budget; "
    f"full runs {FLAGGING_SEEDS_FULL}"
)
#: Where the subgroup membership of each test input comes from (said in the JSON).
SUBGROUP_CONCEPTS = (
    "the predicted class, and the attributes other than the shape (background, colour, size, "
    "texture) the procedural describer reads from each test image; never the true class or shape"
)


@dataclass(frozen=True)
class Sizes:
    """What one mode runs beyond the spurious benchmark's setting."""

    #: The head's most influential units the agent judges (all 128 in full mode).
    checked_units: int
    #: BiasedShapes images to train the small CNN on, and to test (and validate) with.
    biased_train: int
    biased_test: int
    #: Epochs of the small CNN.
    epochs: int
    #: Seeds of part 1 (``seed``, ``seed + 1``, ...), and bootstrap resamples per seed.
    seeds: int = FLAGGING_SEEDS_FULL
    bootstrap: int = FLAGGING_BOOTSTRAP_FULL


FULL = Sizes(checked_units=128, biased_train=3000, biased_test=1800, epochs=8)
QUICK = Sizes(checked_units=48, biased_train=1500, biased_test=900, epochs=6, seeds=QUICK_SEEDS,
              bootstrap=FLAGGING_BOOTSTRAP_QUICK)  # fmt: skip
#: The spurious benchmark's setting: splits, ERM epochs, l1 selection, exemplars, backbone.
SPURIOUS: SpuriousSettings = SPURIOUS_FULL
#: A planted shortcut the model scores at least this much lower (relative) was learned.
LEARNED = FLAGGING_LEARNED_DROP
#: The goals: MAIA's mean gain over MSP in AUROC and in AUPR (errors as positives).
AUROC_GAIN, AUPR_GAIN = FLAGGING_GOAL_AUROC_GAIN, FLAGGING_GOAL_AUPR_GAIN
#: Side of the BiasedShapes images the small CNN of part 2 sees.
BIASED_SIZE = FLAGGING_BIASED_SIZE


def run(quick: bool = False, seed: int = 0, agent: str = "scientist") -> dict[str, Any]:
    """Both parts; the figures as a JSON-ready dict (see the module docstring)."""
    if agent not in AGENTS:
        raise bad_option("agent", ", ".join(AGENTS), agent)
    threads = torch.get_num_threads()
    # Small batches of small images: one thread beats several fighting over two cores.
    torch.set_num_threads(1)
    try:
        return benchmark(QUICK if quick else FULL, seed, quick=quick)
    finally:
        torch.set_num_threads(threads)


def benchmark(sizes: Sizes, seed: int = 0, *, quick: bool = False) -> dict[str, Any]:
    """Both parts at the given sizes (see the module docstring)."""
    started = time.perf_counter()
    seeds = [seed + i for i in range(sizes.seeds)]
    runs = [error_detection(sizes, s, SPURIOUS) for s in seeds]
    bias = planted_subgroups(sizes, seed)
    means = {
        kind: {name: float(np.mean([r[kind][name] for r in runs])) for name in SCORES}
        for kind in ("auroc", "aupr_error")
    }
    gains = {kind: means[kind]["maia"] - means[kind]["msp"] for kind in means}
    figures: dict[str, Any] = {
        **means,
        "maia_minus_msp": gains,
        "bias_recovery": bias.pop("bias_recovery"),
        "bias_false_positives": bias.pop("bias_false_positives"),
    }
    fp = figures["bias_false_positives"]
    figures["goals"] = {
        f"maia_auroc_beats_msp_by_{AUROC_GAIN}": bool(gains["auroc"] >= AUROC_GAIN),
        f"maia_aupr_beats_msp_by_{AUPR_GAIN}": bool(gains["aupr_error"] >= AUPR_GAIN),
        f"bias_recovery_{FLAGGING_GOAL_BIAS_RECOVERY}": bool(
            figures["bias_recovery"] >= FLAGGING_GOAL_BIAS_RECOVERY
        ),
        f"false_positives_per_class_at_most_{FLAGGING_GOAL_FALSE_POSITIVES}": bool(
            max(fp.values(), default=0) <= FLAGGING_GOAL_FALSE_POSITIVES
        ),
    }
    scalars = ("test_accuracy", "worst_group_accuracy", "error_rate", "units_judged")
    figures.update(
        {
            "error_detection": {
                **{key: float(np.mean([r[key] for r in runs])) for key in scalars},
                "per_seed": runs,
            },
            "class_bias": bias,
            "sizes": asdict(sizes),
            "seeds": seeds,
            "seeds_note": SEEDS_NOTE if quick else "",
            "backbone_sha256": {str(r["seed"]): r["backbone_sha256"] for r in runs},
            "quick": quick,
            "seconds": time.perf_counter() - started,
        }
    )
    return figures


def bootstrap_intervals(
    scores: dict[str, Tensor], errors: Tensor, resamples: int, seed: int
) -> dict[str, Any]:
    """95% percentile intervals of each score's AUROC and AUPR over inputs resampled with
    replacement, and of MAIA's gain over MSP on the same resamples (torchmetrics for each)."""
    generator = torch.Generator().manual_seed(seed)
    n = int(errors.numel())
    drawn: dict[str, dict[str, list[float]]] = {"auroc": {}, "aupr_error": {}}
    for _ in range(resamples):
        index = torch.randint(n, (n,), generator=generator)
        picked = errors[index]
        if not 0 < int(picked.sum()) < n:
            continue  # a resample without errors (or without correct ones) has no AUROC
        metrics = error_detection_metrics({k: v[index] for k, v in scores.items()}, picked)
        for kind, values in metrics.items():
            for name, value in values.items():
                drawn[kind].setdefault(name, []).append(value)
            drawn[kind].setdefault("maia_minus_msp", []).append(values["maia"] - values["msp"])
    return {
        kind: {name: _interval(values) for name, values in by_score.items()}
        for kind, by_score in drawn.items()
    }


def _interval(values: list[float]) -> list[float]:
    low, high = np.percentile(np.asarray(values), [2.5, 97.5]) if values else (math.nan,) * 2
    return [float(low), float(high)]


def error_detection(sizes: Sizes, seed: int, spurious: SpuriousSettings) -> dict[str, Any]:
    """Part 1: the ERM model on the balanced test split, combination fitted on holdout.

    The model, its training data and the units the agent judges are the spurious benchmark's
    (``spurious``: same splits, seed, ERM epochs, l1 selection and exemplars); its top
    ``sizes.checked_units`` units are judged. The test split is only scored.
    """
    tic = time.perf_counter()
    backbone = load_backbone(seed, spurious.backbone, progress=False)
    backbone_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    splits = spurious_splits(
        seed,
        train=spurious.train,
        val=spurious.val,
        test=spurious.test,
        holdout=spurious.holdout,
    )
    train, test, calibration = splits["train"], splits["test"], splits["holdout"]
    features = extract_features(backbone, train, progress=False)
    model = train_erm_classifier(
        backbone,
        train,
        features=features,
        class_names=train.class_names,
        epochs=spurious.erm_epochs,
        seed=seed,
    )
    train_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    # The units the head leans on most, judged by the remover's judge (the agent's
    # spurious_check, exemplars from the training data), as the flagger's own check does.
    with torch.no_grad():
        predictions = model.head(features.features).argmax(1)
    contributions = unit_contributions(features.features, model.head.weight, predictions)
    ranked = contributions.clamp(min=0.0).mean(0).argsort(descending=True).tolist()
    exemplars = compute_exemplars(
        model, train, [f"{CLASSIFIER_FEATURE_LAYER}:*"], k=spurious.exemplars_k, progress=False
    )
    judgements = judge_units(
        model,
        CLASSIFIER_FEATURE_LAYER,
        ranked[: sizes.checked_units],
        class_names=train.class_names,
        candidate_attributes=("background",),
        agent=ScientistAgent(seed=seed),
        exemplars=exemplars,
        seed=seed,
        progress=False,
    )
    spurious_units = {
        j.unit.index: unit_words(j.report.label) for j in judgements if j.verdict == "spurious"
    }
    # The spurious benchmark's remover judges the l1 regression's top units instead.
    top = set(l1_top_units(features.features, features.labels, spurious.top, seed=seed).units)
    judge_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    result = flag(
        model,
        test,
        calibration_data=calibration,
        subgroups=SubgroupAudit(concepts="describer"),
        backends=Backends(agent=ScientistAgent(seed=seed)),
        seed=seed,
        remover_units=spurious_units,
        # The own check's counterfactual: the directions of the judged units' background edits.
        spurious_directions=judged_directions(model, judgements, ("background",)),
    )
    table = result.table.sort_values("index")
    errors = torch.tensor(~table["correct"].to_numpy(dtype=bool), dtype=torch.long)
    scored = {name: torch.tensor(table[name].to_numpy(dtype=float)) for name in SCORES}
    intervals = bootstrap_intervals(scored, errors, sizes.bootstrap, seed)
    groups = torch.tensor(test.metadata["group"].to_numpy().copy())
    correct = torch.tensor(table["correct"].to_numpy(dtype=bool))
    group_accuracy = [float(correct[groups == g].float().mean()) for g in range(test.n_groups)]
    return {
        "seed": seed,
        "auroc": {name: result.metrics["auroc"][name] for name in SCORES},
        "aupr_error": {name: result.metrics["aupr_error"][name] for name in SCORES},
        "maia_minus_msp": {
            kind: result.metrics[kind]["maia"] - result.metrics[kind]["msp"]
            for kind in ("auroc", "aupr_error")
        },
        "intervals_95": intervals,
        "bootstrap_resamples": sizes.bootstrap,
        "subgroup_concepts": SUBGROUP_CONCEPTS,
        "test_accuracy": float(correct.float().mean()),
        "worst_group_accuracy": min(group_accuracy),
        "error_rate": float(1.0 - correct.float().mean()),
        "units_judged": len(judgements),
        "spurious_units": {str(k): v for k, v in result.spurious_units.items()},
        "subgroups": list(reported_subgroups(result.findings)),
        "coefficients": result.coefficients,
        "flagged_rate": result.flagged_rate,
        "reliance_auroc": _auroc_of(table["reliance"], ~table["correct"]),
        "subgroup_auroc": _auroc_of(table["subgroup"], ~table["correct"]),
        "counterfactual_auroc": _auroc_of(table["counterfactual"], ~table["correct"]),
        "edit_counterfactual_auroc": _auroc_of(table["edit_counterfactual"], ~table["correct"]),
        "l2_chosen_on_holdout": result.l2,
        "ablations": {
            **_ablations(result.calibration, table, item_ids(calibration), item_ids(test)),
            "msp+reliance+subgroup+counterfactual, remover's l1 top units": _remover_ablation(
                model, result, calibration, test, [u for u in spurious_units if u in top]
            ),
        },
        "spurious_units_in_l1_top": sorted(u for u in spurious_units if u in top),
        "example_reasons": result.table[result.table["flagged"]]["reason"].head(5).tolist(),
        "backbone_seconds": backbone_seconds,
        "backbone_sha256": state_dict_sha256(backbone),
        "train_seconds": train_seconds,
        "judge_seconds": judge_seconds,
        "flag_seconds": time.perf_counter() - tic,
    }


class BiasedShapesClassifier(pl.LightningModule):
    """A small CNN trained from scratch on ``BiasedShapes``: it takes the shortcuts it can see."""

    def __init__(self, num_classes: int = 6, width: int = 16, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        for index, (inputs, outputs) in enumerate(itertools.pairwise(channels)):
            layers += [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU()]
            if index < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)
        self.lr = lr

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        steps = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.lr, total_steps=int(steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def planted_subgroups(sizes: Sizes, seed: int) -> dict[str, Any]:
    """Part 2: a small CNN trained on BiasedShapes; the class-bias audit against the planted
    truth, and the reported subgroups measured on the test split."""
    tic = time.perf_counter()
    train = BiasedShapes("train", size=sizes.biased_train, seed=seed, image_size=BIASED_SIZE)
    test = BiasedShapes("test", size=sizes.biased_test, seed=seed, image_size=BIASED_SIZE)
    pl.seed_everything(seed, verbose=False)
    model = BiasedShapesClassifier(len(train.class_names))
    loader = DataLoader(
        RenderedDataset(train),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    pl.Trainer(
        max_epochs=sizes.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, loader)
    model.eval()
    train_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    audit = audit_class_bias(
        model,
        train.class_names,
        agent=ScientistAgent(seed=seed),
        candidate_attributes=BIASABLE_ATTRIBUTES,
        image_size=BIASED_SIZE,
        seed=seed,
    )
    audit_seconds = time.perf_counter() - tic
    images = RenderedDataset(test)
    with torch.inference_mode():
        probabilities = model(images.images.float() / 255).softmax(1)
    labels = images.labels
    truth = probabilities[torch.arange(len(labels)), labels].tolist()
    concepts = dataset_concepts(test, range(len(test)))
    checks = check_subgroups(
        audit.findings, test.planted_subgroups, concepts, labels.tolist(), truth, test.class_names
    )
    recovery = planted_recovery(audit.findings, test.planted_subgroups)
    # Did the model take each planted shortcut at all? Measured on val, never on test.
    drops = _planted_drops(model, sizes, seed)
    learned = [p.description for p in test.planted_subgroups if drops[p.description] >= LEARNED]
    correct = (probabilities.argmax(1) == labels).numpy()
    inside = test.metadata["in_planted_subgroup"].to_numpy()
    return {
        "bias_recovery": float(np.mean(list(recovery.values()))),
        "bias_false_positives": false_positives_per_class(checks, test.class_names),
        "recovered": recovery,
        "planted_score_drop_val": drops,
        "bias_recovery_learned": (
            float(np.mean([recovery[d] for d in learned])) if learned else None
        ),
        "subgroups": [
            {
                "class": c.class_name,
                "subgroup": c.subgroup,
                "attribute": c.findings[0].attribute,
                "values": [f.value for f in c.findings],
                "planted": c.planted,
                "audit_score": float(np.mean([f.mean_score for f in c.findings])),
                "audit_class_mean": c.findings[0].class_mean,
                "test_score": c.subgroup_mean,
                "test_class_mean": c.class_mean,
                "test_items": c.items,
                "false_positive": c.false_positive,
            }
            for c in checks
        ],
        "verdicts": {r.unit: r.label for r in audit.reports},
        "test_accuracy": float(correct.mean()),
        "planted_subgroup_accuracy": float(correct[inside].mean()) if inside.any() else None,
        "rest_accuracy": float(correct[~inside].mean()) if (~inside).any() else None,
        "train_seconds": train_seconds,
        "audit_seconds": audit_seconds,
        "audit_images": sum(r.images for r in audit.reports),
    }


def _planted_drops(model: nn.Module, sizes: Sizes, seed: int) -> dict[str, float]:
    """Per planted subgroup, how much lower the model scores it than the rest of its class on
    the val split (see :func:`planted_score_drop`)."""
    val = BiasedShapes("val", size=sizes.biased_test, seed=seed, image_size=BIASED_SIZE)
    images = RenderedDataset(val)
    with torch.inference_mode():
        probabilities = model(images.images.float() / 255).softmax(1)
    truth = probabilities[torch.arange(len(images)), images.labels].tolist()
    scenes = [val.scene(i) for i in range(len(val))]
    labels = images.labels.tolist()
    return {
        p.description: planted_score_drop(p, scenes, labels, truth, val.class_names)
        for p in val.planted_subgroups
    }


#: The features of the remover ablation: the combination's, less the edit counterfactual.
REMOVER_FEATURES = ("msp", "reliance", "subgroup", "counterfactual")


def _remover_ablation(
    model: nn.Module,
    result: FlaggingResult,
    calibration: SpuriousShapes,
    test: SpuriousShapes,
    units: list[int],
) -> float:
    """The combination's AUROC with reliance and counterfactual risk on ``units`` only (the same
    subgroups, the same mean-ablation reference: the calibration split's means)."""
    head = model.head
    assert isinstance(head, nn.Linear)
    assert result.calibration is not None
    weight = head.weight.detach()
    outputs = {
        "calibration": collect_outputs(model, head, calibration, batch_size=256),
        "test": collect_outputs(model, head, test, batch_size=256),
    }
    reference = ablation_reference(outputs["calibration"])
    subgroups = {
        "calibration": torch.tensor(result.calibration["subgroup"].to_numpy(dtype=float)),
        "test": torch.tensor(result.table.sort_values("index")["subgroup"].to_numpy(dtype=float)),
    }
    features = {}
    for name, found in outputs.items():
        features[name] = torch.stack(
            [
                baseline_risks(found.logits)["msp"],
                spurious_reliance(found.features, weight, units, found.predictions),
                subgroups[name].float(),
                counterfactual_risk(found.logits, found.features, weight, units, reference),
            ],
            dim=1,
        )
    errors = torch.tensor(result.calibration["error"].to_numpy(dtype=bool), dtype=torch.long)
    combiner = fit_risk_combiner(
        features["calibration"], errors, item_ids(calibration), feature_names=REMOVER_FEATURES
    )
    table = result.table.sort_values("index")
    scored = combiner.score(features["test"], item_ids(test))
    return _auroc_of(pd.Series(scored.numpy()), ~table["correct"])


def _auroc_of(scores: pd.Series, errors: pd.Series) -> float:
    """The AUROC of one table column for the errors (torchmetrics)."""
    values = torch.tensor(scores.to_numpy(dtype=float), dtype=torch.float32)
    target = torch.tensor(errors.to_numpy(dtype=bool), dtype=torch.long)
    return float(binary_auroc(values, target))


#: Feature subsets fitted the same way as the full combination, to show what each adds.
ABLATIONS: dict[str, tuple[str, ...]] = {
    "msp+reliance+subgroup": ("msp", "reliance", "subgroup"),
    "msp+counterfactual": ("msp", "counterfactual"),
    "msp+edit_counterfactual": ("msp", "edit_counterfactual"),
    "msp+reliance+subgroup+counterfactual": ("msp", "reliance", "subgroup", "counterfactual"),
    "msp+reliance": ("msp", "reliance"),
    "msp+subgroup": ("msp", "subgroup"),
    "reliance+subgroup": ("reliance", "subgroup"),
}


def _ablations(
    calibration: pd.DataFrame | None,
    table: pd.DataFrame,
    calibration_ids: list[str],
    test_ids: list[str],
) -> dict[str, float]:
    """AUROC on the test split of combinations of fewer features, fitted on the calibration."""
    if calibration is None:
        return {}
    found = {}
    errors = torch.tensor(calibration["error"].to_numpy(dtype=bool), dtype=torch.long)
    for name, columns in ABLATIONS.items():
        fitting = torch.tensor(
            calibration[list(columns)].to_numpy(dtype=float), dtype=torch.float32
        )
        combiner = fit_risk_combiner(fitting, errors, calibration_ids, feature_names=columns)
        scored = torch.tensor(table[list(columns)].to_numpy(dtype=float), dtype=torch.float32)
        found[name] = _auroc_of(
            pd.Series(combiner.score(scored, test_ids).numpy()), ~table["correct"]
        )
    return found
