"""SpuriousFeatureRemover in real Lightning fits: remedies, logs, checkpoints, errors, DDP."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from helpers.lightning_models import ShapesClassifier
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_maia._options import Backends, Output
from lightning_maia.agents._records import UnitReport
from lightning_maia.analysis._head_features import feeding_layer, head_inputs
from lightning_maia.analysis._masked_head import MaskedHead
from lightning_maia.analysis._spurious_options import Refit, SearchBudget
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.errors import BackendError, ConfigurationError
from lightning_maia.recipes.shapes_backbone import ShapesBackbone, ShapesBackboneClassifier
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import ShapesWorld, SpuriousShapes

WIDTHS = (4, 4, 8, 8)
# The frozen backbone stays in eval mode on purpose.
pytestmark = pytest.mark.filterwarnings(r"ignore:Found .* module\(s\) in eval mode:UserWarning")


class ScriptedAgent:
    """Odd units are spurious, even ones core; with ``edit``, one background edit per unit."""

    name = "scripted"

    def __init__(self, edit: bool = False) -> None:
        self.edit = edit

    def run(self, toolbox: Toolbox, task: Any) -> UnitReport:
        if self.edit:
            (image,) = toolbox.text2image(
                [f"a red circle on {('snow', 'sand')[len(toolbox.images) % 2]}"]
            )
            toolbox.edit_images([image.id], ["change the background to grass"])
        spurious = toolbox.unit.index % 2 == 1
        return UnitReport(
            unit=toolbox.unit.spec,
            task=task.name,
            agent=self.name,
            label="spurious: grass" if spurious else "core: circle",
            description="scripted",
            verdict="spurious" if spurious else "core",
            details={
                "class_effect": 0.1 if spurious else 0.8,
                "attribute_effects": {"background": 0.7},
            },
        )


class BrokenAgent:
    name = "broken"

    def run(self, toolbox: Toolbox, task: Any) -> UnitReport:
        raise BackendError("the endpoint is down")


def model() -> ShapesBackboneClassifier:
    torch.manual_seed(0)
    return ShapesBackboneClassifier(4, backbone=ShapesBackbone(WIDTHS), lr=0.05)


def loaders(train: int = 64, val: int = 32) -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(SpuriousShapes("train", size=train), batch_size=32, shuffle=True),
        DataLoader(SpuriousShapes("val", size=val), batch_size=32),
    )


def trainer(
    tmp_path: Path, callbacks: list[Callback], epochs: int = 1, **kwargs: Any
) -> pl.Trainer:
    options: dict[str, Any] = {
        "default_root_dir": tmp_path,
        "max_epochs": epochs,
        "logger": CSVLogger(tmp_path, name="logs"),
        "callbacks": callbacks,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    }
    return pl.Trainer(**{**options, **kwargs})


@pytest.mark.slow
def test_select_installs_the_masked_head_logs_and_checkpoints(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=4),
        backends=Backends(agent=ScriptedAgent()),
        output=Output(output_dir=str(tmp_path / "maia"), progress=False),
    )
    classifier = model()
    train, val = loaders()
    run = trainer(tmp_path, [remover])
    run.fit(classifier, train, val)

    table = remover.unit_table()
    assert list(table.columns) == [
        "unit",
        "l1_weight",
        "verdict",
        "kept",
        "description",
        "evidence",
    ]
    assert len(table) == 4
    indices = [int(spec.split(":")[1]) for spec in table["unit"]]
    assert table["verdict"].tolist() == ["spurious" if i % 2 else "core" for i in indices]
    assert table["kept"].tolist() == [i % 2 == 0 for i in indices]
    assert (table["l1_weight"] >= 0).all()
    head = classifier.head
    assert isinstance(head, MaskedHead) and head.remedy == "select"
    assert head.kept_units == sorted(i for i in indices if i % 2 == 0)
    assert torch.all(head.weight[:, head.mask == 0] == 0)

    figures = remover.history[-1]
    val_inputs = head_inputs(classifier, head, val.dataset)
    predictions = head(val_inputs.features).argmax(1)
    assert figures["after_accuracy"] == pytest.approx(
        float((predictions == val_inputs.labels).float().mean())
    )
    assert figures["units_kept"] == len(head.kept_units) and figures["units_judged"] == 4
    metrics = pd.read_csv(Path(run.logger.log_dir) / "metrics.csv")
    for name in ("after_balanced_accuracy", "before_worst_group_accuracy", "units_spurious"):
        assert metrics[f"maia/spurious/{name}"].dropna().size == 1
        # Monitorable: fit-end figures reach callback_metrics too.
        assert run.callback_metrics[f"maia/spurious/{name}"].item() == pytest.approx(figures[name])
    assert "maia/spurious/epoch" not in metrics.columns
    # Logged in the row of the last epoch: its step and its epoch, as Lightning logs epochs.
    row = metrics[metrics["maia/spurious/after_accuracy"].notna()]
    assert row["step"].tolist() == [metrics.loc[metrics["val_loss"].notna(), "step"].max()]
    assert row["epoch"].tolist() == [0] and figures["epoch"] == 0
    assert (tmp_path / "maia" / "spurious" / "report.html").exists()
    assert list((Path(run.logger.log_dir) / "maia").rglob("*.csv"))  # the unit table

    run.save_checkpoint(tmp_path / "masked.ckpt")
    loaded = ShapesBackboneClassifier.load_from_checkpoint(tmp_path / "masked.ckpt")
    assert isinstance(loaded.head, MaskedHead)
    assert torch.equal(loaded.head.mask, head.mask)
    images = next(iter(val))[0]
    assert torch.allclose(loaded.eval()(images), classifier.eval()(images), atol=1e-6)
    assert torch.equal(loaded.head.original_weight, head.original_weight)


@pytest.mark.slow
def test_erase_projects_out_the_edited_directions_and_finetunes(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=3),
        refit=Refit(remedy="erase", finetune_epochs=2),
        backends=Backends(agent=ScriptedAgent(edit=True)),
        output=Output(progress=False),
    )
    classifier = model()
    trainer(tmp_path, [remover]).fit(classifier, *loaders())
    head = classifier.head
    assert isinstance(head, MaskedHead) and head.remedy == "erase"
    assert head.kept_units == list(range(8))
    erased = remover.history[-1]["erased_dimensions"]
    assert erased >= 1
    assert float(torch.trace(torch.eye(8) - head.projection)) == pytest.approx(erased, abs=1e-4)
    # The weight lies inside the projection, so a plain Linear loading it agrees.
    assert torch.allclose(head.weight @ head.projection, head.weight, atol=1e-5)


@pytest.mark.slow
def test_every_epoch_keeps_training_with_the_mask_in_place(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=4),
        backends=Backends(agent=ScriptedAgent()),
        when="epoch",
        output=Output(progress=False),
    )
    classifier = model()
    trainer(tmp_path, [remover], epochs=2, limit_train_batches=2).fit(classifier, *loaders())
    assert [row["epoch"] for row in remover.history] == [0, 1]
    head = classifier.head
    assert isinstance(head, MaskedHead)
    assert torch.all(head.weight[:, head.mask == 0] == 0)
    assert remover.state_dict()["history"] == remover.history
    restored = SpuriousFeatureRemover(budget=SearchBudget(k=4))
    restored.load_state_dict(remover.state_dict())
    assert restored.history == remover.history
    assert torch.equal(restored.decision["mask"], head.mask)


def test_a_failing_agent_warns_and_training_finishes(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=2),
        backends=Backends(agent=BrokenAgent()),
        output=Output(progress=False),
    )
    classifier = model()
    run = trainer(tmp_path, [remover], limit_train_batches=1)
    with pytest.warns(UserWarning, match="SpuriousFeatureRemover") as caught:
        run.fit(classifier, *loaders(train=32, val=16))
    messages = [str(w.message) for w in caught]
    assert sum("endpoint is down" in m for m in messages) == 2  # one per unit
    assert any("no unit was judged; the head is unchanged" in m for m in messages)
    assert run.state.finished
    assert type(classifier.head) is nn.Linear  # unchanged
    assert remover.history[-1]["status"] == "failed"
    assert remover.unit_table()["verdict"].tolist() == ["failed", "failed"]


def test_on_error_raise_is_strict(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=1),
        backends=Backends(agent=BrokenAgent()),
        output=Output(on_error="raise", progress=False),
    )
    with pytest.raises(BackendError, match="endpoint is down"):
        trainer(tmp_path, [remover], limit_train_batches=1).fit(model(), *loaders(32, 16))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Refit(remedy="prune"), "`remedy` can be select or erase, got 'prune'"),
        (
            lambda: SpuriousFeatureRemover(when="always"),
            "`when` can be fit_end or epoch, got 'always'",
        ),
        (lambda: Output(on_error="ignore"), "`on_error` can be one of .*'warn', 'raise'"),
        (lambda: SearchBudget(k=0), "`k` can be a positive integer, got 0"),
        (lambda: SearchBudget(exemplars_k=-1), "`exemplars_k` can be a positive integer, got -1"),
        (lambda: SearchBudget(batch_size=True), "`batch_size` can be a positive integer, got True"),
        (lambda: SpuriousFeatureRemover(every_n_epochs=0), "`every_n_epochs` can be a positive"),
        (lambda: Refit(keep=("spurious",)), "`keep`"),
        (lambda: Refit(finetune_epochs=-1), "`finetune_epochs`"),
        (lambda: Refit(erase_energy=1.5), "`erase_energy`"),
        (
            lambda: SpuriousFeatureRemover(candidate_attributes="background"),
            "`candidate_attributes`",
        ),
        (
            lambda: Refit(erase_energy="most"),
            r"`erase_energy` can be a share in \(0, 1\], got 'most'",
        ),
        (
            lambda: SpuriousFeatureRemover(backends=Backends(agent="gpt-4o")),
            r"`agent` can be an agent object .*'scientist' or None, got 'gpt-4o'",
        ),
        (
            lambda: SpuriousFeatureRemover(backends=Backends(agent=3)),
            "`agent` can be an agent object",
        ),
        (
            lambda: Refit(protocol="strong"),
            "`protocol` can be a RefitProtocol or 'cv', got 'strong'",
        ),
        (
            lambda: SpuriousFeatureRemover(refit={"remedy": "erase"}),
            r"`refit` can be a Refit\(\.\.\.\)",
        ),
        (
            lambda: SpuriousFeatureRemover(budget=50),
            r"`budget` can be a SearchBudget\(\.\.\.\) or None, got 50",
        ),
    ],
)
def test_bad_options_are_named(build: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build()


def test_a_bad_head_fails_at_setup_before_training(tmp_path: Path) -> None:
    classifier = model()
    before = classifier.head.weight.detach().clone()
    with pytest.raises(ConfigurationError, match=r"`head` can be an nn\.Linear module: head"):
        trainer(tmp_path, [SpuriousFeatureRemover(head="classifier")]).fit(classifier, *loaders())
    assert torch.equal(before, classifier.head.weight)


def test_feeding_layer_is_found_by_one_forward() -> None:
    classifier = model()
    images = SpuriousShapes("val", size=2)
    assert feeding_layer(classifier, classifier.head, images) == ("backbone.pool", "mean")
    shapes = ShapesClassifier()
    # Its forward takes the spatial mean itself: the conv stack's mean is the head input.
    assert feeding_layer(shapes, shapes.head, ShapesWorld(size=2)) == ("features", "mean")


class SaveHeadPerRank(Callback):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        head = pl_module.head
        torch.save(
            {
                "type": type(head).__name__,
                **{
                    k: v.clone()
                    for k, v in head.state_dict().items()
                    if isinstance(v, torch.Tensor)
                },
            },
            self.directory / f"head-rank{trainer.global_rank}.pt",
        )


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_ranks_install_the_same_head(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=3), refit=Refit(remedy="erase"), output=Output(progress=False)
    )
    train, val = loaders(train=64, val=32)
    run = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        logger=CSVLogger(tmp_path),
        callbacks=[remover, SaveHeadPerRank(tmp_path)],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    run.fit(model(), train, val)
    zero = torch.load(tmp_path / "head-rank0.pt", weights_only=False)
    one = torch.load(tmp_path / "head-rank1.pt", weights_only=False)
    assert zero["type"] == one["type"] == "MaskedHead"
    assert set(zero) == set(one) >= {"weight", "bias", "mask", "projection", "original_weight"}
    for key in ("weight", "bias", "mask", "projection", "original_weight"):
        assert torch.equal(zero[key], one[key]), key
    assert not torch.equal(zero["projection"], torch.eye(8))


def test_apply_works_outside_a_fit_as_an_audit_would(tmp_path: Path) -> None:
    classifier = model()
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=4),
        backends=Backends(agent=ScriptedAgent()),
        dataset=SpuriousShapes("train", size=64),
        val_dataset=SpuriousShapes("val", size=32),
        output=Output(output_dir=str(tmp_path), progress=False),
    )
    figures = remover.apply(classifier)
    assert isinstance(classifier.head, MaskedHead)
    assert figures["units_judged"] == 4 and figures["status"] == "ok"
    assert {"before_balanced_accuracy", "after_worst_group_accuracy"} <= set(figures)
    assert (tmp_path / "spurious" / "report.html").exists()
    with pytest.raises(ConfigurationError, match="`dataset`"):
        SpuriousFeatureRemover().apply(model())


# -- every Lightning load path, on a plain user module (no on_load_checkpoint of its own) -------


class HeadAtTrainStart(Callback):
    """Records the head a resumed fit starts training with."""

    def __init__(self) -> None:
        self.head: nn.Module | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.head = copy.deepcopy(pl_module.head)


def remover_for(remedy: str, when: str) -> SpuriousFeatureRemover:
    agent = ScriptedAgent(edit=remedy == "erase")
    return SpuriousFeatureRemover(
        budget=SearchBudget(k=4),
        refit=Refit(remedy=remedy),
        when=when,
        backends=Backends(agent=agent),
        output=Output(progress=False),
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`:UserWarning")
@pytest.mark.parametrize("when", ["epoch", "fit_end"])
@pytest.mark.parametrize("remedy", ["select", "erase"])
def test_the_masked_head_survives_every_load_path_of_a_plain_module(
    tmp_path: Path, remedy: str, when: str
) -> None:
    train, val = loaders(train=64, val=32)
    user_model = ShapesClassifier(classes=4)  # the user's own module: no checkpoint code
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    run = trainer(tmp_path, [remover_for(remedy, when), checkpoints], limit_train_batches=2)
    run.fit(user_model, train, val)
    head = user_model.head
    assert isinstance(head, MaskedHead) and head.remedy == remedy
    images = next(iter(val))[0]
    with torch.no_grad():
        expected = user_model.eval()(images)

    # ModelCheckpoint's files (saved before the head changed) were saved again with it.
    saved = {Path(checkpoints.best_model_path), Path(checkpoints.last_model_path)}
    assert len(saved) == 2
    for path in saved:
        checkpoint = torch.load(path, weights_only=False)
        assert checkpoint["global_step"] == run.global_step
        assert set(checkpoint["state_dict"]) == set(ShapesClassifier(classes=4).state_dict())
        record = checkpoint["maia_masked_heads"]["head"]
        assert torch.equal(record["mask"], head.mask)
        assert torch.equal(record["projection"], head.projection)
        # load_from_checkpoint (strict) on the plain class: the same logits as the masked head.
        loaded = ShapesClassifier.load_from_checkpoint(path).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(images), expected, atol=1e-5, rtol=1e-5)
    # trainer.validate(ckpt_path=) on a fresh plain module.
    (scores,) = trainer(tmp_path, [], enable_checkpointing=False).validate(
        ShapesClassifier(classes=4), val, ckpt_path=checkpoints.last_model_path, verbose=False
    )
    assert scores["val_loss"] == pytest.approx(
        float(nn.functional.cross_entropy(expected, next(iter(val))[1])), rel=0.2
    )

    # fit(ckpt_path=) with the remover attached: training goes on under the saved mask.
    probe = HeadAtTrainStart()
    resumed = ShapesClassifier(classes=4)
    again = [remover_for(remedy, when), probe]
    trainer(tmp_path, again, epochs=2, limit_train_batches=2, enable_checkpointing=False).fit(
        resumed, train, val, ckpt_path=checkpoints.last_model_path
    )
    start = probe.head
    assert isinstance(start, MaskedHead) and start.remedy == remedy
    assert torch.equal(start.mask, head.mask) and torch.equal(start.projection, head.projection)
    assert torch.equal(start.original_weight, head.original_weight)
    with torch.no_grad():
        torch.testing.assert_close(start(torch.eye(8)), head(torch.eye(8)), atol=1e-5, rtol=1e-5)
    assert isinstance(resumed.head, MaskedHead)
    if remedy == "select":
        assert torch.all(resumed.head.weight[:, resumed.head.mask == 0] == 0)
    # ...and without it: the plain module resumes from the same file.
    plain = ShapesClassifier(classes=4)
    trainer(tmp_path, [], epochs=2, limit_train_batches=1, enable_checkpointing=False).fit(
        plain, train, val, ckpt_path=checkpoints.last_model_path
    )
    assert type(plain.head) is nn.Linear


@pytest.mark.slow
def test_early_stopping_monitors_a_remover_figure(tmp_path: Path) -> None:
    remover = SpuriousFeatureRemover(
        budget=SearchBudget(k=4),
        backends=Backends(agent=ScriptedAgent()),
        when="epoch",
        output=Output(progress=False),
    )
    stop = EarlyStopping(
        monitor="maia/spurious/units_judged",
        mode="max",
        stopping_threshold=3.5,  # stops once more than 3.5 units were judged
        check_on_train_epoch_end=True,
    )
    run = trainer(tmp_path, [remover, stop], epochs=4, limit_train_batches=2)
    run.fit(model(), *loaders())
    assert stop.stopped_epoch == 0 and run.current_epoch == 1  # stopped after the first epoch
    assert [row["epoch"] for row in remover.history] == [0]
    assert run.callback_metrics["maia/spurious/units_judged"].item() == 4.0
    metrics = pd.read_csv(Path(run.logger.log_dir) / "metrics.csv")
    row = metrics[metrics["maia/spurious/units_judged"].notna()]
    # One row per figure set, at the step of the epoch's other metrics.
    assert row["step"].tolist() == [metrics.loc[metrics["val_loss"].notna(), "step"].max()]
    assert "maia/spurious/epoch" not in metrics.columns
