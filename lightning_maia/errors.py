"""The exception tree of lightning_maia.

Every error the library raises on purpose derives from :class:`MaiaError`::

    MaiaError
    ├── ConfigurationError (also ValueError)   bad arguments, caught at setup
    │   └── UnitSpecError                      a unit spec that does not resolve in the model
    ├── UnitIndexError (also IndexError)       a unit index past its layer's width (first forward)
    ├── GrammarError (also ValueError)         procedural-world text it cannot parse
    ├── CacheError                             an unreadable or foreign exemplar cache
    ├── ToolError                              a tool call the agent got wrong (shown to the agent)
    │   └── UnknownImageError (also KeyError)  an image id the toolbox does not hold
    ├── BackendError                           an external backend failed (service, pipeline)
    │   ├── BackendTimeoutError                no answer within the configured time
    │   ├── BackendHTTPError                   an HTTP error status (429 and 5xx are retryable)
    │   └── MalformedResponseError             an answer that does not parse
    └── MissingDependencyError (also ModuleNotFoundError)  an optional extra that is not installed
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class MaiaError(Exception):
    """Root of every error raised on purpose by lightning_maia."""


class ConfigurationError(MaiaError, ValueError):
    """An argument or option has a value that is not allowed."""


class UnitSpecError(ConfigurationError):
    """A unit spec does not resolve against the model."""


class UnitIndexError(MaiaError, IndexError):
    """A unit index is past the width of its layer (found at the first forward)."""


class GrammarError(MaiaError, ValueError):
    """Text the procedural world cannot parse; names the unknown words and the vocabulary."""

    def __init__(self, message: str, unknown_words: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.unknown_words = tuple(unknown_words)


class CacheError(MaiaError):
    """An exemplar cache file that cannot be read back."""


class ToolError(MaiaError):
    """A tool call the agent got wrong; the message is written to be shown to the agent."""


class UnknownImageError(ToolError, KeyError):
    """An image id that the toolbox does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BackendError(MaiaError):
    """An external backend (a VLM endpoint, a diffusion pipeline) failed."""

    retryable: bool = False


class BackendTimeoutError(BackendError):
    """The backend gave no answer within the configured time."""

    retryable = True


class BackendHTTPError(BackendError):
    """The backend answered with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = status == 429 or status >= 500


class MalformedResponseError(BackendError):
    """The backend answered with something that does not parse."""


class MissingDependencyError(MaiaError, ModuleNotFoundError):
    """An optional dependency is missing; the message carries the exact pip line."""


def bad_option(name: str, allowed: str, got: object) -> ConfigurationError:
    """The error for an option outside its allowed values, in one shape for the whole library.

    >>> str(bad_option("reduction", "max or mean", "median"))
    "`reduction` can be max or mean, got 'median'"
    """
    return ConfigurationError(f"`{name}` can be {allowed}, got {got!r}")


def closest_names(value: str, known: Sequence[str], n: int = 5) -> str:
    """At most ``n`` of the ``known`` names, closest to ``value`` first, for an error message
    that stays short however many names there are.

    >>> closest_names("tabby", ["tabby cat", "tiger cat", "tench", "goldfish", "shark", "hen"])
    'tabby cat (of 6)'
    >>> closest_names("x", ["a", "b"])
    'a, b'
    """
    names = list(dict.fromkeys(known))
    close = difflib.get_close_matches(value, names, n=n, cutoff=0.6)
    close += [name for name in names if value.lower() in name.lower() and name not in close]
    close = close[:n] or names[:n]
    return ", ".join(close) + (f" (of {len(names)})" if len(names) > len(close) else "")
