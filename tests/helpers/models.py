"""Small models and datasets shared by tests (importable by spawned DDP workers)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyConvNet(nn.Module):
    """Two conv layers and a linear head; seeded random weights."""

    def __init__(self, seed: int = 0, width: int = 6) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, stride=2)
        self.head = nn.Linear(width, 4)
        for parameter in self.parameters():
            with torch.no_grad():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(features.mean(dim=(2, 3)))


class RandomImages(Dataset[tuple[torch.Tensor, int]]):
    """Seeded random images in [0, 1] with labels; item i depends only on (seed, i)."""

    def __init__(self, length: int = 50, seed: int = 0, size: int = 8) -> None:
        self.length, self.seed, self.size = length, seed, size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + index)
        return torch.rand(3, self.size, self.size, generator=generator), index % 4
