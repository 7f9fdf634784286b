"""The callbacks on a user's own data (real handwriting with a colour shortcut, no procedural
world): the remover's select and erase inside Trainer.fit with the retrieval designer, the
flagger's audits on attribute columns, and setup-time errors for data nothing can design on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_maia._options import Backends, Output
from lightning_maia.analysis._flagging_options import SpuriousEvidence, SubgroupAudit
from lightning_maia.analysis._masked_head import MaskedHead
from lightning_maia.analysis._spurious_options import Refit, SearchBudget
from lightning_maia.callbacks.misclassification_flagger import (
    MisclassificationFlagger,
    remover_spurious_directions,
)
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.callbacks.unit_interpreter import Schedule, UnitInterpreter
from lightning_maia.errors import ConfigurationError
from lightning_maia.recipes.tinted_digits import TintedDigitsClassifier, TintedDigitsDataModule


@pytest.fixture(scope="module")
def data() -> TintedDigitsDataModule:
    return TintedDigitsDataModule(classes=4, copies=1)


def _fit(
    tmp_path: Path, callbacks: list[Any], data: pl.LightningDataModule, epochs: int = 2
) -> pl.LightningModule:
    model = TintedDigitsClassifier(classes=4, backbone_epochs=20)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(model, data)
    return model


@pytest.mark.parametrize("remedy", ["select", "erase"])
def test_the_remover_judges_and_refits_on_real_images(
    tmp_path: Path, data: TintedDigitsDataModule, remedy: str
) -> None:
    remover = SpuriousFeatureRemover(
        candidate_attributes=("colour",),
        backends=Backends(designer="retrieval"),
        budget=SearchBudget(k=6),
        refit=Refit(remedy=remedy),
        output=Output(progress=False),
    )
    model = _fit(tmp_path, [remover], data)
    figures = remover.history[-1]
    assert figures["status"] == "ok"
    assert figures["units_judged"] == 6 and figures["units_failed"] == 0
    assert isinstance(model.head, MaskedHead)
    assert "after_worst_group_accuracy" in figures  # the validation data's group column
    verdicts = {j.unit.index: j.verdict for j in remover.judgements}
    if remedy == "select":
        assert set(remover.decision["kept_units"]) == {
            u for u, v in verdicts.items() if v == "core"
        }  # type: ignore[index]
        assert torch.equal(
            model.head.mask.nonzero().flatten().sort().values,
            torch.tensor(sorted(remover.decision["kept_units"])),
        )  # type: ignore[index]
    else:
        # The recolour edits of the agent's runs are the data erasure projects out.
        assert figures["erased_dimensions"] >= 1
        assert float(model.head.mask.sum()) == model.head.mask.numel()


def test_the_remover_chooses_counterfactual_copies_on_the_validation_classes(
    tmp_path: Path, data: TintedDigitsDataModule
) -> None:
    remover = SpuriousFeatureRemover(
        candidate_attributes=("colour",),
        backends=Backends(designer="retrieval"),
        budget=SearchBudget(k=8),
        refit=Refit(keep=["core", "unclear"], protocol="cv", copies=[0, 3]),
        output=Output(progress=False),
    )
    model = _fit(tmp_path, [remover], data)
    figures = remover.history[-1]
    assert figures["status"] == "ok" and figures["units_failed"] == 0
    scores = {c: figures[f"copies_{c}_val_balanced_accuracy"] for c in (0, 3)}
    assert figures["copies"] == max(scores, key=lambda c: (scores[c], -c))
    # The installed head is the chosen refit: its validation figure is the chosen score.
    assert isinstance(model.head, MaskedHead)
    assert figures["after_balanced_accuracy"] == pytest.approx(scores[figures["copies"]])
    # On balanced validation colours the recolour copies beat the shortcut-leaning refit.
    assert figures["copies"] == 3 and scores[3] > scores[0]
    assert figures["after_worst_group_accuracy"] > figures["before_worst_group_accuracy"]


def test_the_flagger_ablates_the_removers_colour_directions_on_real_images(
    tmp_path: Path,
) -> None:
    # The realdata benchmark's setting: six digits, a backbone that carries the colour in
    # many units (pretrained with the colour weighted 0.1).
    data = TintedDigitsDataModule(classes=6, copies=1)
    remover = SpuriousFeatureRemover(
        candidate_attributes=("colour",),
        backends=Backends(designer="retrieval"),
        budget=SearchBudget(k=8),
        refit=Refit(keep=["core", "unclear"]),
        output=Output(progress=False),
    )
    flagger = MisclassificationFlagger(when="fit_end", subgroups=SubgroupAudit(class_bias=False))
    model = TintedDigitsClassifier(classes=6, backbone_epochs=20, backbone_colour_weight=0.1)
    pl.Trainer(
        default_root_dir=tmp_path, max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[remover, flagger],
    ).fit(model, data)  # fmt: skip
    spurious = [j.unit.index for j in remover.judgements if j.verdict == "spurious"]
    assert spurious, "the remover judged no unit spurious: nothing to ablate"
    directions = remover_spurious_directions([remover], model)
    assert directions is not None and directions.shape[0] == 32 and directions.shape[1] >= 1
    result = flagger.result
    assert result is not None and sorted(result.spurious_units) == sorted(spurious)
    # The remover's head no longer reads the spurious units, so ablating them alone changes
    # nothing: that counterfactual is exactly the MSP risk ...
    assert isinstance(model.head, MaskedHead)
    table = result.table
    assert table["counterfactual"].tolist() == pytest.approx(table["msp"].tolist())
    # ... while the colour the kept units still carry moves along the recolour edits'
    # directions: the edit counterfactual ablates those too, evidence of its own.
    assert (table["edit_counterfactual"] - table["msp"]).abs().max() > 0.05


def test_a_copies_grid_without_validation_data_fails_at_setup(
    tmp_path: Path, data: TintedDigitsDataModule
) -> None:
    remover = SpuriousFeatureRemover(
        candidate_attributes=("colour",),
        backends=Backends(designer="retrieval"),
        refit=Refit(copies=[0, 3]),
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[remover],
    )  # fmt: skip
    model = TintedDigitsClassifier(classes=4, backbone_epochs=1)
    with pytest.raises(ConfigurationError, match=r"`val_dataset` can be validation data"):
        trainer.fit(model, data.train_dataloader())
    assert trainer.global_step == 0


def test_the_flaggers_audits_run_on_attribute_columns(
    tmp_path: Path, data: TintedDigitsDataModule
) -> None:
    flagger = MisclassificationFlagger(
        when="fit_end",
        candidate_attributes=("colour",),
        backends=Backends(designer="retrieval"),
        spurious=SpuriousEvidence(feature_layer="backbone.pool", max_checked_units=3),
        subgroups=SubgroupAudit(images_per_value=4),
    )
    _fit(tmp_path, [flagger], data, epochs=1)
    result = flagger.result
    assert result is not None
    reports = [section.report for section in flagger._sections]
    # Its own spurious_check on 3 units and the class-bias audit of each of the 4 classes all
    # ran to a verdict: the retrieval designer drew every class and colour.
    assert [r.task for r in reports] == ["spurious_check"] * 3 + ["class_bias"] * 4
    assert all(r.ok for r in reports), [r.failure_reason for r in reports]
    assert {r.verdict for r in reports[3:]} <= {"biased", "unbiased", "unclear"}
    assert len(result.table) == len(data.val_data)


def test_data_the_agent_cannot_design_on_fails_at_setup(tmp_path: Path) -> None:
    images = torch.rand(16, 3, 12, 12)
    plain = TensorDataset(images, torch.arange(16) % 4)
    model = TintedDigitsClassifier(classes=4, backbone_epochs=1)
    remover = SpuriousFeatureRemover(
        candidate_attributes=("colour",), class_names=["0", "1", "2", "3"], budget=SearchBudget(k=2)
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[remover],
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="cannot design experiments on TensorDataset"):
        trainer.fit(model, DataLoader(plain, batch_size=8))
    assert trainer.global_step == 0  # failed before a single training step
    flagger = MisclassificationFlagger(
        class_names=["0", "1", "2", "3"], backends=Backends(designer="retrieval")
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[flagger],
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="attribute columns"):
        trainer.fit(model, DataLoader(plain, batch_size=8), DataLoader(plain, batch_size=8))
    assert trainer.global_step == 0


def test_the_interpreter_describes_real_units_with_the_retrieval_designer(
    tmp_path: Path, data: TintedDigitsDataModule
) -> None:
    interpreter = UnitInterpreter(
        units=["backbone.pool:*"], strategy="top_active", max_units=2,
        schedule=Schedule(when="fit_end"), backends=Backends(designer="retrieval"),
        output=Output(progress=False),
    )  # fmt: skip
    _fit(tmp_path, [interpreter], data, epochs=1)
    assert len(interpreter.reports) == 2
    for report in interpreter.reports:
        assert report.ok, report.failure_reason
        assert report.concepts and all(
            c.partition("=")[0] in ("digit", "colour", "brightness", "texture")
            for c in report.concepts
        )
