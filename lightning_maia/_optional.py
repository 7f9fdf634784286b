"""Availability of optional dependencies, in one place; a missing one raises with its pip line.

>>> require("json", extra="openai").__name__
'json'
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from lightning_maia.errors import MissingDependencyError


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


DIFFUSERS_AVAILABLE = is_available("diffusers")
TRANSFORMERS_AVAILABLE = is_available("transformers")
OPENAI_AVAILABLE = is_available("openai")
TENSORBOARD_AVAILABLE = is_available("tensorboard")
WANDB_AVAILABLE = is_available("wandb")
MLFLOW_AVAILABLE = is_available("mlflow")


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` with the exact pip line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingDependencyError(
            f"{module} is needed for this feature: pip install 'lightning-maia[{extra}]'"
        ) from error
