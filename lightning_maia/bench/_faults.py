"""``lightning-maia bench faults``: training with a hostile VLM endpoint stays within bounds.

Every hostile script of :mod:`lightning_maia.testing.hostile` (invalid arguments for every tool,
C-level programs, a flood of 100 calls x 32 images, a 5 MB reply), in tools and code mode, plays
against a real ``Trainer.fit`` with UnitInterpreter and the VLM agent, beside the same fit with
a well-behaved model (the baseline: it answers at once). Each fit runs in a fresh process, so
that its peak memory (the resident set of the training process) is its own; code-mode program
workers are capped by their address-space limit (``program_memory_cap_mb``). The SIGTERM
check starts a fit whose model writes endless programs and measures how long the process takes
to exit after ``SIGTERM``.

The bounds (``BOUNDS``) are the benchmark's goals: every fit finishes, every hostile unit's report
is failed or forced with a reason, artifacts stay under 1 MB per unit, a fit takes at most
``wall_s`` seconds, peak memory stays within ``extra_peak_mb`` of the baseline's, and the
process exits within ``sigterm_exit_s`` of SIGTERM. ``goals_met`` says whether all held.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightning_maia.evaluation_constants import (
    FAULTS_BOUNDS,
    FAULTS_SIGTERM_EXIT_S,
)
from lightning_maia.testing.hostile import MODES, SCENARIOS

TABLE_KEYS = (
    "goals_met",
    "max_wall_s",
    "max_extra_peak_mb",
    "max_artifact_bytes_per_unit",
    "sigterm_exit_s",
)
BOUNDS = dict(FAULTS_BOUNDS)
SIGTERM_EXIT_S = FAULTS_SIGTERM_EXIT_S
_ROOT = Path(__file__).resolve().parents[2]


def run(quick: bool = False, seed: int = 0) -> dict[str, Any]:
    started = time.perf_counter()
    units = 1 if quick else 2
    cases: list[tuple[str, str, bool]] = []
    for index, (scenario, mode) in enumerate((s, m) for s in SCENARIOS for m in MODES):
        cases.append((scenario, mode, index % 2 == 1))  # alternate foreground and background
    baseline = _child_fit("baseline", "tools", False, units, seed)
    runs = [_child_fit(scenario, mode, bg, units, seed) for scenario, mode, bg in cases]
    sigterm = _sigterm_exit_seconds(seed)
    for entry in runs:
        entry["extra_peak_mb"] = entry["peak_rss_mb"] - baseline["peak_rss_mb"]
        entry["within_bounds"] = bool(
            entry["finished"]
            and entry["all_failed_or_forced"]
            and entry["wall_s"] <= BOUNDS["wall_s"]
            and entry["extra_peak_mb"] <= BOUNDS["extra_peak_mb"]
            and entry["artifact_bytes_per_unit"] < BOUNDS["artifact_bytes_per_unit"]
        )
    return {
        "goals_met": all(e["within_bounds"] for e in runs) and sigterm <= SIGTERM_EXIT_S,
        "max_wall_s": max(e["wall_s"] for e in runs),
        "max_extra_peak_mb": max(e["extra_peak_mb"] for e in runs),
        "max_artifact_bytes_per_unit": max(e["artifact_bytes_per_unit"] for e in runs),
        "sigterm_exit_s": sigterm,
        "bounds": {**BOUNDS, "sigterm_exit_s": SIGTERM_EXIT_S},
        "baseline": baseline,
        "runs": runs,
        "units_per_fit": units,
        "seed": seed,
        "commit": _commit(),
        "seconds": time.perf_counter() - started,
        "note": "each fit in a fresh process on a shared 2-core CPU machine: times are noisy",
    }


# -- one fit, in a child process ----------------------------------------------------------------


def _child_fit(scenario: str, mode: str, background: bool, units: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="maia-faults-") as folder:
        command = [
            sys.executable,
            "-c",
            "import sys, json; from lightning_maia.bench._faults import fit_once; "
            "print('RESULT ' + json.dumps(fit_once(*json.loads(sys.argv[1]))))",
            json.dumps([scenario, mode, background, units, seed, folder]),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, env=_environment(), timeout=600, check=False
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {
            "scenario": scenario,
            "mode": mode,
            "background": background,
            "finished": False,
            "all_failed_or_forced": False,
            "wall_s": float("inf"),
            "peak_rss_mb": float("inf"),
            "artifact_bytes_per_unit": float("inf"),
            "error": (done.stderr or done.stdout)[-2_000:],
        }
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


def fit_once(
    scenario: str, mode: str, background: bool, units: int, seed: int, folder: str
) -> dict[str, Any]:
    """One fit against ``scenario`` (or ``baseline``); its figures (run in a fresh process)."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_maia._options import Backends, Output
    from lightning_maia.agents.vlm_agent import VLMAgent
    from lightning_maia.bench._overhead import ShapesCNN
    from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
    from lightning_maia.testing._chat_server import ChatServer, tool_call_reply
    from lightning_maia.testing.hostile import hostile_script
    from lightning_maia.tools.backends.vlm import VLMClient
    from lightning_maia.world import ShapesWorld

    root = Path(folder)
    if scenario == "baseline":
        answer = tool_call_reply("final_answer", {"label": "ok", "description": "a good answer"})
        script: Any = lambda request: answer  # noqa: E731
    else:
        script = hostile_script(scenario, mode)
    pl.seed_everything(seed, verbose=False)
    with ChatServer(script, max_lifetime_s=600) as server:
        client = VLMClient(model="bench", base_url=server.base_url, timeout=30, max_retries=0)
        agent = VLMAgent(
            client,
            mode=mode,
            max_rounds=4,
            program_timeout_s=10,
            cache_dir=root / "cache",
        )
        interpreter = UnitInterpreter(
            units=[f"features.3:0-{units - 1}"],
            backends=Backends(agent=agent),
            exemplars=Exemplars(k=4),
            output=Output(output_dir=str(root / "maia"), progress=False),
            background=background,
        )
        trainer = pl.Trainer(
            default_root_dir=root,
            max_epochs=1,
            limit_train_batches=2,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[interpreter],
            accelerator="cpu",
            devices=1,
        )
        train = DataLoader(ShapesWorld(size=64, seed=seed), batch_size=32)
        val = DataLoader(ShapesWorld(size=32, seed=seed + 1, split="val"), batch_size=32)
        tic = time.perf_counter()
        trainer.fit(ShapesCNN(), train, val)
        wall = time.perf_counter() - tic
        requests = len(server.chat_requests)
    reports = interpreter.reports
    artifacts = sum(
        path.stat().st_size
        for part in ("maia", "cache")
        for path in (root / part).rglob("*")
        if path.is_file()
    )
    # The fit's own peak; program workers are capped by RLIMIT_AS (a forked child's ru_maxrss
    # would count the pages it shared with this process, so it is not reported).
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "scenario": scenario,
        "mode": mode,
        "background": background,
        "finished": bool(trainer.state.finished),
        "wall_s": wall,
        "peak_rss_mb": own / 1024,
        "program_memory_cap_mb": agent.program_max_memory_mb,
        "artifact_bytes": artifacts,
        "artifact_bytes_per_unit": artifacts / max(len(reports), 1),
        "requests": requests,
        "statuses": [r.status for r in reports],
        "reasons": [r.failure_reason or r.details.get("forced") for r in reports],
        "images": [r.images for r in reports],
        "all_failed_or_forced": bool(reports)
        and all((not r.ok and r.failure_reason) or r.details.get("forced") for r in reports),
    }


