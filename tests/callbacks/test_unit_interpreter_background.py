"""Background mode of UnitInterpreter: snapshots of the probed sub-network only, and a fit end
that waits for no study (teardown finishes them, or lists them as pending)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers.lightning_models import ShapesClassifier, shapes_loaders
from torch import nn

from lightning_maia._options import Backends, Output
from lightning_maia.agents.vlm_agent import VLMAgent
from lightning_maia.callbacks._background import probed_modules, probed_snapshot
from lightning_maia.callbacks.unit_interpreter import Exemplars, UnitInterpreter
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.subject import Subject
from lightning_maia.testing._chat_server import ChatServer, tool_call_reply
from lightning_maia.tools.backends.vlm import VLMClient
from lightning_maia.world import ShapesWorld

FINAL = {"label": "edges", "description": "fires on edges", "concepts": [], "logic": "single"}


class DeepModel(pl.LightningModule):
    """A stem (conv + batch norm) before the probed ReLU, and large layers after it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 256, 3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(),
        )
        self.head = nn.Linear(256, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_the_snapshot_holds_exactly_the_layers_up_to_the_probed_one() -> None:
    torch.manual_seed(0)
    model = DeepModel()
    model.features[1].running_mean.uniform_()  # statistics a copy must carry over
    needed = probed_modules(model, ["features.2"], torch.rand(1, 3, 16, 16))
    snapshot = probed_snapshot(model, ["features.2"], needed)

    tensors = [*snapshot.named_parameters(), *snapshot.named_buffers()]
    real = {name for name, tensor in tensors if not tensor.is_meta}
    assert real == {
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.num_batches_tracked",
    }
    copied = sum(t.numel() for n, t in snapshot.named_parameters() if not t.is_meta)
    assert copied == 3 * 4 * 9 + 4 + 4 + 4  # the stem only, of 140,000+ parameters
    assert sum(p.numel() for p in model.parameters()) > 140_000

    data = ShapesWorld(size=24, seed=3, image_size=16, split="val")
    live = compute_exemplars(model, data, ["features.2:*"], k=4, progress=False)
    before = compute_exemplars(snapshot, data, ["features.2:*"], k=4, progress=False)
    layer = "features.2"
    assert torch.equal(live.layers[layer].activations, before.layers[layer].activations)
    assert torch.equal(live.layers[layer].dataset_indices, before.layers[layer].dataset_indices)
    images = torch.stack([data[i][0] for i in range(6)])
    assert torch.equal(
        Subject(model, ["features.2:0-3"]).call_units(images).activations,
        Subject(snapshot, ["features.2:0-3"]).call_units(images).activations,
    )
    # Training goes on: the copy keeps the weights it was taken with.
    with torch.no_grad():
        model.features[0].weight.add_(1.0)
    after = compute_exemplars(snapshot, data, ["features.2:*"], k=4, progress=False)
    assert torch.equal(after.layers[layer].activations, before.layers[layer].activations)


def test_a_probe_of_the_output_copies_the_whole_model() -> None:
    model = DeepModel()
    needed = probed_modules(model, ["features.2"], torch.rand(1, 3, 8, 8))
    snapshot = probed_snapshot(model, ["output"], needed)
    assert not any(p.is_meta for p in snapshot.parameters())
    assert torch.equal(snapshot(torch.ones(1, 3, 8, 8)), model.eval()(torch.ones(1, 3, 8, 8)))


class HeadFirst(nn.Module):
    """The head is registered first: the copy's first parameter is one it does not keep."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.stem = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x).mean(dim=(2, 3)))


def test_a_snapshot_without_its_first_weights_runs_where_the_model_runs() -> None:
    model = HeadFirst()
    snapshot = probed_snapshot(
        model, ["stem"], probed_modules(model, ["stem"], torch.rand(1, 3, 8, 8))
    )
    assert next(snapshot.parameters()).is_meta
    data = ShapesWorld(size=8, seed=0, image_size=16)
    live, copied = (
        compute_exemplars(m, data, ["stem:*"], k=2, progress=False).layers["stem"].activations
        for m in (model, snapshot)
    )
    assert torch.equal(live, copied)


class HoldAtFitEnd(pl.Callback):
    """Keeps the stub VLM from answering until fitting has ended; records what fit end saw."""

    def __init__(self, interpreter: UnitInterpreter, release: threading.Event) -> None:
        self.interpreter, self.release = interpreter, release
        self.seen: dict[str, Any] = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen = {"history": dict(self.interpreter.history), "pending": self.interpreter.pending}
        self.release.set()


def _fit_with_a_held_stub(tmp_path: Path, unstarted: str) -> tuple[UnitInterpreter, Any, int]:
    release = threading.Event()

    def answer(request: Any) -> Any:
        release.wait(timeout=60)  # the first study is in flight until fitting has ended
        return tool_call_reply("final_answer", FINAL)

    with ChatServer(answer) as server:
        agent = VLMAgent(VLMClient(model="stub", base_url=server.base_url, timeout=90))
        interpreter = UnitInterpreter(
            units=["features.2:0-1"],
            backends=Backends(agent=agent),
            exemplars=Exemplars(k=4),
            output=Output(output_dir=str(tmp_path / "maia"), progress=False),
            background=True,
            unstarted=unstarted,  # type: ignore[arg-type]
        )
        hold = HoldAtFitEnd(interpreter, release)
        train, val = shapes_loaders(train=16, val=32)
        pl.Trainer(
            default_root_dir=tmp_path,
            max_epochs=3,
            limit_train_batches=1,
            logger=False,
            enable_checkpointing=False,
            callbacks=[interpreter, hold],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        ).fit(ShapesClassifier(), train, val)
        requests = len(server.chat_requests)
    return interpreter, hold.seen, requests


@pytest.mark.slow
def test_fit_end_waits_for_nothing_and_teardown_lists_the_unstarted_as_pending(
    tmp_path: Path,
) -> None:
    with pytest.warns(UserWarning, match=r"epochs \[1, 2\] started; they are listed as pending"):
        interpreter, seen, requests = _fit_with_a_held_stub(tmp_path, "pending")
    # Fit end came while epoch 0's study still waited on the VLM: nothing was joined there.
    assert seen["history"] == {}
    # Teardown finished the study in flight (2 units, one request each) and started no other.
    assert requests == 2
    assert {unit: [r["epoch"] for r in rows] for unit, rows in interpreter.history.items()} == {
        "features.2:0": [0],
        "features.2:1": [0],
    }
    assert [r.label for r in interpreter.reports] == ["edges", "edges"]
    expected = [{"epoch": e, "units": ["features.2:0-1"], "status": "pending"} for e in (1, 2)]
    assert interpreter.pending == expected
    written = json.loads((tmp_path / "maia" / "pending.json").read_text())
    assert written["pending"] == expected and "fitting ended" in written["reason"]
    assert (tmp_path / "maia" / "epoch-000" / "report.html").exists()
    assert not (tmp_path / "maia" / "epoch-001").exists()


@pytest.mark.slow
def test_teardown_finishes_the_unstarted_studies_by_default(tmp_path: Path) -> None:
    (tmp_path / "maia").mkdir()
    (tmp_path / "maia" / "pending.json").write_text("{}")  # left by an earlier fit
    interpreter, seen, requests = _fit_with_a_held_stub(tmp_path, "finish")
    assert seen["history"] == {}  # fit end did not wait
    assert requests == 6  # 3 epochs x 2 units, all finished in teardown
    assert {unit: [r["epoch"] for r in rows] for unit, rows in interpreter.history.items()} == {
        "features.2:0": [0, 1, 2],
        "features.2:1": [0, 1, 2],
    }
    assert interpreter.pending == []
    assert not (tmp_path / "maia" / "pending.json").exists()


@pytest.mark.slow
def test_reports_render_once_per_run_on_the_worker_never_on_the_training_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_maia.callbacks._interpreter_log as interpreter_log

    rendered: list[tuple[str, str]] = []
    real_write_report = interpreter_log.write_report

    def recording_write_report(path: Any, *args: Any, **kwargs: Any) -> Path:
        rendered.append((threading.current_thread().name, Path(path).parent.name))
        return real_write_report(path, *args, **kwargs)

    monkeypatch.setattr(interpreter_log, "write_report", recording_write_report)
    interpreter, _, requests = _fit_with_a_held_stub(tmp_path, "finish")
    assert requests == 6
    assert [folder for _, folder in rendered] == ["epoch-000", "epoch-001", "epoch-002"]
    assert all(name.startswith("maia-unit-interpreter") for name, _ in rendered), rendered
    latest = (tmp_path / "maia" / "report.html").read_text()
    assert latest == (tmp_path / "maia" / "epoch-002" / "report.html").read_text()
    assert interpreter.report_path == tmp_path / "maia" / "report.html"


def test_the_saved_state_is_a_copy_the_worker_cannot_change_while_it_is_written() -> None:
    interpreter = UnitInterpreter(units=["features.2:0-1"], background=True)
    interpreter.history = {"features.2:0": [{"epoch": 0, "label": "edges"}]}
    saved = interpreter.state_dict()
    interpreter.history["features.2:0"].append({"epoch": 1, "label": "stripes"})
    interpreter.history["features.2:1"] = []
    assert saved["history"] == {"features.2:0": [{"epoch": 0, "label": "edges"}]}
    restored = UnitInterpreter(units=["features.2:0-1"], background=True)
    restored.load_state_dict(saved)
    assert restored.history == saved["history"]
