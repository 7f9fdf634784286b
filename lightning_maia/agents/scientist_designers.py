"""Which designer and backends an experiment runs with: a small registry and setup-time checks.

The scientist needs a designer (concepts to prompts and edits) and image backends that read
what it writes. :func:`experiment_setup` builds them by name, or picks them from the data and
backends given (``designer="auto"``):

- ``procedural``: the procedural world (its datasets carry scenes);
- ``retrieval``: a user's attribute table (a pandas frame aligned with the dataset, the
  dataset's own ``metadata`` frame or its ``attributes(i)``), answered by retrieval and
  weight-free edits (:mod:`lightning_maia.tools.realdata`);
- ``prompts``: a diffusers generator (and editor) with a vocabulary of attribute values.

:func:`check_experiment_setup` fails at setup, naming what to configure, when the classes or
candidate attributes of a task are nothing the designer can draw. The ``audit`` command and the
callbacks call these; names are listed in :data:`DESIGNERS` and :data:`DESCRIBERS`.

>>> import pandas as pd, torch
>>> from lightning_maia.tools.realdata import AttributeTable
>>> table = AttributeTable(pd.DataFrame({"digit": ["0", "1"], "colour": ["red", "blue"]}),
...                        torch.zeros(2, 3, 4, 4))
>>> setup = experiment_setup("auto", table=table, class_names=["0", "1"])
>>> setup.designer.name, setup.designer.class_attribute, setup.describer.name
('retrieval', 'digit', 'table+pixels')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from lightning_maia.agents._scientist_design import ExperimentDesigner, ProceduralDesigner
from lightning_maia.errors import ConfigurationError, bad_option
from lightning_maia.tools.backends._base import ImageDescriber, ImageEditor, ImageGenerator
from lightning_maia.tools.realdata import (
    AttributeTable,
    ClassifierDescriber,
    PixelDescriber,
    PromptDesigner,
    RetrievalDesigner,
    TableDescriber,
    default_describer,
)

#: Designer names :func:`experiment_setup` builds.
DESIGNERS: tuple[str, ...] = ("auto", "procedural", "retrieval", "prompts")
#: Describer names :func:`build_describer` builds.
DESCRIBERS: tuple[str, ...] = ("table", "pixels", "table+pixels", "classifier")


@dataclass
class ExperimentSetup:
    """A designer and the backends that read what it writes (None: the toolbox's default)."""

    designer: ExperimentDesigner
    generator: ImageGenerator | None = None
    editor: ImageEditor | None = None
    describer: ImageDescriber | None = None


def _base(dataset: Dataset[Any] | None) -> tuple[Dataset[Any] | None, list[int] | None]:
    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        mapped = [int(i) for i in dataset.indices]
        indices = mapped if indices is None else [mapped[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def has_scenes(dataset: Dataset[Any] | None) -> bool:
    base, _ = _base(dataset)
    return base is not None and callable(getattr(base, "scene", None))


def table_of(dataset: Dataset[Any], **options: Any) -> AttributeTable | None:
    """The attribute table of a dataset (its ``metadata`` frame or ``attributes(i)``), following
    ``Subset`` wrappers; None when it has neither."""
    base, indices = _base(dataset)
    if base is None or has_scenes(base):
        return None
    if getattr(base, "metadata", None) is None and not callable(getattr(base, "attributes", None)):
        return None
    table = AttributeTable.from_dataset(base, **options)
    if indices is None:
        return table
    frame = table.frame.iloc[indices].reset_index(drop=True)
    return AttributeTable(frame, dataset, display_transform=table.display_transform)


def class_column(table: AttributeTable, class_names: Sequence[str] | None) -> str | None:
    """The column whose values are the class names (None when none is)."""
    if not class_names:
        return None
    names = {str(c) for c in class_names}
    fits = [a for a in table.attributes if set(table.values(a)) <= names and table.values(a)]
    return max(fits, key=lambda a: len(table.values(a))) if fits else None


def build_describer(
    name: str,
    *,
    table: AttributeTable | None = None,
    classifier: nn.Module | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> ImageDescriber:
    """A describer by name (:data:`DESCRIBERS`)."""
    if name == "pixels":
        return PixelDescriber()
    if name in ("table", "table+pixels"):
        if table is None:
            raise ConfigurationError(
                f"the {name!r} describer needs an attribute table: pass `table=`"
            )
        return TableDescriber(table) if name == "table" else default_describer(table)
    if name == "classifier":
        if classifier is None or not class_names:
            raise ConfigurationError(
                "the 'classifier' describer needs `classifier=` (a model) and `class_names=`"
            )
        return ClassifierDescriber(classifier, class_names, preprocess=preprocess)
    raise bad_option("describer", ", ".join(DESCRIBERS), name)


def experiment_setup(
    designer: str | ExperimentDesigner = "auto",
    *,
    dataset: Dataset[Any] | None = None,
    table: AttributeTable | None = None,
    class_names: Sequence[str] | None = None,
    class_attribute: str | None = None,
    vocabulary: Mapping[str, Sequence[str]] | None = None,
    generator: ImageGenerator | None = None,
    editor: ImageEditor | None = None,
    describer: ImageDescriber | None = None,
) -> ExperimentSetup:
    """The designer ``designer`` names (or picks, for ``auto``) with backends that read it;
    backends given explicitly win over the designer's own."""
    if not isinstance(designer, str):
        return _with_backends(designer, generator, editor, describer)
    if designer not in DESIGNERS:
        raise bad_option("designer", ", ".join(DESIGNERS), designer)
    if table is None and dataset is not None and designer in ("auto", "retrieval"):
        table = table_of(dataset)
    if designer == "auto":
        if table is not None:
            designer = "retrieval"
        elif vocabulary is not None and generator is not None:
            designer = "prompts"
        elif dataset is None or has_scenes(dataset):
            designer = "procedural"
        else:
            raise ConfigurationError(
                f"the offline agent cannot design experiments on {type(_base(dataset)[0]).__name__}"
                " (no procedural scenes, no attribute columns): give the dataset a `metadata` "
                "DataFrame or `attributes(index)`, pass `designer=RetrievalDesigner(AttributeTable("
                "frame, dataset), class_attribute=...)`, or a `generator=` with "
                "`designer=PromptDesigner(vocabulary)`"
            )
    if designer == "procedural":
        return ExperimentSetup(ProceduralDesigner(), generator, editor, describer)
    if designer == "retrieval":
        if table is None:
            raise ConfigurationError(
                "designer='retrieval' needs attribute columns: pass `table=AttributeTable(frame, "
                "dataset)` or a dataset with a `metadata` DataFrame or `attributes(index)`"
            )
        attribute = class_attribute or class_column(table, class_names)
        return _with_backends(RetrievalDesigner(table, attribute), generator, editor, describer)
    if vocabulary is None or generator is None:
        raise ConfigurationError(
            "designer='prompts' needs `vocabulary=` (attribute -> values) and a `generator=` "
            "(e.g. DiffusersGenerator); an `editor=` (DiffusersEditor) for edits"
        )
    prompts = PromptDesigner(vocabulary, class_attribute)
    return ExperimentSetup(prompts, generator, editor, describer or PixelDescriber())


def _with_backends(
    designer: ExperimentDesigner,
    generator: ImageGenerator | None,
    editor: ImageEditor | None,
    describer: ImageDescriber | None,
) -> ExperimentSetup:
    own = getattr(designer, "backends", None)
    if callable(own):
        own_generator, own_editor, own_describer = own()
        generator, editor = generator or own_generator, editor or own_editor
        describer = describer or own_describer
    return ExperimentSetup(designer, generator, editor, describer)


def check_experiment_setup(
    setup: ExperimentSetup,
    *,
    class_names: Sequence[str] = (),
    candidate_attributes: Sequence[str] = (),
    owner: str = "",
) -> None:
    """Fail now, naming what to configure, when a task could not draw one experiment: no class
    the designer can draw, or a candidate attribute it cannot vary."""
    designer, where = setup.designer, f"{owner}: " if owner else ""
    if class_names and not any(designer.class_concept(str(c)) for c in class_names):
        raise ConfigurationError(
            f"{where}the {designer.name} designer can draw none of the classes "
            f"{list(class_names)[:6]}; pass `designer=` for this data (e.g. 'retrieval' with a "
            "dataset that has attribute columns, and the column of the class)"
        )
    missing = [a for a in candidate_attributes if not designer.values(a)]
    if missing:
        raise ConfigurationError(
            f"{where}the {designer.name} designer cannot vary {missing}; it knows "
            f"{list(designer.attributes())}: fix `candidate_attributes=` or pass a `designer=` "
            "whose table has those columns"
        )


__all__ = [
    "DESCRIBERS",
    "DESIGNERS",
    "ExperimentSetup",
    "build_describer",
    "check_experiment_setup",
    "class_column",
    "experiment_setup",
    "has_scenes",
    "table_of",
]
