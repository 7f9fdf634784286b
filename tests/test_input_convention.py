"""One input convention: the same photo gives the same activation as an exemplar and through
``Subject.call_units``, whether the data yield display images (and the subject preprocesses)
or normalised tensors (and declare ``denormalize``); pictures are always display images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.photos import write_photo_folder
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_maia.errors import ConfigurationError
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.image_folder import ImageFolder
from lightning_maia.subject import Subject, imagenet_preprocess
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.units import Unit

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
UNITS = ["1:0-3"]


def convnet() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


class NormalisedFolder(Dataset[tuple[Tensor, int]]):
    """The folder's photos normalised with the ImageNet statistics, as many loaders yield."""

    def __init__(self, folder: ImageFolder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.folder[index]
        return (image - MEAN) / STD, label

    @staticmethod
    def denormalize(images: Tensor) -> Tensor:
        return images * STD.to(images.device) + MEAN.to(images.device)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> ImageFolder:
    return ImageFolder(write_photo_folder(tmp_path_factory.mktemp("photos")), size=32)


def assert_exemplars_match_call_units(subject: Subject, data: Dataset, photos: ImageFolder) -> None:
    result = compute_exemplars(subject, data, UNITS, k=4, progress=False)
    for index in range(4):
        unit = Unit("1", index)
        exemplars = result.for_unit(unit)
        pictures = result.images(unit)
        # The pictures are the photos themselves, in [0, 1]...
        expected = torch.stack([photos[int(i)][0] for i in exemplars.dataset_indices])
        torch.testing.assert_close(pictures, expected, atol=1e-5, rtol=0)
        # ... and the subject scores them exactly as the exemplar pass did.
        again = subject.call_units(pictures).unit_activations(unit)
        torch.testing.assert_close(again, exemplars.activations, atol=1e-5, rtol=1e-5)


def test_display_images_with_a_preprocessing_subject(photos: ImageFolder) -> None:
    subject = Subject(convnet(), UNITS, preprocess=imagenet_preprocess())
    assert_exemplars_match_call_units(subject, photos, photos)
    # Without the preprocess the exemplar pass would score other numbers: the test can fail.
    plain = compute_exemplars(subject.model, photos, UNITS, k=4, progress=False)
    routed = compute_exemplars(subject, photos, UNITS, k=4, progress=False)
    assert not torch.allclose(plain.for_unit(Unit("1", 0)).activations,
                              routed.for_unit(Unit("1", 0)).activations)  # fmt: skip


def test_normalised_data_declare_denormalize(photos: ImageFolder) -> None:
    subject = Subject(convnet(), UNITS, preprocess=imagenet_preprocess())
    normalised = NormalisedFolder(photos)
    assert_exemplars_match_call_units(subject, normalised, photos)
    # Both conventions find the same exemplars with the same activations.
    a = compute_exemplars(subject, photos, UNITS, k=4, progress=False)
    b = compute_exemplars(subject, normalised, UNITS, k=4, progress=False)
    torch.testing.assert_close(a.layers["1"].activations, b.layers["1"].activations)
    assert torch.equal(a.layers["1"].dataset_indices, b.layers["1"].dataset_indices)


def test_a_preprocess_that_does_not_undo_denormalize_fails_at_setup(photos: ImageFolder) -> None:
    subject = Subject(convnet(), UNITS, preprocess=lambda images: images * 2.0)
    with pytest.raises(ConfigurationError, match="`preprocess` does not undo it"):
        compute_exemplars(subject, NormalisedFolder(photos), UNITS, k=2, progress=False)


def test_the_toolbox_exemplars_go_through_the_preprocess(photos: ImageFolder) -> None:
    subject = Subject(convnet(), UNITS, preprocess=imagenet_preprocess())
    toolbox = Toolbox(subject, "1:2", exemplar_data=photos, k=4)
    found = toolbox.dataset_exemplars()
    pictures = torch.stack([toolbox.images.get(e.id).image for e in found])
    measured = subject.call_units(pictures).unit_activations(Unit("1", 2))
    torch.testing.assert_close(measured, torch.tensor([e.activation for e in found]))


def test_the_cache_key_includes_the_preprocess(photos: ImageFolder, tmp_path: Path) -> None:
    model = convnet()
    first = compute_exemplars(
        model, photos, UNITS, k=3, cache_dir=tmp_path, progress=False,
        preprocess=imagenet_preprocess(),
    )  # fmt: skip
    resized = compute_exemplars(
        model, photos, UNITS, k=3, cache_dir=tmp_path, progress=False,
        preprocess=imagenet_preprocess(16),
    )  # fmt: skip
    plain = compute_exemplars(model, photos, UNITS, k=3, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("exemplars-*.pt"))) == 3
    fresh = compute_exemplars(model, photos, UNITS, k=3, progress=False,
                              preprocess=imagenet_preprocess(16))  # fmt: skip
    torch.testing.assert_close(resized.layers["1"].activations, fresh.layers["1"].activations)
    assert not torch.allclose(first.layers["1"].activations, resized.layers["1"].activations)
    assert not torch.allclose(first.layers["1"].activations, plain.layers["1"].activations)


