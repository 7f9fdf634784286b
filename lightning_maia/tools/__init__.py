"""MAIA's tools: one definition per tool, bound to a subject by a Toolbox; swappable backends.

:class:`Toolbox` binds the tools (:data:`TOOL_NAMES`) to a subject and image backends
(:mod:`.backends`; real-data ones in :mod:`.realdata`); each tool returns small records
(:class:`ExemplarImage`, :class:`UnitCall`, ...) whose text is what an agent reads.
"""

from lightning_maia.tools._definitions import Limits, ToolDefinition
from lightning_maia.tools._images import ImageStore, StoredImage
from lightning_maia.tools._results import (
    EditPair,
    ExemplarImage,
    Experiment,
    GeneratedImage,
    ImageDescription,
    Summary,
    UnitCall,
    observation,
)
from lightning_maia.tools.toolbox import TOOL_NAMES, Toolbox

__all__ = [
    "TOOL_NAMES",
    "EditPair",
    "ExemplarImage",
    "Experiment",
    "GeneratedImage",
    "ImageDescription",
    "ImageStore",
    "Limits",
    "StoredImage",
    "Summary",
    "ToolDefinition",
    "Toolbox",
    "UnitCall",
    "observation",
]
