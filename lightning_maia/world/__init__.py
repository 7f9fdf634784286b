"""The procedural world: ground-truth scenes, rendering with masks, grammar, datasets, neurons."""

from lightning_maia.world._datasets import (
    ProceduralDataset,
    ShapesWorld,
    SpuriousShapes,
)
from lightning_maia.world._grammar import apply_edit, parse_prompt
from lightning_maia.world._neuron_suite import build_neuron_suite, sample_neuron_specs
from lightning_maia.world._neurons import (
    NeuronSpec,
    SyntheticNeuron,
    SyntheticNeuronLayer,
    SyntheticNeuronModel,
)
from lightning_maia.world._render import (
    Rendering,
    nearest_colours,
    render_batch,
    render_scene,
    render_scenes,
)
from lightning_maia.world._scene import Background, Concept, Scene, SceneObject, SceneSampler
from lightning_maia.world._subgroups import BiasedShapes, PlantedSubgroup
from lightning_maia.world._text import (
    common_concepts,
    describe_region,
    describe_scene,
    region_concepts,
    summarize_concepts,
)
from lightning_maia.world.provenance import (
    PROVENANCE,
    EditRecord,
    ImageFacts,
    ProvenanceStore,
    image_key,
    render_and_register,
)

__all__ = [
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
]