def test_the_callback_exemplars_and_its_honest_counts(photos: ImageFolder, tmp_path: Path) -> None:
    import re

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_maia._options import Output
    from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
    from lightning_maia.recipes._loading import PlainModule

    model = PlainModule(convnet())
    interpreter = UnitInterpreter(
        units=["1:0-1"],
        exemplars=Exemplars(dataset=photos, k=3, preprocess=imagenet_preprocess()),
        output=Output(progress=False),
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, logger=False, callbacks=[interpreter], limit_val_batches=1,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="cannot describe these images"):
        trainer.validate(model, DataLoader(photos, batch_size=8), verbose=False)
    # The procedural describer cannot read photos: placeholders, not descriptions.
    assert [r.status for r in interpreter.reports] == ["undescribed", "undescribed"]
    assert trainer.callback_metrics["maia/units_described"] == 0.0
    assert trainer.callback_metrics["maia/units_undescribed"] == 2.0
    assert trainer.callback_metrics["maia/units_failed"] == 0.0
    subject = Subject(model, ["1:0"], preprocess=imagenet_preprocess())
    shown = interpreter.sections[0].exemplars
    found = [re.fullmatch(r"(\S+) \(dataset item (\d+)\)", image.caption) for image in shown]
    assert len(shown) == 3 and all(m is not None for m in found)
    indices = [int(m[2]) for m in found if m is not None]
    assert [m[1] for m in found if m is not None] == [photos.item_name(i) for i in indices]
    measured = subject.call_units(torch.stack([photos[i][0] for i in indices]))
    torch.testing.assert_close(
        measured.unit_activations(Unit("1", 0)),
        torch.tensor([image.activation for image in shown]),
    )


class PhotoClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def test_the_callbacks_feature_passes_follow_the_convention(photos: ImageFolder) -> None:
    from lightning_maia.analysis._flagging_evidence import collect_outputs
    from lightning_maia.analysis._head_features import feeding_layer, head_inputs

    model = PhotoClassifier()
    preprocess = imagenet_preprocess()
    normalised = NormalisedFolder(photos)
    display = head_inputs(model, model.head, photos, preprocess=preprocess)
    declared = head_inputs(model, model.head, normalised, preprocess=preprocess)
    torch.testing.assert_close(display.features, declared.features)
    raw = head_inputs(model, model.head, photos)  # no preprocess: other features
    assert not torch.allclose(raw.features, display.features)
    a = collect_outputs(model, model.head, photos, 8, preprocess)
    b = collect_outputs(model, model.head, normalised, 8, preprocess)
    torch.testing.assert_close(a.logits, b.logits)
    assert feeding_layer(model, model.head, normalised, preprocess) == ("features", "mean")
