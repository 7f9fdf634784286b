"""Real-data experiment tools: retrieval over attribute tables, weight-free edits, describers
that need no API, and prompt design for diffusers. See :mod:`.retrieval`, :mod:`.editor`,
:mod:`.describers`, :mod:`.prompt_designer`. What they know about an image (its attributes, the
edit that made it) lives in the provenance store each is given
(:mod:`lightning_maia.world.provenance`)."""

from lightning_maia.tools.realdata._colours import COLOUR_HUES, COLOUR_NAMES, tint
from lightning_maia.tools.realdata._describers import (
    AttributeConcepts,
    ClassifierDescriber,
    CombinedDescriber,
    PixelDescriber,
    TableDescriber,
    default_describer,
)
from lightning_maia.tools.realdata._editor import RealDataEditor
from lightning_maia.tools.realdata._prompt_designer import PromptDesigner
from lightning_maia.tools.realdata._retrieval import RetrievalDesigner, RetrievalGenerator
from lightning_maia.tools.realdata._table import AttributeTable
from lightning_maia.world.provenance import EditRecord, ImageFacts

__all__ = [
    "COLOUR_HUES",
    "COLOUR_NAMES",
    "AttributeConcepts",
    "AttributeTable",
    "ClassifierDescriber",
    "CombinedDescriber",
    "EditRecord",
    "ImageFacts",
    "PixelDescriber",
    "PromptDesigner",
    "RealDataEditor",
    "RetrievalDesigner",
    "RetrievalGenerator",
    "TableDescriber",
    "default_describer",
    "tint",
]
