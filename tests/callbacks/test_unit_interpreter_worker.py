"""The background worker of UnitInterpreter runs below training: one thread, a higher nice."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import torch

from lightning_maia.callbacks import _background


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_worker_priority_is_lowered_in_the_worker_thread_only() -> None:
    threads, nice = torch.get_num_threads(), os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int] = {}

    def worker() -> None:
        _background.lower_worker_priority()
        _background.lower_worker_priority()  # a second run does not lower it again
        seen["threads"] = torch.get_num_threads()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, 0)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["threads"] == 1
    assert seen["nice"] == min(nice + _background.WORKER_NICE, 19)
    # The training (main) thread keeps its threads and priority.
    assert torch.get_num_threads() == threads
    assert os.getpriority(os.PRIO_PROCESS, 0) == nice
    _background.lower_worker_priority()  # on the main thread: nothing
    assert torch.get_num_threads() == threads and os.getpriority(os.PRIO_PROCESS, 0) == nice
