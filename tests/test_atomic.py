"""Atomic writes: readers see the old file or the whole new one; a failed write changes nothing
and leaves no partial file; folders are created; permissions are what was asked for."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_maia._atomic import atomic_path, write_bytes_atomically, write_text_atomically


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_bytes_and_text_land_whole_in_created_folders(tmp_path: Path) -> None:
    binary = tmp_path / "a" / "b" / "image.png"
    text = tmp_path / "c" / "figures.json"
    write_bytes_atomically(binary, b"\x89PNG\x00\xff")
    write_text_atomically(str(text), "é\n", encoding="utf-8")
    assert binary.read_bytes() == b"\x89PNG\x00\xff"
    assert text.read_bytes() == "é\n".encode()
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == [
        "figures.json",
        "image.png",
    ]


def test_the_target_keeps_its_old_content_until_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    with atomic_path(target) as partial:
        partial.write_text("new")
        # The new content is out of sight until the rename, in the same folder (same file system).
        assert target.read_text() == "old"
        assert partial.parent == target.parent and partial != target
        assert partial.name.startswith("report.html.") and partial.name.endswith(".partial")
    assert target.read_text() == "new"
    assert not partial.exists()


def test_a_concurrent_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    contents = [b"a" * 1_000_000, b"b" * 1_000_000]
    write_bytes_atomically(target, contents[0])
    seen: set[bytes] = set()
    done = threading.Event()

    def read_until_done() -> None:
        while True:  # at least one read, however late this thread gets to run
            data = target.read_bytes()
            seen.add(data if data in contents else b"torn")
            if done.is_set():
                return

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for round_ in range(40):
            write_bytes_atomically(target, contents[round_ % 2])
    finally:
        done.set()
        reader.join()
    assert seen and seen <= set(contents)


def _write_half_then_fail(target: Path, error: BaseException) -> None:
    with atomic_path(target) as partial:
        partial.write_bytes(b"half of the new")
        raise error


@pytest.mark.parametrize("error", [ValueError("writer failed"), KeyboardInterrupt()])
def test_a_failing_writer_leaves_the_old_file_and_no_partial_file(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "exemplars-key.pt"
    target.write_bytes(b"old weights")
    with pytest.raises(type(error)):
        _write_half_then_fail(target, error)
    assert target.read_bytes() == b"old weights"
    assert [path.name for path in tmp_path.iterdir()] == ["exemplars-key.pt"]


def test_a_failing_first_write_creates_no_target(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "pending.json"
    with pytest.raises(RuntimeError), atomic_path(target):
        raise RuntimeError("serialisation failed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the folder was made; nothing is left in it


def test_two_writers_of_one_target_never_share_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "reply.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    # The outer writer finishes last, so its content is the one that stays.
    assert target.read_text() == "first"
    assert [path.name for path in tmp_path.iterdir()] == ["reply.json"]


@pytest.mark.usefixtures("umask_022")
def test_without_a_mode_the_file_gets_what_a_plain_open_gives(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_text_atomically(tmp_path / "atomic.txt", "x")
    assert _mode(tmp_path / "atomic.txt") == _mode(plain) == 0o644


def test_a_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        write_text_atomically(tmp_path / "report.html", "<html>", mode=0o644)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "report.html") == 0o644


@pytest.mark.usefixtures("umask_022")
def test_a_private_file_is_private_from_the_partial_files_creation(tmp_path: Path) -> None:
    target = tmp_path / "reply.json"
    with atomic_path(target, mode=0o600) as partial:
        assert _mode(partial) == 0o600  # a secret never sits readable by others, not even briefly
        partial.write_text("{}")
    assert _mode(target) == 0o600


def test_replacing_keeps_the_new_files_mode_not_the_old_ones(tmp_path: Path) -> None:
    target = tmp_path / "reply.json"
    target.write_text("{}")
    target.chmod(0o666)
    write_text_atomically(target, "{}", mode=0o600)
    assert _mode(target) == 0o600
