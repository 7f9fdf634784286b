"""What every saved benchmark JSON records about how it was made, and the one place that writes it.

:func:`write_bench_json` adds ``commit`` (``git rev-parse HEAD`` of the checkout the package
runs from, ``None`` outside one), ``dirty`` (the package's source differs from that commit:
changed or new files; ``None`` outside a checkout), ``seeds`` (the benchmark's own list, else
the ``--seed`` it ran with), ``argv`` and ``backbone_sha256`` (the benchmark's
:func:`state_dict_sha256` of the backbone it used, a list parallel to ``seeds`` where each seed
has its own, ``None`` where it uses none) and ``constants`` (every evaluation constant by name,
:func:`lightning_maia.evaluation_constants.as_dict`: the protocol the figures were measured
under) to the figures, then writes them atomically.

>>> import torch
>>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
>>> _ = b.load_state_dict(a.state_dict())
>>> state_dict_sha256(a) == state_dict_sha256(b)
True
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_maia import evaluation_constants
from lightning_maia._atomic import write_text_atomically

#: The keys :func:`write_bench_json` guarantees in every file it writes.
PROVENANCE_KEYS: tuple[str, ...] = (
    "commit",
    "dirty",
    "seeds",
    "argv",
    "backbone_sha256",
    "constants",
)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def git_state(directory: Path = _PACKAGE_DIR) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``directory``; ``(None, None)`` outside one.

    ``dirty`` looks at ``directory`` only (by default the package's source): a changed or new
    file there is code that ran and is not in the commit, while benchmark results written
    elsewhere in the checkout are not.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if head.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip(), dirty


def state_dict_sha256(module: nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 over a module's state_dict: every tensor's name, dtype, shape and bytes, by name."""
    state = module.state_dict() if isinstance(module, nn.Module) else module
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # Bytes through uint8 so every dtype (bfloat16 included) hashes without numpy.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def with_provenance(
    figures: dict[str, Any],
    *,
    seed: int,
    argv: Sequence[str],
    git: tuple[str | None, bool | None] | None = None,
) -> dict[str, Any]:
    """``figures`` with the provenance keys added (a benchmark's own ``seeds`` list is kept).

    ``git`` is the ``(commit, dirty)`` of the code that ran, taken before the run; by default
    it is read now.
    """
    commit, dirty = git if git is not None else git_state()
    seeds = figures.get("seeds")
    return {
        **figures,
        "commit": commit,
        "dirty": dirty,
        "seeds": list(seeds) if isinstance(seeds, list | tuple) else [seed],
        "argv": list(argv),
        "backbone_sha256": figures.get("backbone_sha256"),
        "constants": evaluation_constants.as_dict(),
    }


def write_bench_json(
    path: Path,
    figures: dict[str, Any],
    *,
    seed: int,
    argv: Sequence[str],
    git: tuple[str | None, bool | None] | None = None,
) -> dict[str, Any]:
    """Write ``figures`` and their provenance to ``path`` atomically; return what was written."""
    payload = with_provenance(figures, seed=seed, argv=argv, git=git)
    write_text_atomically(path, json.dumps(payload, indent=2) + "\n")
    return payload
