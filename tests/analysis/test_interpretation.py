"""interpret_units without a Trainer: the units it picks, its reports, and that the callback
(a thin adapter over it) reports the same."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from helpers.lightning_models import ShapesClassifier
from torch.utils.data import DataLoader, TensorDataset

from lightning_maia._options import Backends, Output
from lightning_maia.analysis._interpretation import (
    DESCRIBE_HINT,
    choose_units,
    exemplar_change,
    interpret_units,
)
from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
from lightning_maia.errors import ConfigurationError
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.world import ShapesWorld


def test_interpret_units_studies_the_most_active_units_and_reports_each() -> None:
    torch.manual_seed(0)
    model = ShapesClassifier()
    data = ShapesWorld(size=64, seed=2, split="val")
    result = interpret_units(
        model, data, ["features.2:*"], strategy="top_active", max_units=3, k=4, progress=False
    )
    exemplars = compute_exemplars(model, data, ["features.2:*"], k=4, progress=False)
    means = {u.spec: exemplars.mean_activation(u) for u in exemplars.units}
    assert [r.unit for r in result.reports] == sorted(means, key=lambda spec: -means[spec])[:3]
    assert all(r.status == "ok" and r.label for r in result.reports)
    assert result.summary()["units_described"] == 3.0
    frame = result.to_dataframe()
    assert frame["unit"].tolist() == [r.unit for r in result.reports]
    assert frame["epoch"].tolist() == [0, 0, 0]
    assert set(result.exemplar_indices()) == set(frame["unit"])
    assert all(len(indices) == 4 for indices in result.exemplar_indices().values())

    # The callback runs the same core: the same units and labels at a validation run.
    interpreter = UnitInterpreter(
        units=["features.2:*"],
        strategy="top_active",
        max_units=3,
        exemplars=Exemplars(dataset=data, k=4),
        output=Output(progress=False),
    )
    pl.Trainer(
        logger=False, callbacks=[interpreter], enable_progress_bar=False,
        enable_model_summary=False,
    ).validate(model, DataLoader(data, batch_size=32), verbose=False)  # fmt: skip
    assert [(r.unit, r.label) for r in interpreter.reports] == [
        (r.unit, r.label) for r in result.reports
    ]


def test_choose_units_by_strategy() -> None:
    model = ShapesClassifier()
    data = ShapesWorld(size=32, seed=1, split="val")
    exemplars = compute_exemplars(model, data, ["features.2:0-7"], k=4, progress=False)
    assert [u.spec for u in choose_units(exemplars)] == [f"features.2:{i}" for i in range(8)]
    first = choose_units(exemplars, "random", 3, seed=5, epoch=1)
    assert first == choose_units(exemplars, "random", 3, seed=5, epoch=1)
    assert len(first) == 3 and first == sorted(first)
    # most_changed: a unit whose exemplars are all new ranks above ones that kept theirs.
    kept = {u.spec: exemplars.for_unit(u).dataset_indices.tolist() for u in exemplars.units}
    kept["features.2:6"] = [10_000, 10_001]
    assert [u.spec for u in choose_units(exemplars, "most_changed", 1, previous=kept)] == [
        "features.2:6"
    ]
    assert exemplar_change([1, 2, 3], [2, 3, 4]) == 0.5
    assert exemplar_change(None, [1]) == 1.0
    with pytest.raises(ConfigurationError, match="`strategy` can be top_active"):
        choose_units(exemplars, "loudest")  # type: ignore[arg-type]


def test_interpret_units_on_images_no_describer_reads_says_what_to_configure() -> None:
    noise = TensorDataset(torch.rand(24, 3, 32, 32), torch.randint(0, 9, (24,)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = interpret_units(
            ShapesClassifier(),
            noise,
            ["features.2:0-1"],
            k=3,
            backends=Backends(agent="scientist"),
            progress=False,
        )
    assert [r.label for r in result.reports] == ["(no describer)"] * 2
    assert sum(DESCRIBE_HINT in str(w.message) for w in caught) == 1
