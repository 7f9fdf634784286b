"""The public API: __all__ matches what the package exports, and nothing imports torchvision."""

from __future__ import annotations

import subprocess
import sys

import lightning_maia


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(lightning_maia).items()
        if not name.startswith("_") and not isinstance(value, type(lightning_maia))
    }
    assert set(lightning_maia.__all__) == public
    assert lightning_maia.__all__ == sorted(lightning_maia.__all__)


def test_importing_the_package_imports_no_optional_heavyweights() -> None:
    code = (
        "import sys, lightning_maia, lightning_maia.world, lightning_maia.cli;"
        "bad = [m for m in ('torchvision', 'diffusers', 'transformers', 'openai', 'wandb',"
        " 'mlflow') if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
