"""The tinted-digits recipe from YAML: LightningCLI fits a real model on real handwriting, and
the remover, configured with the retrieval designer in the file, judges and refits the head."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI

from lightning_maia.analysis._masked_head import MaskedHead
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.recipes.__main__ import config_path


def test_the_yaml_recipe_configures_the_designer_and_fit_removes_colour_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["recipes"])
    cli = LightningCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        args=[
            "fit",
            "--config",
            config_path("tinted_digits"),
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=3",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.backbone_epochs=20",
        ],
    )
    (remover,) = [c for c in cli.trainer.callbacks if isinstance(c, SpuriousFeatureRemover)]
    assert remover.backends.designer == "retrieval"
    figures = remover.history[-1]
    assert figures["status"] == "ok" and figures["units_failed"] == 0
    assert figures["units_judged"] == 12 and figures["units_spurious"] >= 1
    assert isinstance(cli.model.head, MaskedHead)
    judged = {j.unit.index: j.verdict for j in remover.judgements}
    kept = set(remover.decision["kept_units"])  # type: ignore[index]
    assert remover.refit.keep == ("core", "unclear") and remover.refit.protocol == "cv"
    assert remover.refit.copies == (0, 3)  # a YAML list reads as the grid, chosen on val
    scores = {c: figures[f"copies_{c}_val_balanced_accuracy"] for c in (0, 3)}
    assert figures["copies"] == max(scores, key=lambda c: (scores[c], -c))
    assert kept == {u for u, v in judged.items() if v in ("core", "unclear")}
    # Every verdict names the attribute the agent saw drive the unit.
    for judgement in remover.judgements:
        if judgement.verdict == "spurious":
            assert judgement.report.concepts[0].startswith("colour=")
        if judgement.verdict == "core":
            assert judgement.report.concepts[0].startswith("digit=")
    print(figures)
