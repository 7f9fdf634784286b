"""The hard neuron suite: kinds outside the scientist's grammar, noisy models, distractors."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_maia.errors import ConfigurationError
from lightning_maia.world._datasets import ShapesWorld
from lightning_maia.world._neuron_suite import (
    DISTRACTOR_RATE,
    HARD_NOISE,
    build_hard_suite,
    hard_neuron_specs,
    hard_probe_sampler,
    sample_distractors,
)
from lightning_maia.world._neurons import NeuronSpec
from lightning_maia.world._scene import Background, Concept, Scene, SceneObject

C = Concept.parse
TWO = Scene(
    (
        SceneObject("star", "red", size="large", x=0.3, y=0.5),
        SceneObject("circle", "blue", size="small", x=0.8, y=0.5),
    ),
    Background("grass"),
)


def test_not_fires_on_objects_without_the_concept() -> None:
    spec = NeuronSpec("not", (C("colour=red"),))
    assert spec.matches(TWO) == ([False, True], False)
    assert (spec.name, spec.description) == ("not:colour=red", "objects that are not red objects")
    with pytest.raises(ConfigurationError, match="an object concept for not"):
        NeuronSpec("not", (C("background=grass"),))


def test_three_way_or_fires_on_any_of_its_concepts() -> None:
    spec = NeuronSpec("or3", (C("shape=circle"), C("colour=green"), C("background=grass")))
    assert spec.matches(TWO) == ([False, True], True)
    assert spec.name == "or3:shape=circle|colour=green|background=grass"


def test_position_and_relative_size() -> None:
    assert NeuronSpec("position", ()).matches(TWO) == ([True, False], False)
    larger = NeuronSpec("relative_size", (), variant=1)
    assert larger.matches(TWO) == ([True, False], False)
    assert larger.name == "relative_size:largest#1"
    alone = Scene((SceneObject("star", "red", size="large"),), Background("grass"))
    assert larger.matches(alone) == ([False], False)  # nothing to be larger than


def test_hard_specs_count_and_differ_by_seed() -> None:
    specs = hard_neuron_specs(0, per_kind=2)
    assert [s.kind for s in specs] == ["not"] * 2 + ["or3"] * 2 + ["position"] * 2 + [
        "relative_size"
    ] * 2
    assert len(set(specs)) == 8
    assert hard_neuron_specs(1, per_kind=2)[:4] != specs[:4]


def test_hard_suite_models_carry_the_noise_and_every_kind() -> None:
    assert HARD_NOISE == (0.1, 0.25)
    model = build_hard_suite(0, 4, 2, 2, per_kind=1, noise_std=0.25)
    assert model.neurons.noise_std == 0.25
    assert [s.kind for s in model.specs][-4:] == ["not", "or3", "position", "relative_size"]
    assert len(model.specs) == 12


def test_distractors_hold_at_their_rate_in_the_probe_data() -> None:
    distractors = sample_distractors(0)
    cues = [d.cue for d in distractors]
    assert len(set(cues)) == len(cues) == 8
    assert all(d.cue.attribute != d.companion.attribute for d in distractors)
    data = ShapesWorld(size=3000, seed=0, sampler=hard_probe_sampler(0))
    object_distractors = [d for d in distractors if not d.companion.is_background]
    together = cue_seen = 0
    for index in range(len(data)):
        for obj in data.scene(index).objects:
            for distractor in object_distractors:
                if obj.has(distractor.cue):
                    cue_seen += 1
                    together += obj.has(distractor.companion)
    # Companion by the correlation (0.7), or by chance (1 in 9 or 11) otherwise; a later
    # correlation can overwrite an earlier one's companion.
    assert DISTRACTOR_RATE - 0.1 < together / cue_seen < DISTRACTOR_RATE + 0.1
    counts = [len(data.scene(i).objects) for i in range(200)]
    assert set(counts) == {1, 2, 3} and np.mean(counts) > 1.5