# -- SIGTERM ------------------------------------------------------------------------------------

_SIGTERM_PROGRAM = """
import sys
import lightning.pytorch as pl
from torch.utils.data import DataLoader
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.bench._overhead import ShapesCNN
from lightning_maia._options import Backends, Output
from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
from lightning_maia.testing._chat_server import ChatServer, text_reply
from lightning_maia.tools.backends.vlm import VLMClient
from lightning_maia.world import ShapesWorld

def answer(request):
    print("AGENT RUNNING", flush=True)
    return text_reply("```python\\nwhile True:\\n    pass\\n```")

with ChatServer(answer, max_lifetime_s=600) as server:
    client = VLMClient(model="m", base_url=server.base_url, timeout=10, max_retries=0)
    agent = VLMAgent(client, mode="code", max_rounds=50, program_timeout_s=60,
                     program_max_steps=10**9)
    interpreter = UnitInterpreter(units=["features.3:0"], backends=Backends(agent=agent),
                                  exemplars=Exemplars(k=4), output=Output(progress=False))
    trainer = pl.Trainer(max_epochs=5, limit_train_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         num_sanity_val_steps=0, callbacks=[interpreter])
    trainer.fit(ShapesCNN(), DataLoader(ShapesWorld(size=32), batch_size=32),
                DataLoader(ShapesWorld(size=32, seed=1, split="val"), batch_size=32))
"""


def _sigterm_exit_seconds(seed: int) -> float:
    """Seconds from SIGTERM (sent while the agent runs an endless program) to the exit."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SIGTERM_PROGRAM],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_environment(),
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if "AGENT RUNNING" in line:
                break
        time.sleep(1.0)
        tic = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            return float("inf")
        return time.perf_counter() - tic
    finally:
        process.kill()
        process.wait()


def _environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": f"{_ROOT}{os.pathsep}{path}" if path else str(_ROOT),
        "HF_HUB_OFFLINE": "1",
    }


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()
