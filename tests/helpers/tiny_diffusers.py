"""Tiny random-weight diffusers pipelines built from configs: no hub, no downloads.

Each builder returns a real pipeline (Stable Diffusion, InstructPix2Pix, image-to-image) small
enough to run two denoising steps on a CPU in milliseconds; ``save_tiny_pipelines`` writes them
with ``save_pretrained`` so tests load them back through the path a user's local folder takes.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

# Every tiny component shares these sizes; the text encoder's hidden size feeds cross-attention.
TEXT_HIDDEN_SIZE = 8
TOKENIZER_MAX_LENGTH = 16
WORDS = ("a", "red", "blue", "green", "cat", "dog", "circle", "square", "make", "it", "the")


def tiny_tokenizer() -> Any:
    """A CLIP tokenizer built in memory: specials, single letters and a few whole words."""
    from transformers import CLIPTokenizer

    tokens = ["<|startoftext|>", "<|endoftext|>", "<unk>", "<pad>"]
    tokens += list(string.ascii_lowercase)
    tokens += [f"{letter}</w>" for letter in string.ascii_lowercase]
    tokens += [f"{word}</w>" for word in WORDS if f"{word}</w>" not in tokens]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=TOKENIZER_MAX_LENGTH,
    )


def tiny_text_encoder(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=3,
    )
    return CLIPTextModel(config).eval()


def tiny_unet(in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    unet: Any = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    return unet.eval()


def tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    vae: Any = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=8,
    )
    return vae.eval()


def tiny_components(seed: int = 0, unet_in_channels: int = 4) -> dict[str, Any]:
    """The components every tiny Stable Diffusion-style pipeline takes, seeded."""
    from diffusers import DDIMScheduler

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    return {
        "unet": tiny_unet(unet_in_channels),
        "vae": tiny_vae(),
        "text_encoder": tiny_text_encoder(len(tokenizer)),
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def tiny_text_to_image_pipeline(seed: int = 0) -> Any:
    """A tiny ``StableDiffusionPipeline`` (VAE scale factor 1: one down block)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**tiny_components(seed))


def tiny_instruct_pix2pix_pipeline(seed: int = 0) -> Any:
    """A tiny ``StableDiffusionInstructPix2PixPipeline`` (UNet takes latents + image latents)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    return StableDiffusionInstructPix2PixPipeline(**tiny_components(seed, unet_in_channels=8))


def tiny_image_to_image_pipeline(seed: int = 0) -> Any:
    """A tiny ``StableDiffusionImg2ImgPipeline``."""
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(**tiny_components(seed))


def save_tiny_pipelines(root: Path) -> dict[str, Path]:
    """Save one tiny pipeline of each kind under ``root``; returns kind -> folder."""
    builders = {
        "text-to-image": tiny_text_to_image_pipeline,
        "instruct-pix2pix": tiny_instruct_pix2pix_pipeline,
        "image-to-image": tiny_image_to_image_pipeline,
    }
    folders = {}
    for kind, build in builders.items():
        folder = root / kind
        build().save_pretrained(folder)
        folders[kind] = folder
    return folders
