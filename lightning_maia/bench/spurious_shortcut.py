"""``lightning-maia bench spurious_shortcut``: ``bench spurious --suite shortcut``.

The same benchmark (:mod:`lightning_maia.bench.spurious`) in the setting where the
Lightning-trained ERM head fails: the background matches the shape in 99 of 100 training
items. A name of its own, so ``lightning-maia bench all`` runs it beside the standard setting.
"""

from __future__ import annotations

from typing import Any

from lightning_maia.bench.spurious import TABLE_KEYS
from lightning_maia.bench.spurious import run as run_spurious


def run(quick: bool = False, seed: int = 0, agent: str = "scientist") -> dict[str, Any]:
    """:func:`lightning_maia.bench.spurious.run` with ``suite="shortcut"``."""
    return run_spurious(quick=quick, seed=seed, agent=agent, suite="shortcut")


__all__ = ["TABLE_KEYS", "run"]
