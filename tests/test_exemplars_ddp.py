"""Under DDP (2 CPU processes, gloo) exemplars merge into the single-process answer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.models import RandomImages, TinyConvNet

from lightning_maia.exemplars import compute_exemplars

SPECS = ["conv1:*", "conv2:1-4"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        result = compute_exemplars(
            TinyConvNet(), RandomImages(length=41), SPECS, k=6, batch_size=5, progress=False
        )
        torch.save(result.state(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_merge_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = compute_exemplars(
        TinyConvNet(), RandomImages(length=41), SPECS, k=6, batch_size=8, progress=False
    ).state()
    for rank in range(2):
        merged = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert merged["layers"].keys() == single["layers"].keys()
        for name, layer in single["layers"].items():
            other = merged["layers"][name]
            assert other["units"] == layer["units"]
            assert torch.equal(other["dataset_indices"], layer["dataset_indices"])
            torch.testing.assert_close(other["activations"], layer["activations"])
            torch.testing.assert_close(other["maps"], layer["maps"])
            # Sketch counts add up exactly, so the thresholds are the same numbers.
            torch.testing.assert_close(other["thresholds"], layer["thresholds"])
            torch.testing.assert_close(other["mean_activations"], layer["mean_activations"])
