"""Tiny random-weight transformers models built from configs, saved as a user's local model is.

Nothing here touches a model hub: configs, weights and tokenizers are built in memory, then
``save_pretrained`` writes them to a directory that the backends load back with
``from_pretrained(..., local_files_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipProcessor,
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

#: Words the tiny tokenizers know.
WORDS = (  # noqa: SIM905 (a word list reads best as one string)
    "a an the photo picture of on in with and dog dogs cat grass sky ball red green blue "
    "circle square striped dotted background"
).split()
IMAGE_SIZE = 32
_TINY_LAYERS = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}


def tiny_blip_processor() -> BlipProcessor:
    """A BLIP processor: 32-pixel images and a WordPiece tokenizer over :data:`WORDS`."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: index for index, token in enumerate([*specials, *WORDS])}
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipProcessor(image_processor=image_processor, tokenizer=BertTokenizer(vocab=vocab))


def save_tiny_blip(directory: Path, seed: int = 0) -> Path:
    """A random-weight ``BlipForConditionalGeneration`` and its processor in ``directory``."""
    processor = tiny_blip_processor()
    tokenizer = processor.tokenizer
    config = BlipConfig(
        vision_config={"image_size": IMAGE_SIZE, "patch_size": 8, **_TINY_LAYERS},
        text_config={
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 48,
            "bos_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **_TINY_LAYERS,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def clip_bpe_vocabulary(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP byte-pair vocabulary and merges in which each of ``words`` is one token."""
    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokens: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for token in specials:
        tokens.setdefault(token, len(tokens))
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        for symbol in symbols:
            tokens.setdefault(symbol, len(tokens))
        merged = symbols[0]
        for symbol in symbols[1:]:
            if (merged, symbol) not in merges:
                merges.append((merged, symbol))
            merged += symbol
            tokens.setdefault(merged, len(tokens))
    return tokens, merges


def tiny_clip_processor() -> CLIPProcessor:
    """A CLIP processor: 32-pixel images (not normalized) and a BPE tokenizer over :data:`WORDS`."""
    vocab, merges = clip_bpe_vocabulary(list(WORDS))
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
    )
    # The tokenizers BPE wants (left, right) pairs, whatever the annotation says.
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A random-weight ``CLIPModel`` and its processor in ``directory``."""
    processor = tiny_clip_processor()
    tokenizer = processor.tokenizer
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **_TINY_LAYERS,
        },
        vision_config={"image_size": IMAGE_SIZE, "patch_size": 8, **_TINY_LAYERS},
        projection_dim=8,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


class ColourClip(nn.Module):
    """A hand-weighted CLIP stand-in whose embeddings are known: colours in RGB space.

    An image embeds as its mean colour (returned as transformers 5 does, in an output object's
    ``pooler_output``); a text embeds as the sum of the RGB directions of the colour words
    "red", "green" and "blue" it contains (returned as a plain tensor, as transformers 4 did).
    """

    def __init__(self, processor: CLIPProcessor) -> None:
        super().__init__()
        tokenizer = processor.tokenizer
        self.word_colours = nn.Embedding(len(tokenizer), 3)
        with torch.no_grad():
            self.word_colours.weight.zero_()
            for channel, colour in enumerate(("red", "green", "blue")):
                (token,) = tokenizer(colour, add_special_tokens=False)["input_ids"]
                self.word_colours.weight[token, channel] = 1.0

    def get_image_features(self, pixel_values: Tensor) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(pooler_output=pixel_values.mean(dim=(2, 3)))

    def get_text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return (self.word_colours(input_ids) * attention_mask[..., None]).sum(dim=1)
