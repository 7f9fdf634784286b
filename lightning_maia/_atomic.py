"""Atomic file writes: a reader of the target sees the old file or the whole new one, never half.

A write goes to a partial file beside the target, ``<target name>.<random hex>.partial``, and
:func:`os.replace` then puts it in place. Beside the target, because a rename is atomic only within
one file system; a random name, created exclusively, because two processes writing one target
(two ranks, two runs sharing a cache) must not write into each other's partial file. If the write
fails, the partial file is removed and the target is left as it was. The target's folder, and any
missing folder above it, is created.

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "nested" / "figures.json"
>>> write_text_atomically(target, '{"seconds": 1.5}')
>>> with atomic_path(target) as partial:
...     partial.write_text('{"seconds": 2.5}')
16
>>> target.read_text(), [path.name for path in target.parent.iterdir()]
('{"seconds": 2.5}', ['figures.json'])
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a fresh, empty partial file to write ``path``'s new content into; replace ``path``
    with it when the block ends without an error, remove it when the block raises.

    For writers that take a path (``torch.save``, ``json.dump`` on ``partial.open("w")``). The
    writer must write to exactly this path: give writers that append a suffix to a file name
    (``numpy.save``) an open file instead.

    ``mode``: the new file's permission bits, exactly; ``None`` gives what a plain ``open()``
    gives (``0o666`` less the umask). The partial file is never more permissive than ``mode``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{secrets.token_hex(8)}.partial")
    # Exclusive creation: a name another writer already holds fails here instead of being shared.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    os.close(os.open(partial, flags, 0o666 if mode is None else mode))
    try:
        yield partial
        if mode is not None:
            os.chmod(partial, mode)  # exactly ``mode``: creation applied the umask to it
        os.replace(partial, target)
    except BaseException:  # an interrupt, too, must not leave a partial file behind
        partial.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path` for ``mode``)."""
    with atomic_path(path, mode=mode) as partial:
        partial.write_bytes(data)


def write_text_atomically(
    path: str | Path, text: str, *, encoding: str | None = None, mode: int | None = None
) -> None:
    """Write ``text`` to ``path`` atomically; ``encoding=None`` is :meth:`Path.write_text`'s
    default (the locale's), and ``mode`` is as in :func:`atomic_path`."""
    with atomic_path(path, mode=mode) as partial:
        partial.write_text(text, encoding=encoding)
