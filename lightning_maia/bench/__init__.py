"""The benchmarks behind ``lightning-maia bench NAME``.

Each benchmark module has ``run(quick: bool, seed: int) -> dict`` returning the figures (fixed
keys per benchmark, all JSON-serialisable) and a ``TABLE_KEYS`` tuple naming the figures the
command prints. Modules are imported only when their benchmark runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: Benchmark name -> module under lightning_maia.bench.
BENCHMARKS: dict[str, str] = {
    "exemplars": "lightning_maia.bench._exemplars",
    "faults": "lightning_maia.bench._faults",
    "flagging": "lightning_maia.bench._flagging",
    "overhead": "lightning_maia.bench._overhead",
    "realdata": "lightning_maia.bench._realdata",
    "neurons": "lightning_maia.bench._neurons",
    "spurious": "lightning_maia.bench._spurious",
    "tools": "lightning_maia.bench._tools",
    "world": "lightning_maia.bench._world",
}


def get_benchmark(name: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` function of benchmark ``name``."""
    if name not in BENCHMARKS:
        from lightning_maia.errors import bad_option

        raise bad_option("benchmark", ", ".join(sorted(BENCHMARKS)) + " or all", name)
    module = importlib.import_module(BENCHMARKS[name])
    run: Callable[..., dict[str, Any]] = module.run
    return run


__all__ = ["BENCHMARKS", "get_benchmark"]
