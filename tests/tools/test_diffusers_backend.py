"""The diffusers backends on real pipelines with tiny random weights, saved and loaded locally."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers.tiny_diffusers import save_tiny_pipelines, tiny_text_to_image_pipeline
from PIL import Image

from lightning_maia._optional import require
from lightning_maia.errors import BackendError, ConfigurationError, MissingDependencyError
from lightning_maia.tools.backends._base import ImageEditor, ImageGenerator, ImageItem
from lightning_maia.tools.backends._diffusers_backend import DiffusersEditor, DiffusersGenerator

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

STEPS = 2


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_tiny_pipelines(tmp_path_factory.mktemp("tiny-diffusers"))


@pytest.fixture(scope="session")
def generator(tiny_folders: dict[str, Path]) -> DiffusersGenerator:
    return DiffusersGenerator(
        tiny_folders["text-to-image"], device="cpu", num_inference_steps=STEPS, batch_size=3
    )


@pytest.fixture(scope="session")
def pix2pix_editor(tiny_folders: dict[str, Path]) -> DiffusersEditor:
    return DiffusersEditor(tiny_folders["instruct-pix2pix"], num_inference_steps=STEPS)


@pytest.fixture(scope="session")
def image_to_image_editor(tiny_folders: dict[str, Path]) -> DiffusersEditor:
    return DiffusersEditor(
        tiny_folders["image-to-image"], kind="auto", num_inference_steps=STEPS, strength=1.0
    )


def _stack(items: list[ImageItem]) -> torch.Tensor:
    return torch.stack([item.image for item in items])


def _originals(*shapes: tuple[int, int], seed: int = 0) -> list[ImageItem]:
    generator = torch.Generator().manual_seed(seed)
    return [
        ImageItem(torch.rand(3, height, width, generator=generator)) for height, width in shapes
    ]


# --- generator -------------------------------------------------------------------------------


def test_generator_loads_a_local_folder_lazily(tiny_folders: dict[str, Path]) -> None:
    backend = DiffusersGenerator(tiny_folders["text-to-image"], num_inference_steps=STEPS)
    assert isinstance(backend, ImageGenerator)
    assert backend.name == "diffusers"
    assert not backend.loaded
    assert "loaded=False" in repr(backend)
    backend.generate(["a cat"], [0], 8)
    assert backend.loaded
    assert type(backend.pipeline).__name__ == "StableDiffusionPipeline"
    assert backend.pipeline.device.type == "cpu"
    assert backend.pipeline.unet.dtype == torch.float32


def test_constructing_a_backend_imports_no_diffusers(tiny_folders: dict[str, Path]) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from lightning_maia.tools.backends._diffusers_backend import (
            DiffusersEditor, DiffusersGenerator,
        )
        DiffusersGenerator({str(tiny_folders["text-to-image"])!r}, dtype="float16", device="cpu")
        DiffusersEditor("someone/instruct-pix2pix", kind="instruct-pix2pix")
        heavy = sorted(m for m in ("diffusers", "transformers") if m in sys.modules)
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_generated_images_are_display_images(generator: DiffusersGenerator) -> None:
    items = generator.generate(["a red cat", "a blue dog", "a green square"], [0, 1, 2], 16)
    assert len(items) == 3
    for item in items:
        assert item.scene is None
        assert item.image.shape == (3, 16, 16)
        assert item.image.dtype == torch.float32
        assert item.image.min() >= 0
        assert item.image.max() <= 1
        assert item.image.std() > 0.01  # random weights must not saturate into a flat image


def test_sides_off_the_vae_grid_are_resized_to_the_asked_size(
    generator: DiffusersGenerator,
) -> None:
    (item,) = generator.generate(["a cat"], [0], 13)
    assert item.image.shape == (3, 13, 13)
    assert 0 <= item.image.min() <= item.image.max() <= 1


def test_a_seed_makes_an_image_reproducible(generator: DiffusersGenerator) -> None:
    first, same, other = generator.generate(["a red cat"] * 3, [7, 7, 8], 16)
    assert torch.equal(first.image, same.image)
    assert (first.image - other.image).abs().max() > 1e-3
    (again,) = generator.generate(["a red cat"], [7], 16)
    torch.testing.assert_close(again.image, first.image, atol=1e-5, rtol=0)


def test_the_prompt_changes_the_image(generator: DiffusersGenerator) -> None:
    red, blue = generator.generate(["a red circle", "a blue square"], [3, 3], 16)
    assert (red.image - blue.image).abs().max() > 1e-4


def test_batching_gives_the_images_of_one_by_one(generator: DiffusersGenerator) -> None:
    prompts, seeds = ["a cat", "a dog", "a red cat", "the square", "a circle"], [0, 1, 2, 3, 4]
    one_by_one = DiffusersGenerator(
        pipeline=generator.pipeline, num_inference_steps=STEPS, batch_size=1
    )
    batched = _stack(generator.generate(prompts, seeds, 16))
    single = _stack(one_by_one.generate(prompts, seeds, 16))
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)


def test_a_built_pipeline_gives_the_images_of_its_saved_copy(
    generator: DiffusersGenerator,
) -> None:
    built = DiffusersGenerator(pipeline=tiny_text_to_image_pipeline(), num_inference_steps=STEPS)
    torch.testing.assert_close(
        _stack(built.generate(["a cat", "a dog"], [0, 1], 16)),
        _stack(generator.generate(["a cat", "a dog"], [0, 1], 16)),
        atol=1e-5,
        rtol=0,
    )


def test_pipeline_kwargs_reach_the_pipeline(generator: DiffusersGenerator) -> None:
    plain = DiffusersGenerator(pipeline=generator.pipeline, num_inference_steps=STEPS)
    negative = DiffusersGenerator(
        pipeline=generator.pipeline,
        num_inference_steps=STEPS,
        pipeline_kwargs={"negative_prompt": "a dog"},
    )
    (without,) = plain.generate(["a cat"], [0], 16)
    (with_negative,) = negative.generate(["a cat"], [0], 16)
    assert (without.image - with_negative.image).abs().max() > 1e-4


def test_a_failing_pipeline_raises_backend_error_with_its_class(
    tiny_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = DiffusersGenerator(tiny_folders["text-to-image"], num_inference_steps=STEPS)

    def broken_forward(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the unet broke")

    monkeypatch.setattr(backend.pipeline.unet, "forward", broken_forward)
    with pytest.raises(BackendError, match=r"StableDiffusionPipeline.*the unet broke"):
        backend.generate(["a cat"], [0], 8)


def test_the_dtype_option_sets_the_loaded_weights(tiny_folders: dict[str, Path]) -> None:
    backend = DiffusersGenerator(tiny_folders["text-to-image"], dtype="bfloat16", device="cpu")
    assert backend.pipeline.unet.dtype == torch.bfloat16
    assert backend.pipeline.text_encoder.dtype == torch.bfloat16


class PillowPipeline:
    """A duck-typed pipeline that ignores ``output_type`` and answers PIL images."""

    vae_scale_factor = 16

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, prompt: list[str], generator: list[torch.Generator], **kwargs: Any) -> Any:
        self.calls.append({"prompt": prompt, **kwargs})
        images = []
        for seeded in generator:
            pixels = torch.randint(0, 256, (kwargs["height"], kwargs["width"], 3), generator=seeded)
            images.append(Image.fromarray(pixels.to(torch.uint8).numpy()))
        return SimpleNamespace(images=images)


def test_pil_outputs_and_coarse_vae_grids_are_handled() -> None:
    pipeline = PillowPipeline()
    backend = DiffusersGenerator(
        pipeline=pipeline,
        batch_size=2,
        guidance_scale=0.0,
        pipeline_kwargs={"negative_prompt": "x"},
    )
    items = backend.generate(["a", "b", "c"], [0, 1, 0], 20)
    assert [call["height"] for call in pipeline.calls] == [32, 32]  # 20 rounded up to 16s
    assert pipeline.calls[0]["negative_prompt"] == ["x", "x"]  # one per prompt of the batch
    assert pipeline.calls[1]["guidance_scale"] == 0.0
    assert "num_inference_steps" not in pipeline.calls[0]  # None: the pipeline's default
    assert [item.image.shape for item in items] == [(3, 20, 20)] * 3
    assert all(item.image.dtype == torch.float32 for item in items)
    assert (
        0 <= min(item.image.min() for item in items) <= max(item.image.max() for item in items) <= 1
    )
    assert torch.equal(items[0].image, items[2].image)


# --- configuration errors --------------------------------------------------------------------


def test_a_missing_local_folder_fails_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigurationError, match="nothing is downloaded") as caught:
        DiffusersGenerator(missing)
    assert str(missing) in str(caught.value)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")
def test_a_hub_id_missing_from_the_cache_fails_on_load_without_downloading() -> None:
    backend = DiffusersGenerator("lightning-maia-tests/not-in-any-cache")
    with pytest.raises(ConfigurationError, match="nothing is downloaded") as caught:
        backend.load()
    assert "lightning-maia-tests/not-in-any-cache" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"dtype": "float64"}, "dtype"),
        ({"dtype": torch.int8}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_inference_steps": -1}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"pipeline_kwargs": {"generator": None}}, "pipeline_kwargs"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError, match=f"`{option}`"):
        DiffusersGenerator("someone/model", **options)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"kind": "inpainting"}, "kind"),
        ({"strength": 1.5}, "strength"),
        ({"kind": "instruct-pix2pix", "strength": 0.5}, "strength"),
        ({"kind": "image-to-image", "image_guidance_scale": 1.5}, "image_guidance_scale"),
    ],
)
def test_bad_editor_options_name_the_option(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigurationError, match=f"`{option}`"):
        DiffusersEditor("someone/model", **options)


def test_a_folder_of_the_wrong_pipeline_kind_is_a_configuration_error(
    tiny_folders: dict[str, Path],
) -> None:
    backend = DiffusersGenerator(tiny_folders["instruct-pix2pix"])
    with pytest.raises(ConfigurationError, match="StableDiffusionInstructPix2PixPipeline"):
        backend.load()
    assert not backend.loaded


def test_model_and_pipeline_are_exclusive(generator: DiffusersGenerator) -> None:
    with pytest.raises(ConfigurationError, match="either `model`"):
        DiffusersGenerator()
    with pytest.raises(ConfigurationError, match="either `model`"):
        DiffusersGenerator("someone/model", pipeline=generator.pipeline)


def test_one_seed_per_prompt(generator: DiffusersGenerator) -> None:
    with pytest.raises(ConfigurationError, match="2 prompts, 1 seeds"):
        generator.generate(["a cat", "a dog"], [0], 16)
    with pytest.raises(ConfigurationError, match="`size`"):
        generator.generate(["a cat"], [0], 0)


def test_a_missing_diffusers_raises_with_the_pip_line(
    tiny_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    constructed = DiffusersGenerator(tiny_folders["text-to-image"])
    monkeypatch.setitem(sys.modules, "diffusers", None)
    pip_line = "pip install 'lightning-maia[diffusers]'"
    with pytest.raises(MissingDependencyError, match=pip_line.replace("[", r"\[")):
        require("diffusers", extra="diffusers")
    with pytest.raises(MissingDependencyError, match="lightning-maia"):
        DiffusersGenerator(tiny_folders["text-to-image"])
    with pytest.raises(MissingDependencyError, match="lightning-maia"):
        constructed.load()


# --- editor ----------------------------------------------------------------------------------


def test_instruct_pix2pix_edits_keep_the_original_size(pix2pix_editor: DiffusersEditor) -> None:
    assert isinstance(pix2pix_editor, ImageEditor)
    assert pix2pix_editor.name == "diffusers-edit"
    originals = _originals((16, 16), (12, 20), (16, 16))
    edited = pix2pix_editor.edit(originals, ["make it red"] * 3, [0, 1, 2])
    assert pix2pix_editor.resolved_kind == "instruct-pix2pix"
    assert type(pix2pix_editor.pipeline).__name__ == "StableDiffusionInstructPix2PixPipeline"
    for original, item in zip(originals, edited, strict=True):
        assert item.scene is None
        assert item.image.shape == original.image.shape
        assert item.image.dtype == torch.float32
        assert 0 <= item.image.min() <= item.image.max() <= 1


def test_an_edit_depends_on_its_instruction_and_seed(pix2pix_editor: DiffusersEditor) -> None:
    original = _originals((16, 16))[0]
    red, red_again, blue, red_other_seed = pix2pix_editor.edit(
        [original] * 4, ["make it red", "make it red", "make it blue", "make it red"], [0, 0, 0, 5]
    )
    assert torch.equal(red.image, red_again.image)
    assert (red.image - blue.image).abs().max() > 1e-4
    assert (red.image - red_other_seed.image).abs().max() > 1e-4


def test_edit_batches_give_the_edits_of_one_by_one(pix2pix_editor: DiffusersEditor) -> None:
    originals = _originals((16, 16), (16, 16), (8, 24), (16, 16), seed=3)
    instructions, seeds = ["make it red", "a cat", "make it blue", "a dog"], [4, 5, 6, 7]
    one_by_one = DiffusersEditor(
        pipeline=pix2pix_editor.pipeline, num_inference_steps=STEPS, batch_size=1
    )
    torch.testing.assert_close(
        torch.cat(
            [item.image.flatten() for item in pix2pix_editor.edit(originals, instructions, seeds)]
        ),
        torch.cat(
            [item.image.flatten() for item in one_by_one.edit(originals, instructions, seeds)]
        ),
        atol=1e-4,
        rtol=0,
    )


def test_image_to_image_is_chosen_by_the_pipeline_class(
    image_to_image_editor: DiffusersEditor,
) -> None:
    originals = _originals((16, 16), (10, 14))
    edited = image_to_image_editor.edit(originals, ["a red cat", "a dog"], [0, 1])
    assert image_to_image_editor.resolved_kind == "image-to-image"
    assert type(image_to_image_editor.pipeline).__name__ == "StableDiffusionImg2ImgPipeline"
    assert [item.image.shape for item in edited] == [(3, 16, 16), (3, 10, 14)]
    (other_seed,) = image_to_image_editor.edit(originals[:1], ["a red cat"], [9])
    assert (edited[0].image - other_seed.image).abs().max() > 1e-4


def test_strength_moves_an_image_to_image_edit(
    image_to_image_editor: DiffusersEditor,
) -> None:
    original = _originals((16, 16))[0]
    gentle = DiffusersEditor(
        pipeline=image_to_image_editor.pipeline, num_inference_steps=4, strength=0.5
    )
    (strong,) = image_to_image_editor.edit([original], ["a cat"], [0])
    (weak,) = gentle.edit([original], ["a cat"], [0])
    assert (strong.image - weak.image).abs().max() > 1e-4


def test_a_text_to_image_pipeline_is_reused_for_image_to_image(
    generator: DiffusersGenerator,
) -> None:
    editor = DiffusersEditor(
        pipeline=generator.pipeline, kind="image-to-image", num_inference_steps=STEPS
    )
    (edited,) = editor.edit(_originals((16, 16)), ["a cat"], [0])
    assert type(editor.pipeline).__name__ == "StableDiffusionImg2ImgPipeline"
    assert editor.pipeline.unet is generator.pipeline.unet  # no second copy of the weights
    assert edited.image.shape == (3, 16, 16)


def test_instruct_pix2pix_needs_a_pipeline_that_takes_an_image(
    generator: DiffusersGenerator,
) -> None:
    editor = DiffusersEditor(pipeline=generator.pipeline, kind="instruct-pix2pix")
    with pytest.raises(ConfigurationError, match="takes an image"):
        editor.load()


def test_an_edit_needs_display_images(pix2pix_editor: DiffusersEditor) -> None:
    with pytest.raises(ConfigurationError, match=r"\(3, H, W\)"):
        pix2pix_editor.edit([ImageItem(torch.rand(16, 16))], ["make it red"], [0])
    with pytest.raises(ConfigurationError, match="1 images, 2 instructions"):
        pix2pix_editor.edit(_originals((16, 16)), ["a", "b"], [0, 1])
