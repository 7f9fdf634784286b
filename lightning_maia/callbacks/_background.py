"""UnitInterpreter's background mode: a worker below training, on a copy of the probed layers.

Four things keep training from feeling the worker:

- :func:`probed_snapshot` copies only the sub-network the probed layers depend on (the modules a
  forward runs before the last probed layer has fired); the rest of the model, its gradients
  and the optimizer state are not copied, and a forward on the copy stops there.
- :func:`lower_worker_priority` runs the worker on one intra-op thread at a higher nice value.
- A study ends with its reports written, on the worker (rendering encodes every exemplar
  image); the training thread only hands the written run to the trainer's loggers, which are
  not promised to be thread-safe.
- :class:`BackgroundWorker` runs one study at a time; fit end waits for none of them, and
  teardown waits for the one in flight, then finishes the ones not started or cancels them
  (the callback lists those as pending).

The last study starts when the last validation ends and teardown waits for it, so a fit with
background studies ends no sooner than that plus one round trip to the VLM; within a study the
units' episodes run ``concurrency`` at a time, so that round trip is paid about once, not once
per unit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_maia._atomic import write_text_atomically
from lightning_maia.callbacks._shared import detached_from_trainer
from lightning_maia.exemplars import declared_denormalize
from lightning_maia.units import OUTPUT_LAYER, find_layer

#: Nice increment of the background worker thread (Linux): training keeps the cores it needs.
WORKER_NICE = 10

_worker = threading.local()

Result = TypeVar("Result")


def lower_worker_priority() -> None:
    """Run the calling worker thread on one intra-op thread and, on Linux, at a higher nice
    value. Both are per-thread there (OpenMP thread counts; Linux nice values belong to a
    thread), so the training thread keeps its threads and priority. Never on the main thread,
    and elsewhere than Linux only the thread count (``os.nice`` would slow the whole process)."""
    if threading.current_thread() is threading.main_thread():
        return
    torch.set_num_threads(1)
    if sys.platform.startswith("linux") and not getattr(_worker, "niced", False):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
        _worker.niced = True


class _ProbedLayersDoneError(Exception):
    """Raised from a hook once every probed layer has run: the rest of the forward is skipped."""


@contextlib.contextmanager
def _stop_after(model: nn.Module, layers: Sequence[str]) -> Iterator[None]:
    """Within the block, a forward of ``model`` raises :class:`_ProbedLayersDoneError` once the
    last of ``layers`` has run. The hooks are registered now, after any recorder's, so they run
    last."""
    fired: set[str] = set()

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            fired.add(name)
            if len(fired) == len(layers):
                raise _ProbedLayersDoneError

        return hook

    handles = [find_layer(model, name).register_forward_hook(hook_for(name)) for name in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def probed_modules(model: nn.Module, layers: Sequence[str], inputs: Tensor) -> set[str]:
    """Names of the modules a forward of ``model`` on ``inputs`` runs until every one of
    ``layers`` has run (the root is ``""``): the sub-network the layers depend on."""
    names = {id(module): name for name, module in model.named_modules()}
    ran: set[str] = set()
    handles = [
        module.register_forward_pre_hook(lambda m, _: ran.add(names[id(m)]))
        for module in model.modules()
    ]
    was_training = model.training
    model.eval()
    try:
        with _stop_after(model, layers), contextlib.suppress(_ProbedLayersDoneError):
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return ran


def probed_modules_on_item(
    model: nn.Module,
    layers: Sequence[str],
    dataset: Dataset[Any],
    preprocess: Callable[[Tensor], Tensor] | None,
) -> set[str]:
    """:func:`probed_modules` traced on the first item of ``dataset`` (through ``preprocess``
    unless the data declare ``denormalize``, as the exemplar pass feeds it); the empty set (a
    full copy) when the item cannot be fed this way."""
    try:
        item = dataset[0]
        image = item[0] if isinstance(item, (tuple, list)) else item
        device = next(iter(model.parameters()), torch.zeros(())).device
        inputs = torch.as_tensor(image)[None].float().to(device)
        if preprocess is not None and declared_denormalize(dataset) is None:
            inputs = preprocess(inputs)
        return probed_modules(model, layers, inputs)
    except (IndexError, KeyError, TypeError, RuntimeError, ValueError):
        return set()


def _truncated_forward(model: nn.Module, layers: Sequence[str]) -> Callable[..., Any]:
    """``model.forward`` that stops once ``layers`` have run (returns None then)."""
    full = type(model).forward.__get__(model)

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with _stop_after(self, layers):
            try:
                return full(*args, **kwargs)
            except _ProbedLayersDoneError:
                return None

    return types.MethodType(forward, model)


def probed_snapshot(model: nn.Module, layers: Sequence[str], needed: set[str] | None) -> nn.Module:
    """A copy of ``model`` that training cannot change under a worker, holding real weights only
    for the ``needed`` modules (:func:`probed_modules`); a forward stops after ``layers``.

    The other parameters and buffers become storage-less ``meta`` tensors, so a model probed at
    an early layer copies only that prefix; a forward that reached them would fail loudly, never
    compute with stale weights. ``needed`` None, or ``layers`` naming the output, copies all.
    """
    skipped = [] if needed is None or OUTPUT_LAYER in layers else _not_needed(model, needed)
    memo: dict[int, Any] = {}
    for tensor in skipped:
        placeholder = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            placeholder = nn.Parameter(placeholder, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = placeholder
    with _detached(model):
        copied = copy.deepcopy(model, memo)
    copied.eval()
    if skipped:
        # An instance attribute: nn.Module calls ``self.forward``, the class stays the user's.
        copied.forward = _truncated_forward(copied, layers)
    return copied


def _not_needed(model: nn.Module, needed: set[str]) -> list[Tensor]:
    tensors: list[Tensor] = []
    for name, module in model.named_modules():
        if name not in needed:
            tensors += _own_tensors(module)
    kept = {id(t) for name in needed for t in _own_tensors(model.get_submodule(name))}
    return [t for t in tensors if id(t) not in kept]  # a weight shared with a needed module stays


def _own_tensors(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(recurse=False), *module.buffers(recurse=False)]


@contextlib.contextmanager
def _detached(model: nn.Module) -> Iterator[None]:
    if hasattr(model, "_trainer"):
        with detached_from_trainer(model):  # type: ignore[arg-type]
            yield
    else:
        yield


def write_pending(path: Path, pending: list[dict[str, Any]]) -> Path:
    """Write the studies skipped at teardown to ``path`` (atomically); with none, remove a list
    an earlier fit left there, which is no longer true."""
    if not pending:
        path.unlink(missing_ok=True)
        return path
    reason = "fitting ended before these background studies started (unstarted='pending')"
    write_text_atomically(path, json.dumps({"reason": reason, "pending": pending}, indent=2) + "\n")
    return path


@dataclass
class Job(Generic[Result]):
    """A study handed to the worker: what it describes, and its future."""

    #: The epoch the study describes.
    epoch: int
    future: concurrent.futures.Future[Result]


class BackgroundWorker(Generic[Result]):
    """One worker thread, below training; studies run in the order submitted."""

    def __init__(self, name: str) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=lower_worker_priority
        )
        self.jobs: list[Job[Result]] = []

    def submit(self, epoch: int, study: Callable[..., Result], *args: Any) -> None:
        self.jobs.append(Job(epoch, self._executor.submit(study, *args)))

    def finished(self) -> list[Job[Result]]:
        """The jobs done since the last call, in order (a later one waits for an earlier)."""
        done: list[Job[Result]] = []
        while self.jobs and self.jobs[0].future.done():
            done.append(self.jobs.pop(0))
        return done

    def cancel_unstarted(self) -> list[Job[Result]]:
        """Cancel the jobs not started yet and return them (their work was never done)."""
        cancelled = [job for job in self.jobs if job.future.cancel()]
        self.jobs = [job for job in self.jobs if job not in cancelled]
        return cancelled

    def finish_all(self) -> list[Job[Result]]:
        """Wait for every job left (after :meth:`cancel_unstarted`: the one in flight); returns
        them, in order."""
        concurrent.futures.wait([job.future for job in self.jobs])
        return self.finished()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
