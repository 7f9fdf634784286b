"""MisclassificationFlagger in real Lightning fits: scores, reasons, logs, the gate, failures.

The model reads a shape and a background with synthetic detectors and weighs the background
more (3 vs 2), so it predicts the background's class: wrong exactly where the background does
not match the shape, and then its prediction rests on a background unit alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import fields
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from helpers.chromium import load_page, requires_chromium
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_maia._options import Backends, Output
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit, Thresholds
from lightning_maia.analysis._masked_head import MaskedHead
from lightning_maia.analysis._spurious_options import SearchBudget
from lightning_maia.callbacks.misclassification_flagger import MisclassificationFlagger
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.errors import BackendError, ConfigurationError
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import SpuriousShapes, SyntheticNeuronLayer
from lightning_maia.world._neurons import NeuronSpec
from lightning_maia.world._scene import Concept


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The agent feeds small batches: one thread beats two fighting over a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CLASSES = ("circle", "square")
BACKGROUNDS = ("snow", "grass")


class Detectors(nn.Module):
    """(N, 4) features: circle, square, snow background, grass background (about 0 or 1;
    a little noise keeps the exemplars of a pooled unit apart)."""

    def __init__(self) -> None:
        super().__init__()
        concepts = [
            ("shape", "circle"),
            ("shape", "square"),
            ("background", "snow"),
            ("background", "grass"),
        ]
        self.neurons = SyntheticNeuronLayer(
            [NeuronSpec("mono", (Concept(a, v),)) for a, v in concepts], noise_std=0.02
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.neurons(images).amax(dim=(2, 3)) / self.neurons.gain


class BackgroundReader(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = Detectors()
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[2.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 3.0]]))
            self.head.bias.zero_()
        self.head.requires_grad_(False)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images)) + 0 * self.unused

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return (self.unused**2).sum() + 0 * self(batch[0]).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.unused], lr=0.1)


def data(split: str, size: int) -> SpuriousShapes:
    return SpuriousShapes(split, size=size, classes=CLASSES, backgrounds=BACKGROUNDS, seed=1)


def fit(
    tmp_path: Path,
    callbacks: pl.Callback | list[pl.Callback],
    epochs: int = 1,
    model: pl.LightningModule | None = None,
    train: SpuriousShapes | None = None,
    **options: Any,
) -> pl.Trainer:
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=epochs,
        logger=CSVLogger(tmp_path, name="logs"),
        callbacks=callbacks if isinstance(callbacks, list) else [callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=1,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
        **options,
    )
    trainer.fit(
        model or BackgroundReader(),
        DataLoader(train or data("train", 8), batch_size=64),
        DataLoader(data("val", 48), batch_size=16),
    )
    return trainer


def test_scores_explains_and_logs_every_validation_input(tmp_path: Path) -> None:
    calibration = data("holdout", 48)
    flagger = MisclassificationFlagger(
        calibration_data=calibration,
        candidate_attributes=("background",),
        spurious=SpuriousEvidence(feature_layer="features", max_checked_units=4),
        thresholds=Thresholds(top_n=5),
    )
    trainer = fit(tmp_path, flagger)
    result = flagger.result
    assert result is not None
    # The agent judged both background detectors spurious, and described them.
    assert result.spurious_units == {2: "snow background", 3: "grass background"}
    # Every validation input has scores; errors are exactly the mismatched backgrounds.
    table = result.table
    assert len(table) == 48 and set(table["index"]) == set(range(48))
    rows = data("val", 48).metadata.set_index("index").loc[table["index"]]
    assert (~table["correct"]).tolist() == (~rows["spurious_match"]).tolist()
    wrong = table[~table["correct"]]
    assert (wrong["reliance"] > 0.9).all() and (table[table["correct"]]["reliance"] < 0.7).all()
    assert wrong["reason"].str.startswith("prediction rests on unit ").all()
    assert wrong["reason"].str.contains(r"unit [23]: (?:snow|grass) background \(9\d% of its").all()
    # The class-bias audit found the off-background subgroups of each class.
    assert {(f.class_name, f.attribute) for f in result.findings} == {
        ("circle", "background"),
        ("square", "background"),
    }
    assert result.metrics["auroc"]["maia"] > 0.95 and result.metrics["auroc"]["msp"] > 0.9
    # Scalars went through pl_module.log, into metrics.csv.
    log_dir = Path(trainer.logger.log_dir)
    metrics = pd.read_csv(log_dir / "metrics.csv")
    for name in ("auroc_msp", "auroc_maia", "aupr_error_energy", "flagged_rate", "subgroups_found"):
        assert metrics[f"maia/{name}"].dropna().size == 1, name
    assert metrics["maia/subgroups_found"].dropna().iloc[0] == result.subgroup_count >= 2
    # The flagged table (top 5), every score, the subgroups and the thumbnails, read back.
    [flagged_csv] = (log_dir / "maia" / "flagged").glob("step-??????.csv")
    flagged = pd.read_csv(flagged_csv)
    assert len(flagged) == 5 and flagged["flagged"].all()
    assert {"index", "label", "prediction", "msp", "maia", "reason"} <= set(flagged.columns)
    assert flagged["maia"].is_monotonic_decreasing
    assert len(pd.read_csv(next((log_dir / "maia" / "risk_scores").glob("*.csv")))) == 48
    assert "background" in set(
        pd.read_csv(next((log_dir / "maia" / "subgroups").glob("*.csv")))["attribute"]
    )
    assert len(list((log_dir / "maia" / "flagged").glob("step-*-*.png"))) == 5
    captions = pd.read_csv(next((log_dir / "maia" / "flagged").glob("*captions.csv")))
    assert captions["caption"].str.contains("prediction rests on unit").any()
    report = (log_dir / "maia" / "flagger" / "epoch-000" / "report.html").read_text()
    assert "MisclassificationFlagger" in report and "class_bias" in report


def test_the_combination_is_cross_fitted_without_calibration_data(tmp_path: Path) -> None:
    flagger = MisclassificationFlagger(
        folds=2,
        spurious=SpuriousEvidence(spurious_units=[2, 3]),
        subgroups=SubgroupAudit(class_bias=False),
    )
    model = BackgroundReader()
    val = data("val", 40)
    result = flagger.flag(model, val)
    assert len(result.table) == 40 and result.findings == []
    assert result.metrics["auroc"]["maia"] > 0.9
    assert set(result.coefficients) == {
        "msp",
        "reliance",
        "subgroup",
        "counterfactual",
        "edit_counterfactual",
        "intercept",
    }
    with pytest.raises(ConfigurationError, match="`calibration_data` can be held-out data"):
        MisclassificationFlagger(dataset=val, calibration_data=val)


def test_the_gate_passes_and_fails_on_its_thresholds() -> None:
    model, val = BackgroundReader(), data("val", 40)
    strict = MisclassificationFlagger(
        calibration_data=data("holdout", 40),
        spurious=SpuriousEvidence(spurious_units=[2, 3]),
        subgroups=SubgroupAudit(class_bias=False),
        thresholds=Thresholds(max_flagged_rate=0.05),
    )
    assert strict.gate().passed is False  # not run yet
    assert strict.gate().failures == ["MisclassificationFlagger has not run yet"]
    strict.flag(model, val)
    gate = strict.gate()
    assert gate.passed is False and gate.exit_code == 1
    assert gate.flagged_rate is not None and gate.flagged_rate > 0.3
    assert gate.failures[0].startswith("flagged rate 0.")
    lenient = MisclassificationFlagger(
        calibration_data=data("holdout", 40),
        spurious=SpuriousEvidence(spurious_units=[2, 3]),
        subgroups=SubgroupAudit(class_bias=False),
        thresholds=Thresholds(max_flagged_rate=0.9, max_subgroups=0),
    )
    lenient.flag(model, val)
    assert lenient.gate().passed is True and lenient.gate().exit_code == 0


def test_a_remover_among_the_callbacks_gives_the_spurious_units(tmp_path: Path) -> None:
    def judgement(index: int, verdict: str, label: str) -> SimpleNamespace:
        return SimpleNamespace(
            unit=SimpleNamespace(index=index, layer="features"), verdict=verdict, toolbox=None,
            report=SimpleNamespace(label=label, concepts=[]),
        )  # fmt: skip

    class SpuriousFeatureRemover(pl.Callback):
        """Stands in for the real one: its judgements of the last run."""

        judgements: ClassVar[list[SimpleNamespace]] = [
            judgement(3, "spurious", "spurious: follows grass background"),
            judgement(0, "core", "core: follows circles"),
        ]

    flagger = MisclassificationFlagger(subgroups=SubgroupAudit(class_bias=False))
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
        callbacks=[SpuriousFeatureRemover(), flagger], enable_progress_bar=False,
        enable_model_summary=False, limit_train_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(
        BackgroundReader(), DataLoader(data("train", 8), batch_size=8), DataLoader(data("val", 32))
    )
    assert flagger.result is not None and flagger.result.spurious_units == {3: "grass background"}
    assert flagger.history[0]["epoch"] == 0 and "auroc_maia" in flagger.history[0]


def test_an_agent_failure_warns_and_training_goes_on(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def run(self, toolbox: Toolbox, task: TaskSpec) -> Any:
            raise BackendError("the VLM endpoint is down")

    flagger = MisclassificationFlagger(
        backends=Backends(agent=Broken()),
        spurious=SpuriousEvidence(feature_layer="features", max_checked_units=1),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path, flagger, epochs=2)
    assert trainer.current_epoch == 2 and len(flagger.history) == 2
    assert any("the VLM endpoint is down" in str(w.message) for w in caught)
    assert flagger.result is not None and flagger.result.spurious_units == {}
    assert flagger.result.findings == []
    strict = MisclassificationFlagger(
        backends=Backends(agent=Broken()),
        subgroups=SubgroupAudit(class_bias=False),
        spurious=SpuriousEvidence(feature_layer="features"),
        output=Output(on_error="raise"),
    )
    with pytest.raises(BackendError):
        strict.flag(BackgroundReader(), data("val", 16))


def test_fast_dev_run_skips_and_state_survives(tmp_path: Path) -> None:
    flagger = MisclassificationFlagger(
        spurious=SpuriousEvidence(spurious_units=[3]), subgroups=SubgroupAudit(class_bias=False)
    )
    pl.Trainer(
        default_root_dir=tmp_path, fast_dev_run=True, callbacks=[flagger], enable_progress_bar=False
    ).fit(BackgroundReader(), DataLoader(data("train", 8)), DataLoader(data("val", 8)))
    assert flagger.history == [] and flagger.result is None
    flagger.flag(BackgroundReader(), data("val", 24))
    restored = MisclassificationFlagger(
        spurious=SpuriousEvidence(spurious_units=[3]), subgroups=SubgroupAudit(class_bias=False)
    )
    restored.load_state_dict(flagger.state_dict())
    assert restored.gate() == flagger.gate()


def test_a_bad_head_fails_at_setup(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"`head` can be an nn.Linear module: head"):
        fit(tmp_path, MisclassificationFlagger(head="classifier"))


def test_a_bad_feature_layer_fails_at_setup_before_training(tmp_path: Path) -> None:
    steps: list[int] = []
    watch = pl.callbacks.LambdaCallback(on_train_batch_start=lambda *_: steps.append(1))
    with pytest.raises(ConfigurationError, match=r"no layer 'nope' in BackgroundReader"):
        fit(
            tmp_path,
            [MisclassificationFlagger(spurious=SpuriousEvidence(feature_layer="nope")), watch],
        )
    assert steps == []


def test_the_offline_scientist_by_name() -> None:
    from lightning_maia.agents.scientist import ScientistAgent

    assert isinstance(
        MisclassificationFlagger(backends=Backends(agent="scientist")).agent, ScientistAgent
    )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"when": "always"}, "`when` can be validation, fit_end, manual, got 'always'"),
        ({"concepts": "clip"}, "`concepts` can be auto, metadata, describer, none"),
        ({"on_error": "ignore"}, r"`on_error` can be one of \('warn', 'raise'\), got 'ignore'"),
        ({"every_n_epochs": 0}, "`every_n_epochs` can be a positive integer, got 0"),
        ({"top_n": -1}, "`top_n` can be a positive integer"),
        ({"folds": 1}, "`folds` can be an integer of at least 2"),
        ({"flag_threshold": 1.5}, "`flag_threshold` can be a probability in"),
        ({"max_flagged_rate": 2.0}, "`max_flagged_rate` can be a rate in"),
        ({"max_subgroups": -1}, "`max_subgroups` can be a non-negative integer or None"),
        (
            {"max_flagged_rate": "x"},
            r"`max_flagged_rate` can be a rate in \[0, 1\] or None, got 'x'",
        ),
        ({"flag_threshold": "high"}, r"`flag_threshold` can be a probability in \[0, 1\], got"),
        ({"max_subgroups": 1.5}, "`max_subgroups` can be a non-negative integer or None, got 1.5"),
        ({"spurious_units": 3}, "`spurious_units` can be a list of unit indices or None, got 3"),
        (
            {"agent": "gpt-4o"},
            r"`agent` can be an agent object .*'scientist' or None, got 'gpt-4o'",
        ),
        ({"audit_classes": "circle"}, "`audit_classes` can be a list of class names or None"),
        ({"max_checked_units": 0}, "`max_checked_units` can be a positive integer, got 0"),
        ({"spurious": {"spurious_units": [1]}}, r"`spurious` can be a SpuriousEvidence\(...\)"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        MisclassificationFlagger(**_grouped(options))


def _grouped(options: dict[str, Any]) -> dict[str, Any]:
    """Flat options put into the option groups that hold them (the group builds, and checks,
    inside the caller's ``pytest.raises``)."""
    groups = {"spurious": SpuriousEvidence, "subgroups": SubgroupAudit, "thresholds": Thresholds}
    groups |= {"backends": Backends, "output": Output}
    found = dict(options)
    for name, kind in groups.items():
        own = {k: found.pop(k) for k in [f.name for f in fields(kind)] if k in found}
        if own:
            found[name] = kind(**own)
    return found


def test_with_the_real_remover_the_flagger_reads_its_verdicts_and_its_masked_head(
    tmp_path: Path,
) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=4), class_names=list(CLASSES), output=Output(progress=False)
    )
    flagger = MisclassificationFlagger(when="fit_end", subgroups=SubgroupAudit(class_bias=False))
    model = BackgroundReader()
    fit(tmp_path, [remover, flagger], model=model, train=data("train", 64))
    result = flagger.result
    assert result is not None
    assert result.spurious_units == {2: "snow background", 3: "grass background"}
    # The remover's head reads the shape units only, so nothing rests on the background now.
    assert isinstance(model.head, MaskedHead) and model.head.kept_units == [0, 1]
    assert result.table["reliance"].max() == 0.0
    assert result.table["correct"].mean() > 0.9


