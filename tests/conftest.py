"""Test-wide settings: never reach a model hub, keep torch single-threaded and deterministic."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
# Lightning 2.6 still calls jsonargparse APIs that warn about their deprecation.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
