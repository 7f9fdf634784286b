"""The module layout follows the rule in ``lightning_maia/__init__.py``: a module keeps a plain
name only when users reach it by its path; every other module starts with ``_``."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

import lightning_maia

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(lightning_maia.__file__).parent

#: Modules DESIGN.md names, and the exception tree users catch from.
NAMED_BY_DESIGN = {
    "lightning_maia.callbacks.misclassification_flagger",
    "lightning_maia.callbacks.spurious_feature_remover",
    "lightning_maia.callbacks.unit_interpreter",
    "lightning_maia.cli",
    "lightning_maia.errors",
    "lightning_maia.evaluation_constants",
    "lightning_maia.exemplars",
    "lightning_maia.recording",
    "lightning_maia.subject",
    "lightning_maia.units",
}

#: Every public module (not an ``__init__`` or ``__main__``): a change shows in this diff.
PUBLIC_MODULES = {
    "lightning_maia.agents.scientist",
    "lightning_maia.agents.scientist_designers",
    "lightning_maia.agents.tasks",
    "lightning_maia.agents.vlm_agent",
    "lightning_maia.analysis.compositional",
    "lightning_maia.analysis.flagging",
    "lightning_maia.analysis.spurious_search",
    "lightning_maia.callbacks.misclassification_flagger",
    "lightning_maia.callbacks.spurious_feature_remover",
    "lightning_maia.callbacks.unit_interpreter",
    "lightning_maia.cli",
    "lightning_maia.errors",
    "lightning_maia.evaluation_constants",
    "lightning_maia.exemplars",
    "lightning_maia.image_folder",
    "lightning_maia.metrics",
    "lightning_maia.recipes.lightning_modules",
    "lightning_maia.recipes.shapes_backbone",
    "lightning_maia.recipes.tinted_digits",
    "lightning_maia.recording",
    "lightning_maia.subject",
    "lightning_maia.testing.hostile",
    "lightning_maia.tools.backends.vlm",
    "lightning_maia.tools.backends.vlm_describer",
    "lightning_maia.tools.toolbox",
    "lightning_maia.units",
    "lightning_maia.world.provenance",
}


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        names.append(".".join(relative.parts))
    return names


def _plain(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split("."))


def _documented_paths() -> str:
    """The README texts and the shipped configs, where users read module paths."""
    texts = [(ROOT / "README.md").read_text(), (ROOT / "benchmarks" / "README.md").read_text()]
    configs = resources.files("lightning_maia.recipes") / "configs"
    texts += [entry.read_text() for entry in configs.iterdir() if entry.name.endswith(".yaml")]
    pyproject = (ROOT / "pyproject.toml").read_text()
    texts.append(pyproject.partition("[project.scripts]")[2].partition("\n[")[0])
    return "\n".join(texts)


def test_every_plain_named_module_is_a_listed_public_one() -> None:
    plain = {name for name in _modules() if _plain(name)}
    unlisted = sorted(plain - PUBLIC_MODULES)
    assert not unlisted, (
        f"{unlisted} neither start with '_' nor are listed public: rename them (private "
        "implementation behind the package __init__) or list them here with the reason the "
        "rule in lightning_maia/__init__.py gives"
    )
    assert plain >= PUBLIC_MODULES, sorted(PUBLIC_MODULES - plain)


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES - NAMED_BY_DESIGN))
def test_each_public_module_is_reached_by_its_path(module: str) -> None:
    # A public module that no README, config or entry point names has no reason to be public.
    assert re.search(rf"(?<![\w.]){re.escape(module)}(?![\w])", _documented_paths())


def test_no_readme_or_config_names_a_private_module() -> None:
    named = set(re.findall(r"(?<![\w.])(lightning_maia(?:\.\w+)+)", _documented_paths()))
    private = sorted(name for name in named if not _plain(name) and ".__" not in name)
    assert not private


def test_every_module_over_400_lines_says_why_it_stays_one_file() -> None:
    # STYLE.md: a file over ~400 lines is asking to be split; one that stays whole says why.
    long_without_reason = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > 400 and "**Why one file.**" not in source.split('"""', 2)[1]:
            long_without_reason.append(str(path.relative_to(PACKAGE_DIR.parent)))
    assert not long_without_reason
