"""``lightning-maia bench tools``: what one experiment costs with the procedural backends.

Median seconds per call for a batch of 8 images, per tool, on a synthetic-neuron subject with
exemplars from ShapesWorld.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from lightning_maia.evaluation_constants import (
    TOOLS_EXEMPLAR_IMAGES,
    TOOLS_REPEATS_FULL,
    TOOLS_REPEATS_QUICK,
)
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import ShapesWorld, build_neuron_suite

TABLE_KEYS = ("text2image_s", "edit_images_s", "call_units_s", "describe_images_s")

_PROMPTS = [
    "a red striped circle on grass",
    "two small yellow stars",
    "a blue heart on a dotted pink background",
    "a large green cross on snow",
    "a white ring on water",
    "a purple checked diamond on sand",
    "a small orange triangle",
    "a black hexagon on a striped grey background",
]


def _median_seconds(call: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        call()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    started = time.perf_counter()
    repeats = TOOLS_REPEATS_QUICK if quick else TOOLS_REPEATS_FULL
    model = build_neuron_suite(seed=seed)
    toolbox = Toolbox(
        Subject(model, ["neurons:*"]),
        "neurons:0",
        exemplar_data=ShapesWorld(size=TOOLS_EXEMPLAR_IMAGES, seed=seed),
        seed=seed,
    )
    toolbox.dataset_exemplars()
    ids = [g.id for g in toolbox.text2image(_PROMPTS, seed=seed)]
    highlighted = [c.highlighted for c in toolbox.call_units(ids)]
    figures = {
        "text2image_s": _median_seconds(lambda: toolbox.text2image(_PROMPTS), repeats),
        "edit_images_s": _median_seconds(
            lambda: toolbox.edit_images(ids, ["make it blue"]), repeats
        ),
        "call_units_s": _median_seconds(lambda: toolbox.call_units(ids), repeats),
        "describe_images_s": _median_seconds(lambda: toolbox.describe_images(highlighted), repeats),
        "summarize_images_s": _median_seconds(
            lambda: toolbox.summarize_images(highlighted), repeats
        ),
    }
    return {
        **figures,
        "batch": len(_PROMPTS),
        "image_size": toolbox.image_size,
        "subject_units": len(model.specs),
        "repeats": repeats,
        "seconds": time.perf_counter() - started,
    }
