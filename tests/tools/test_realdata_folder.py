"""The README's "Your own data" path: a folder of real images (digits saved as PNG files) and
an attribute CSV, to a unit description by the offline agent."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch import Tensor, nn

from lightning_maia.agents.scientist import ScientistAgent
from lightning_maia.agents.scientist_designers import experiment_setup
from lightning_maia.agents.tasks import TaskSpec
from lightning_maia.bench._tinted_digits import TintedDigits
from lightning_maia.image_folder import ImageFolder
from lightning_maia.subject import Subject
from lightning_maia.tools.realdata import AttributeTable
from lightning_maia.tools.toolbox import Toolbox


class Redness(nn.Module):
    """One hand-weighted unit: how much red ink there is."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        red = (x[:, 0] - x[:, 1:].max(1).values).clamp_min(0).mean((1, 2))
        return self.features(red[:, None])


def test_a_folder_and_an_attribute_csv_give_a_unit_description(tmp_path: Path) -> None:
    digits = TintedDigits.split("test", classes=3, copies=3, size=16, seed=0)
    rows = []
    for index in range(len(digits)):
        image, label = digits[index]
        folder = tmp_path / "photos" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{index:04d}.png")
        rows.append((str(label), f"{index:04d}.png", digits.colours[index]))
    # ImageFolder reads classes in sorted order, files sorted: the CSV follows that order.
    frame = pd.DataFrame(rows, columns=["digit", "file", "colour"]).sort_values(["digit", "file"])
    frame.to_csv(tmp_path / "attributes.csv", index=False)

    photos = ImageFolder(tmp_path / "photos", size=16)
    table = AttributeTable(
        pd.read_csv(tmp_path / "attributes.csv", dtype=str), photos, columns=["digit", "colour"]
    )
    setup = experiment_setup("retrieval", table=table, class_names=photos.class_names)
    assert setup.designer.class_attribute == "digit"  # type: ignore[attr-defined]
    model = Redness().eval()
    toolbox = Toolbox(
        Subject(model, ["features:*"]), "features:0", exemplar_data=photos, k=8,
        generator=setup.generator, editor=setup.editor, describer=setup.describer,
    )  # fmt: skip
    report = ScientistAgent(designer=setup.designer).run(toolbox, TaskSpec("describe_unit"))
    assert report.ok, report.failure_reason
    assert report.concepts == ("colour=red",)
    assert report.label == "colour red"
