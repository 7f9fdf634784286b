"""Headless Chromium for tests: load a local page, read its DOM and console, take a screenshot.

Runs as root in a container, so the sandbox is off; everything else that could reach out
(networking, updates, sync, name lookups) is off too, and each run gets a fresh profile in a
temporary directory. Console messages come from ``--enable-logging=stderr``: Chromium logs them
all at one level, so a page under test is expected to log nothing at all.

    from helpers.chromium import requires_chromium, load_page

    @requires_chromium
    def test_page(tmp_path):
        page = load_page(tmp_path / "report.html")
        assert page.console == []
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM_MISSING = "Debian's chromium package is not installed; .ci/run installs it"
#: Where Debian's package puts it; then the names it may have on PATH.
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
#: Flags for a quiet, offline, throwaway browser (the profile directory is added per run).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-crash-reporter",
    "--mute-audio",
    "--hide-scrollbars",
    # No name resolves: a page that tries to fetch anything fails instead of reaching out.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
)
# Both forms: `INFO:CONSOLE:12] "text", source: ...` and `INFO:CONSOLE(12)] "text", ...`.
_CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\]\s*(.*)")


def find_chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    for candidate in CANDIDATES:
        if os.path.isabs(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
        elif found := shutil.which(candidate):
            return found
    return None


requires_chromium = pytest.mark.skipif(find_chromium() is None, reason=CHROMIUM_MISSING)


@dataclass
class PageRun:
    """What Chromium left after loading a page."""

    #: Stdout: the serialized DOM for ``--dump-dom``.
    stdout: str
    stderr: str
    #: Console messages and uncaught errors the page produced, one line each.
    console: list[str]


def console_messages(stderr: str) -> list[str]:
    """The console lines (any level) and uncaught errors in Chromium's stderr log."""
    messages = []
    for line in stderr.splitlines():
        match = _CONSOLE.search(line)
        if match is not None:
            messages.append(match.group(1))
        elif "Uncaught" in line:
            messages.append(line.strip())
    return messages


def run_chromium(page: Path, *arguments: str, timeout: float = 60.0) -> PageRun:
    """Open ``page`` (a local file) with ``arguments`` and return what Chromium printed."""
    executable = find_chromium()
    if executable is None:
        pytest.skip(CHROMIUM_MISSING)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        environment = {**os.environ, "HOME": profile, "XDG_CONFIG_HOME": profile}
        command = [
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            *arguments,
            Path(page).resolve().as_uri(),
        ]
        # Its own session, so that a hung browser and its children are ended together.
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise AssertionError(f"chromium did not finish within {timeout} s: {command}") from None
    if process.returncode != 0:
        raise AssertionError(f"chromium exited with {process.returncode}:\n{stderr[-4000:]}")
    return PageRun(stdout=stdout, stderr=stderr, console=console_messages(stderr))


def load_page(page: Path, *, timeout: float = 60.0) -> PageRun:
    """Load ``page`` and dump its DOM after its scripts ran (``PageRun.stdout``)."""
    return run_chromium(page, "--dump-dom", timeout=timeout)


def screenshot(
    page: Path, output: Path, *, window_size: tuple[int, int] = (1280, 2000), timeout: float = 60.0
) -> PageRun:
    """Render ``page`` at ``window_size`` into the PNG ``output``."""
    width, height = window_size
    return run_chromium(
        page, f"--screenshot={output}", f"--window-size={width},{height}", timeout=timeout
    )
