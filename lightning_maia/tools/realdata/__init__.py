"""Real-data experiment tools: retrieval over attribute tables, weight-free edits, describers
that need no API, and prompt design for diffusers. See :mod:`.retrieval`, :mod:`.editor`,
:mod:`.describers`, :mod:`.prompt_designer`; :mod:`.facts` holds what edits changed."""

from lightning_maia.tools.realdata.colours import COLOUR_HUES, COLOUR_NAMES, tint
from lightning_maia.tools.realdata.describers import (
    AttributeConcepts,
    ClassifierDescriber,
    CombinedDescriber,
    PixelDescriber,
    TableDescriber,
    default_describer,
)
from lightning_maia.tools.realdata.editor import RealDataEditor
from lightning_maia.tools.realdata.facts import FACTS, EditRecord, ImageFacts
from lightning_maia.tools.realdata.prompt_designer import PromptDesigner
from lightning_maia.tools.realdata.retrieval import RetrievalDesigner, RetrievalGenerator
from lightning_maia.tools.realdata.table import AttributeTable

__all__ = [
    "COLOUR_HUES",
    "COLOUR_NAMES",
    "FACTS",
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
