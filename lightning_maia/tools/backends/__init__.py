"""Image backends: procedural (default), diffusers, transformers captioners and CLIP, VLM.

A generator makes images from text (:class:`ImageGenerator`), an editor changes them
(:class:`ImageEditor`), a describer puts them in words (:class:`ImageDescriber`). The heavy
libraries (diffusers, transformers, openai) are imported when a backend first loads its model.
"""

from lightning_maia.tools.backends._base import (
    Description,
    ImageDescriber,
    ImageEditor,
    ImageGenerator,
    ImageItem,
    ImageSummarizer,
    Usage,
)
from lightning_maia.tools.backends._captioner import CaptionDescriber
from lightning_maia.tools.backends._clip_concepts import ClipConceptScorer
from lightning_maia.tools.backends._diffusers_backend import DiffusersEditor, DiffusersGenerator
from lightning_maia.tools.backends._procedural import (
    ProceduralDescriber,
    ProceduralEditor,
    ProceduralGenerator,
)
from lightning_maia.tools.backends._vlm_redaction import Redactor
from lightning_maia.tools.backends.vlm import ChatMessage, ChatResult, ToolCall, VLMClient
from lightning_maia.tools.backends.vlm_describer import VLMDescriber

__all__ = [
    "CaptionDescriber",
    "ChatMessage",
    "ChatResult",
    "ClipConceptScorer",
    "Description",
    "DiffusersEditor",
    "DiffusersGenerator",
    "ImageDescriber",
    "ImageEditor",
    "ImageGenerator",
    "ImageItem",
    "ImageSummarizer",
    "ProceduralDescriber",
    "ProceduralEditor",
    "ProceduralGenerator",
    "Redactor",
    "ToolCall",
    "Usage",
    "VLMClient",
    "VLMDescriber",
]
