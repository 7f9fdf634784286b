"""The public API: each package's ``__all__`` is exactly the names it exports, sorted, and
resolvable; importing the package pulls in no optional heavyweight."""

from __future__ import annotations
import __future__

import collections.abc
import importlib
import subprocess
import sys
import typing
from types import ModuleType

import pytest

import lightning_maia

#: Every subpackage's public names, written out: a change to the API shows in this diff.
EXPORTS: dict[str, list[str]] = {
    "agents": [
        "DESCRIBERS",
        "DESIGNERS",
        "TASKS",
        "VERDICTS",
        "Agent",
        "CachedChat",
        "ExperimentDesigner",
        "ExperimentSetup",
        "FinalAnswer",
        "Hypothesis",
        "HypothesisFit",
        "Observation",
        "PolicyError",
        "ProceduralDesigner",
        "ProgramResult",
        "SandboxLimitExceeded",
        "SandboxViolation",
        "ScientistAgent",
        "Session",
        "Step",
        "TaskSpec",
        "ToolCallRecord",
        "UnitReport",
        "VLMAgent",
        "build_describer",
        "check_experiment_setup",
        "experiment_setup",
        "final_answer_schema",
        "parse_final_answer",
        "reports_to_dataframe",
        "run_program",
    ],
    "analysis": [
        "BASELINES",
        "LOGIC_TO_KIND",
        "MAIA_FEATURES",
        "REFIT",
        "REFIT_GRID",
        "SCORES",
        "VERDICTS",
        "ClassBiasAudit",
        "DFRResult",
        "Explanation",
        "FlaggingResult",
        "Formula",
        "Gate",
        "GateResult",
        "IndependentPromptWriter",
        "Interpretation",
        "LinearHead",
        "MaskedHead",
        "PredictiveScore",
        "Refit",
        "RefitChoice",
        "RefitProtocol",
        "RiskCombiner",
        "SearchBudget",
        "Selection",
        "SpuriousEvidence",
        "SpuriousRemoval",
        "SpuriousUnits",
        "SubgroupAudit",
        "SubgroupCheck",
        "SubgroupFinding",
        "Thresholds",
        "UnitJudgement",
        "accuracy_by_kind",
        "activation_auroc",
        "audit_class_bias",
        "balanced_indices",
        "baseline_risks",
        "check_gate",
        "check_subgroups",
        "choose_refit",
        "claimed_kind",
        "counterfactual_augment",
        "counterfactual_deltas",
        "cross_fitted_risk",
        "dataset_concepts",
        "dataset_groups",
        "described_concepts",
        "dfr_head",
        "edit_pairs",
        "effective_linear",
        "energy",
        "erase_projection",
        "erase_remedy",
        "error_detection_metrics",
        "evaluate_gates",
        "explain_mask",
        "false_positives_per_class",
        "find_head",
        "find_spurious_units",
        "findings_from_report",
        "finds_planted",
        "fit_risk_combiner",
        "flag",
        "flag_reason",
        "fold_masked_heads",
        "has_metadata_concepts",
        "has_scenes",
        "head_metrics",
        "independent_predictive_score",
        "install_masked_head",
        "interpret_units",
        "judge_units",
        "l1_top_units",
        "matches_ground_truth",
        "max_softmax_probability",
        "parse_gate",
        "planted_recovery",
        "planted_score_drop",
        "positive_and_neutral_prompts",
        "predictive_entropy",
        "predictive_score",
        "refit_head",
        "reinstall_masked_heads",
        "remove_spurious_units",
        "reported_subgroups",
        "resolve_protocol",
        "restore_masked_heads",
        "scene_concepts",
        "select_remedy",
        "softmax_margin",
        "spurious_reliance",
        "spurious_subspace",
        "subgroup_membership",
        "top_spurious_unit",
        "unit_contributions",
    ],
    "bench": ["BENCHMARKS", "get_benchmark"],
    "callbacks": [
        "Backends",
        "Exemplars",
        "FlaggingResult",
        "GateResult",
        "MisclassificationFlagger",
        "Output",
        "Refit",
        "Schedule",
        "SearchBudget",
        "SpuriousEvidence",
        "SpuriousFeatureRemover",
        "SubgroupAudit",
        "Thresholds",
        "UnitInterpreter",
    ],
    "recipes": [
        "AuditOptions",
        "AuditOutcome",
        "BackboneConfig",
        "DigitsBackbone",
        "ImageFolderDataModule",
        "PlainModule",
        "RenderedDataset",
        "ShapesBackbone",
        "ShapesBackboneClassifier",
        "SplitFeatures",
        "SpuriousShapesClassifier",
        "SpuriousShapesDataModule",
        "TintedDigitsClassifier",
        "TintedDigitsDataModule",
        "backend_names",
        "build_backend",
        "describe_backends",
        "extract_features",
        "load_backbone",
        "load_from_config",
        "load_model",
        "load_preprocess",
        "load_weights",
        "pretrain_backbone",
        "register_backend",
        "run_audit",
        "run_demo",
        "spurious_splits",
        "train_erm_classifier",
    ],
    "reporting": [
        "AuditFindings",
        "CSVAdapter",
        "CheckResult",
        "LoggerAdapter",
        "MLflowAdapter",
        "ReportImage",
        "TensorBoardAdapter",
        "UnitSection",
        "WandbAdapter",
        "adapters_for",
        "junit_xml",
        "load_audit",
        "load_results",
        "log_key",
        "make_grid",
        "render_report",
        "save_png",
        "save_results",
        "sections_from_toolbox",
        "to_png_bytes",
        "write_junit",
        "write_report",
    ],
    "testing": [
        "SCENARIOS",
        "ChatRequest",
        "ChatServer",
        "ScriptedResponse",
        "dropped_connection",
        "empty_choices_reply",
        "error_reply",
        "hostile_script",
        "malformed_reply",
        "text_reply",
        "tool_call_reply",
        "tool_calls_reply",
    ],
    "tools": [
        "TOOL_NAMES",
        "EditPair",
        "ExemplarImage",
        "Experiment",
        "GeneratedImage",
        "ImageDescription",
        "ImageStore",
        "Limits",
        "StoredImage",
        "Summary",
        "ToolDefinition",
        "Toolbox",
        "UnitCall",
        "observation",
    ],
    "tools.backends": [
        "CaptionDescriber",
        "ChatMessage",
        "ChatResult",
        "ClipConceptScorer",
        "Description",
        "DiffusersEditor",
        "DiffusersGenerator",
        "ImageDescriber",
        "ImageEditor",
        "ImageGenerator",
        "ImageItem",
        "ImageSummarizer",
        "ProceduralDescriber",
        "ProceduralEditor",
        "ProceduralGenerator",
        "Redactor",
        "ToolCall",
        "Usage",
        "VLMClient",
        "VLMDescriber",
    ],
    "tools.realdata": [
        "COLOUR_HUES",
        "COLOUR_NAMES",
        "AttributeConcepts",
        "AttributeTable",
        "ClassifierDescriber",
        "CombinedDescriber",
        "EditRecord",
        "ImageFacts",
        "PixelDescriber",
        "PromptDesigner",
        "RealDataEditor",
        "RetrievalDesigner",
        "RetrievalGenerator",
        "TableDescriber",
        "default_describer",
        "tint",
    ],
    "world": [
        "PROVENANCE",
        "Background",
        "BiasedShapes",
        "Concept",
        "EditRecord",
        "ImageFacts",
        "NeuronSpec",
        "PlantedSubgroup",
        "ProceduralDataset",
        "ProvenanceStore",
        "Rendering",
        "Scene",
        "SceneObject",
        "SceneSampler",
        "ShapesWorld",
        "SpuriousShapes",
        "SyntheticNeuron",
        "SyntheticNeuronLayer",
        "SyntheticNeuronModel",
        "apply_edit",
        "build_neuron_suite",
        "common_concepts",
        "describe_region",
        "describe_scene",
        "image_key",
        "nearest_colours",
        "parse_prompt",
        "region_concepts",
        "render_and_register",
        "render_batch",
        "render_scene",
        "render_scenes",
        "sample_neuron_specs",
        "summarize_concepts",
    ],
}


