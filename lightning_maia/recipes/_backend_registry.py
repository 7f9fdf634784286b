"""The image backends an audit can name on the command line: ``--describer``, ``--generator``
and ``--editor`` take ``NAME`` or ``NAME:ARGUMENT`` (e.g. ``caption:/models/blip``).

Each name maps to a factory; :func:`register_backend` adds one (a new designer or describer
registers itself here and every command that builds backends can use it). Specs are checked
by :func:`check_backend_spec` before any work, so a typo fails at once, not after the exemplar
pass; :func:`build_backend` builds the backend (loading weights where it has some).

>>> check_backend_spec("describer", "caption:/models/blip").name
'caption'
>>> try:
...     check_backend_spec("describer", "captoin")
... except ConfigurationError as error:
...     print(error)
`--describer` names no backend 'captoin'; known: caption (of 4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_maia.errors import ConfigurationError, closest_names

ROLES = ("describer", "generator", "editor")


@dataclass(frozen=True)
class BackendContext:
    """What a factory may need beyond its own argument."""

    vocabulary: Sequence[str] = ()
    vlm_model: str | None = None
    vlm_base_url: str | None = None


@dataclass(frozen=True)
class BackendKind:
    """One named backend of one role."""

    role: str
    name: str
    build: Callable[[str | None, BackendContext], Any] = field(repr=False)
    help: str = ""
    #: ``none``, ``optional`` or ``required``: whether ``NAME:ARGUMENT`` takes an argument.
    argument: str = "none"
    #: What the argument is, for messages (e.g. "a local model directory").
    argument_help: str = ""
    needs_vocabulary: bool = False


_REGISTRY: dict[str, dict[str, BackendKind]] = {role: {} for role in ROLES}


def register_backend(kind: BackendKind) -> None:
    """Add (or replace) a named backend."""
    if kind.role not in ROLES:
        raise ConfigurationError(
            f"backend role must be one of {', '.join(ROLES)}, got {kind.role!r}"
        )
    _REGISTRY[kind.role][kind.name] = kind


def backend_names(role: str) -> list[str]:
    return list(_REGISTRY[role])


def describe_backends(role: str) -> str:
    """``name`` or ``name:ARG`` of every backend of ``role``, for ``--help``."""
    parts = []
    for kind in _REGISTRY[role].values():
        spec = kind.name + {"none": "", "optional": "[:ARG]", "required": ":ARG"}[kind.argument]
        parts.append(f"{spec} ({kind.help})" if kind.help else spec)
    return "; ".join(parts)


def _split(spec: str) -> tuple[str, str | None]:
    name, sep, argument = spec.partition(":")
    return name.strip(), (argument.strip() if sep else None)


def check_backend_spec(role: str, spec: str, context: BackendContext | None = None) -> BackendKind:
    """The backend ``spec`` names; a ConfigurationError naming ``--ROLE`` when it is unknown,
    lacks its argument, takes none, or needs a ``--vocabulary`` that was not given."""
    name, argument = _split(spec)
    kinds = _REGISTRY[role]
    option = f"`--{role}`"
    if name not in kinds:
        raise ConfigurationError(
            f"{option} names no backend {name!r}; known: {closest_names(name, list(kinds))}"
        )
    kind = kinds[name]
    if kind.argument == "required" and not argument:
        raise ConfigurationError(f"{option} {name} needs {kind.argument_help}: '{name}:ARG'")
    if kind.argument == "none" and argument:
        raise ConfigurationError(f"{option} {name} takes no argument, got {argument!r}")
    if kind.needs_vocabulary and context is not None and not context.vocabulary:
        raise ConfigurationError(
            f"{option} {name} scores a concept vocabulary: give `--vocabulary` (comma-separated)"
        )
    return kind


def build_backend(role: str, spec: str | None, context: BackendContext) -> Any:
    """The backend ``spec`` names (None: the library's default for the role)."""
    if spec is None:
        return None
    kind = check_backend_spec(role, spec, context)
    return kind.build(_split(spec)[1], context)


# -- what exists today -----------------------------------------------------------------------


def _procedural(role: str) -> Callable[[str | None, BackendContext], Any]:
    def build(_: str | None, __: BackendContext) -> Any:
        from lightning_maia.tools.backends import _procedural as procedural

        return {
            "describer": procedural.ProceduralDescriber,
            "generator": procedural.ProceduralGenerator,
            "editor": procedural.ProceduralEditor,
        }[role]()

    return build


def _caption(argument: str | None, context: BackendContext) -> Any:
    from lightning_maia.tools.backends._captioner import CaptionDescriber

    assert argument is not None
    return CaptionDescriber(argument, vocabulary=tuple(context.vocabulary))


def _clip(argument: str | None, context: BackendContext) -> Any:
    from lightning_maia.tools.backends._clip_concepts import ClipConceptScorer

    assert argument is not None
    return ClipConceptScorer(argument, vocabulary=tuple(context.vocabulary))


def _vlm(_: str | None, context: BackendContext) -> Any:
    from lightning_maia.tools.backends.vlm import VLMClient
    from lightning_maia.tools.backends.vlm_describer import VLMDescriber

    client = VLMClient(model=context.vlm_model, base_url=context.vlm_base_url)
    return VLMDescriber(client, vocabulary=tuple(context.vocabulary))


def _diffusers(role: str) -> Callable[[str | None, BackendContext], Any]:
    def build(argument: str | None, _: BackendContext) -> Any:
        from lightning_maia.tools.backends import _diffusers_backend as diffusers_backend

        assert argument is not None
        if role == "generator":
            return diffusers_backend.DiffusersGenerator(argument)
        return diffusers_backend.DiffusersEditor(argument)

    return build


for _role in ROLES:
    register_backend(
        BackendKind(_role, "procedural", _procedural(_role), "the procedural world's own")
    )
register_backend(
    BackendKind(
        "describer",
        "caption",
        _caption,
        "a transformers image-to-text model directory",
        argument="required",
        argument_help="a local captioning model directory",
    )
)
register_backend(
    BackendKind(
        "describer",
        "clip",
        _clip,
        "a CLIP model directory scoring --vocabulary",
        argument="required",
        argument_help="a local CLIP model directory",
        needs_vocabulary=True,
    )
)
register_backend(
    BackendKind("describer", "vlm", _vlm, "the VLM endpoint of --vlm-model/--vlm-base-url")
)
for _role in ("generator", "editor"):
    register_backend(
        BackendKind(
            _role,
            "diffusers",
            _diffusers(_role),
            "a diffusers pipeline directory",
            argument="required",
            argument_help="a local diffusers pipeline directory",
        )
    )