def test_a_remover_that_has_not_judged_yet_is_named_not_missing(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=4), class_names=list(CLASSES), output=Output(progress=False)
    )
    # every validation; the remover at fit end
    flagger = MisclassificationFlagger(subgroups=SubgroupAudit(class_bias=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, [remover, flagger], epochs=2, train=data("train", 64))
    messages = [str(w.message) for w in caught if "MisclassificationFlagger" in str(w.message)]
    assert not any("no SpuriousFeatureRemover" in m for m in messages)
    # Said once (sanity check and two validations ran), naming what to change.
    assert sum("has not judged any unit yet" in m for m in messages) == 1
    assert len(flagger.history) == 2 and flagger.history[-1]["spurious_units"] == 0.0


class _FlaggedRows(HTMLParser):
    """The cells' text of every ``tr.flagged-input`` of a page, and its ``<img>`` count."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images = 0
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and ("class", "flagged-input") in attrs:
            self._row = []
        elif self._row is not None and tag == "td":
            self._row.append("")
        elif self._row is not None and tag == "img":
            self.images += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row:
            self._row[-1] += data


@requires_chromium
def test_the_report_lists_the_flagged_inputs_with_their_reasons(tmp_path: Path) -> None:
    names = ["<i>circle</i>", "square"]  # user text: escaped, never markup
    flagger = MisclassificationFlagger(
        class_names=names,
        spurious=SpuriousEvidence(spurious_units=[2, 3]),
        subgroups=SubgroupAudit(class_bias=False),
        thresholds=Thresholds(top_n=4),
    )
    trainer = fit(tmp_path, flagger)
    result = flagger.result
    assert result is not None
    top = result.top(4)
    assert len(top) == 4
    path = flagger.report_path
    assert path == Path(trainer.logger.log_dir) / "maia" / "flagger" / "epoch-000" / "report.html"
    page = load_page(path)
    assert page.console == [], page.console
    parsed = _FlaggedRows()
    parsed.feed(page.stdout)
    # One row per flagged input, riskiest first: index, classes, risk and the reason in words.
    assert [row[1:] for row in parsed.rows] == [
        [f"#{r.index}", r.label, r.prediction, f"{r.maia:.2f}", r.reason] for r in top.itertuples()
    ]
    assert all(reason.startswith("prediction rests on unit ") for reason in top["reason"])
    assert parsed.images == 4  # a thumbnail each
    assert "<i>circle</i>" not in page.stdout and "&lt;i&gt;circle&lt;/i&gt;" in page.stdout


def test_numpy_numbers_are_numbers() -> None:
    import numpy as np

    flagger = MisclassificationFlagger(
        spurious=SpuriousEvidence(spurious_units=np.array([3, 1])),
        thresholds=Thresholds(max_flagged_rate=np.float32(0.25)),
    )
    assert flagger.spurious.spurious_units == (1, 3) and flagger.thresholds.max_flagged_rate == 0.25