#: Where the names an ``__init__`` needs only for its annotations come from.
_TYPING_MODULES = (typing, collections.abc, __future__)


def _public_names(module: ModuleType) -> set[str]:
    """What ``module`` holds that is not private, not a submodule and not a typing helper
    imported under its own name (``Any``, ``Callable``, ``annotations``)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and not any(getattr(helpers, name, None) is value for helpers in _TYPING_MODULES)
    }


def _ruff_order(name: str) -> tuple[int, str]:
    """ruff's order for ``__all__`` (RUF022): CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(lightning_maia).items()
        if not name.startswith("_") and not isinstance(value, type(lightning_maia))
    }
    assert set(lightning_maia.__all__) == public
    assert lightning_maia.__all__ == sorted(lightning_maia.__all__)


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_each_subpackage_exports_exactly_its_listed_names(package: str) -> None:
    module = importlib.import_module(f"lightning_maia.{package}")
    assert module.__all__ == EXPORTS[package]
    assert module.__all__ == sorted(module.__all__, key=_ruff_order)
    assert len(set(module.__all__)) == len(module.__all__)
    # Every listed name resolves, and nothing public is left out of the list.
    assert all(getattr(module, name, None) is not None for name in module.__all__)
    assert _public_names(module) == set(module.__all__)


def test_callbacks_export_the_callbacks_and_their_option_groups() -> None:
    from lightning_maia import callbacks
    from lightning_maia._options import Backends, Output

    assert callbacks.Backends is Backends and callbacks.Output is Output
    assert {"MisclassificationFlagger", "SpuriousFeatureRemover", "UnitInterpreter"} <= set(
        callbacks.__all__
    )


def test_importing_the_package_imports_no_optional_heavyweights() -> None:
    code = (
        "import sys, lightning_maia, lightning_maia.world, lightning_maia.cli;"
        "bad = [m for m in ('torchvision', 'diffusers', 'transformers', 'openai', 'wandb',"
        " 'mlflow') if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_importing_the_backends_loads_no_model_library() -> None:
    code = (
        "import sys, lightning_maia.tools.backends, lightning_maia.agents;"
        "bad = [m for m in ('torchvision', 'diffusers', 'openai', 'wandb', 'mlflow')"
        " if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
