"""``lightning-maia bench exemplars``: the exemplar pass against plain inference, same run.

A small CNN whose probed layer has 512 channels runs over >=2,000 images twice per repeat: once
as plain inference, once as ``compute_exemplars`` for all 512 units (k=15). The figure that
matters is the median ratio of the two times.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_maia.evaluation_constants import (
    EXEMPLARS_BATCH_SIZE,
    EXEMPLARS_IMAGES_FULL,
    EXEMPLARS_IMAGES_QUICK,
    EXEMPLARS_K,
    EXEMPLARS_REPEATS,
    EXEMPLARS_UNITS,
)
from lightning_maia.exemplars import compute_exemplars

TABLE_KEYS = ("ratio_vs_inference", "units", "images", "peak_rss_mb", "seconds")


def probe_cnn(width: int = 512) -> nn.Sequential:
    """A small CNN for 64x64 images; ``0.6`` is the probed 512-channel layer (8x8 maps)."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(128, 256, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, width, 3, padding=1),
        nn.ReLU(),
    )
    return nn.Sequential(
        features,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    images_count = EXEMPLARS_IMAGES_QUICK if quick else EXEMPLARS_IMAGES_FULL
    repeats = EXEMPLARS_REPEATS
    batch_size, k = EXEMPLARS_BATCH_SIZE, EXEMPLARS_K
    units = EXEMPLARS_UNITS
    model = probe_cnn(units).eval()
    generator = torch.Generator().manual_seed(seed)
    dataset = TensorDataset(torch.rand(images_count, 3, 64, 64, generator=generator))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)

    def inference() -> None:
        with torch.inference_mode():
            for (batch,) in loader:
                model(batch)

    def exemplar_pass() -> None:
        compute_exemplars(model, loader, ["0.6:*"], k=k, progress=False)

    started = time.perf_counter()
    inference()  # warm-up: allocator and kernels
    ratios, inference_seconds, exemplar_seconds = [], [], []
    for _ in range(repeats):
        tic = time.perf_counter()
        inference()
        plain = time.perf_counter() - tic
        tic = time.perf_counter()
        exemplar_pass()
        with_exemplars = time.perf_counter() - tic
        inference_seconds.append(plain)
        exemplar_seconds.append(with_exemplars)
        ratios.append(with_exemplars / plain)
    return {
        "ratio_vs_inference": statistics.median(ratios),
        "ratios": ratios,
        "inference_seconds": statistics.median(inference_seconds),
        "exemplar_seconds": statistics.median(exemplar_seconds),
        "units": units,
        "k": k,
        "images": images_count,
        "repeats": repeats,
        "peak_rss_mb": _peak_rss_mb(),
        "seconds": time.perf_counter() - started,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
    }
