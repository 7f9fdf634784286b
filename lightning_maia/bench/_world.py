"""``lightning-maia bench world``: how fast the procedural world renders, masks included.

Scenes (one to three objects) are sampled first; only :func:`render_scene` is timed, in this
process, each pass over the scenes repeated and the median pass kept.

>>> figures = run(quick=True)
>>> sorted(figures) == sorted(TABLE_KEYS) and figures["images_per_second_64"] > 0
True
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from lightning_maia.evaluation_constants import (
    WORLD_MAX_OBJECTS,
    WORLD_REPEATS,
    WORLD_SCENES_FULL,
    WORLD_SCENES_QUICK,
)
from lightning_maia.world._render import render_scene
from lightning_maia.world._scene import Scene, SceneSampler

TABLE_KEYS: tuple[str, ...] = (
    "images_per_second_64",
    "images_per_second_224",
    "images",
    "seconds",
)

REPEATS = WORLD_REPEATS


def _median_pass_seconds(scenes: list[Scene], size: int) -> tuple[float, float]:
    """Median and total seconds of ``REPEATS`` passes rendering every scene at ``size``."""
    for scene in scenes[:10]:
        render_scene(scene, size)  # warm the per-size caches outside the clock
    passes = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for scene in scenes:
            render_scene(scene, size)
        passes.append(time.perf_counter() - start)
    return statistics.median(passes), sum(passes)


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Rendering throughput at 64x64 and 224x224, in images per second."""
    rng = np.random.default_rng(seed)
    sampler = SceneSampler(max_objects=WORLD_MAX_OBJECTS)
    count_64, count_224 = WORLD_SCENES_QUICK if quick else WORLD_SCENES_FULL
    scenes = [sampler.sample(rng) for _ in range(count_64)]
    median_64, total_64 = _median_pass_seconds(scenes, 64)
    median_224, total_224 = _median_pass_seconds(scenes[:count_224], 224)
    return {
        "images_per_second_64": count_64 / median_64,
        "images_per_second_224": count_224 / median_224,
        "images": REPEATS * (count_64 + count_224),
        "seconds": total_64 + total_224,
    }
