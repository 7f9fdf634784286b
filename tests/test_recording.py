"""ActivationRecorder: exact values from hand-weighted modules, shapes, outputs, hook hygiene."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from lightning_maia.errors import ConfigurationError, UnitIndexError, UnitSpecError
from lightning_maia.recording import (
    ActivationRecorder,
    TokenLayout,
    output_tensor,
    record_units,
    reduce_maps,
    to_channel_maps,
)
from lightning_maia.units import Unit, UnitSelection, resolve_units

# One 2x2 image and its negation; the 1x1 conv below maps a pixel v to (v, -v, 2v + 1).
IMAGE = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
IMAGES = torch.stack([IMAGE, -IMAGE]).unsqueeze(1)  # (2, 1, 2, 2)
CONV_MAPS = torch.stack(
    [
        torch.stack([IMAGE, -IMAGE, 2 * IMAGE + 1]),
        torch.stack([-IMAGE, IMAGE, -2 * IMAGE + 1]),
    ]
)  # (2, 3, 2, 2)
CONV_MAX = [[3.0, 4.0, 7.0], [4.0, 3.0, 9.0]]
CONV_MEAN = [[0.5, -0.5, 2.0], [-0.5, 0.5, 0.0]]


def hand_conv() -> nn.Conv2d:
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 2.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    return conv


class HandNet(nn.Module):
    """conv (v, -v, 2v+1) -> relu -> spatial mean -> fc with logits (f0, 10 + f1 + f2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = hand_conv()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, 10.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


# relu(CONV_MAPS) spatial means, then the fc above.
HAND_FEATURES = [[1.5, 1.0, 3.75], [1.0, 1.5, 2.25]]
HAND_LOGITS = [[1.5, 14.75], [1.0, 13.75]]


class Scaled(nn.Module):
    """Channel k is (k + 1) * x: six channels whose values say which channel they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(k + 1) * x for k in range(6)], dim=1)


class OpaqueConv(nn.Module):
    """A conv wrapped so that its width is unknown until a forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = hand_conv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def assert_no_hooks(model: nn.Module) -> None:
    for name, module in model.named_modules():
        assert len(module._forward_hooks) == 0, f"hook left on {name or 'the root'}"


# ---------------------------------------------------------------------------------------------
# shapes and reductions


def test_conv_maps_are_recorded_as_they_are() -> None:
    model = HandNet()
    with ActivationRecorder(model, resolve_units(model, "conv:*")) as recorder:
        model(IMAGES)
    assert recorder.maps["conv"].shape == (2, 3, 2, 2)
    torch.testing.assert_close(recorder.maps["conv"], CONV_MAPS)
    assert recorder.records["conv"].width == 3


@pytest.mark.parametrize(("reduction", "expected"), [("max", CONV_MAX), ("mean", CONV_MEAN)])
def test_reductions_are_exact(reduction: str, expected: list[list[float]]) -> None:
    model = HandNet()
    selections = resolve_units(model, "conv:*")
    with ActivationRecorder(model, selections, reduction=reduction) as recorder:
        model(IMAGES)
    assert recorder.activations["conv"].tolist() == expected


def test_features_become_one_by_one_maps() -> None:
    model = HandNet()
    with ActivationRecorder(model, resolve_units(model, "fc:*")) as recorder:
        model(IMAGES)
    assert recorder.maps["fc"].shape == (2, 2, 1, 1)
    assert recorder.maps["fc"].flatten(1).tolist() == HAND_LOGITS
    assert recorder.activations["fc"].tolist() == HAND_LOGITS


def test_output_records_the_logits() -> None:
    model = HandNet()
    selections = resolve_units(model, "output:cat", class_names=["dog", "cat"])
    with ActivationRecorder(model, selections) as recorder:
        logits = model(IMAGES)
    assert logits.tolist() == HAND_LOGITS
    assert recorder.activations["output"].tolist() == [[14.75], [13.75]]
    assert recorder.unit_activations(Unit("output", 1)).tolist() == [14.75, 13.75]


def test_unknown_width_is_found_at_the_first_forward() -> None:
    model = HandNet()
    selections = resolve_units(model, ["relu:*", "fc:1"])
    assert selections[0].indices is None
    recorder = ActivationRecorder(model, selections, reduction="mean")
    with pytest.raises(UnitSpecError, match=r"`relu:\*`"):
        recorder.units()
    with recorder:
        model(IMAGES)
    assert recorder.records["relu"].width == 3
    assert recorder.units() == [Unit("relu", 0), Unit("relu", 1), Unit("relu", 2), Unit("fc", 1)]
    assert recorder.activations["relu"].tolist() == HAND_FEATURES


def test_records_hold_the_last_forward() -> None:
    model = HandNet()
    with ActivationRecorder(model, resolve_units(model, "conv:2")) as recorder:
        model(IMAGES)
        model(IMAGES[1:])
    assert recorder.activations["conv"].tolist() == [[9.0]]


@pytest.mark.parametrize(
    ("tokens", "shape"),
    [
        (TokenLayout(drop_cls=True), (2, 3, 4, 4)),
        (TokenLayout(drop_cls=False), (2, 3, 1, 17)),
        (TokenLayout(drop_cls=True, fold_grid=False), (2, 3, 1, 16)),
        (TokenLayout(drop_cls=False, fold_grid=False), (2, 3, 1, 17)),
    ],
)
def test_tokens_with_a_cls_token(tokens: TokenLayout, shape: tuple[int, ...]) -> None:
    # token t, channel c holds 100 * c + t; the CLS token (t = 0) holds 1000 everywhere
    values = torch.arange(17.0).view(1, 17, 1) + 100 * torch.arange(3.0).view(1, 1, 3)
    values[:, 0, :] = 1000.0
    values = torch.cat([values, values + 0.5])  # (2, 17, 3)
    model = nn.Sequential(nn.Identity())
    with ActivationRecorder(model, [UnitSelection("0", (0, 1, 2))], tokens=tokens) as recorder:
        model(values)
    maps = recorder.maps["0"]
    assert maps.shape == shape
    flat = maps.flatten(2)  # (N, C, tokens) in token order
    kept = values[:, 1:, :] if tokens.drop_cls else values
    torch.testing.assert_close(flat, kept.transpose(1, 2))
    if tokens.drop_cls:
        # the grid reads row by row: row 1, column 2 is token 1 + 4 * 1 + 2 = 7
        if tokens.fold_grid:
            assert maps[0, 2, 1, 2].item() == 207.0
        assert recorder.activations["0"].tolist() == [[16.0, 116.0, 216.0], [16.5, 116.5, 216.5]]
    else:
        assert recorder.activations["0"].tolist() == [[1000.0] * 3, [1000.5] * 3]


def test_square_token_count_folds_without_dropping() -> None:
    values = torch.arange(32.0).view(1, 16, 2)
    assert to_channel_maps(values).shape == (1, 2, 4, 4)
    assert to_channel_maps(values)[0, 1].tolist() == [
        [1.0, 3.0, 5.0, 7.0],
        [9.0, 11.0, 13.0, 15.0],
        [17.0, 19.0, 21.0, 23.0],
        [25.0, 27.0, 29.0, 31.0],
    ]
    assert to_channel_maps(values, TokenLayout(fold_grid=False)).shape == (1, 2, 1, 16)


def test_features_and_maps_through_to_channel_maps() -> None:
    features = torch.tensor([[1.0, 2.0, 3.0]])
    assert to_channel_maps(features).tolist() == [[[[1.0]], [[2.0]], [[3.0]]]]
    maps = torch.randn(2, 3, 5, 4)
    assert to_channel_maps(maps) is maps


@pytest.mark.parametrize("shape", [(2,), (1, 2, 3, 4, 5)])
def test_unreadable_shapes_name_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(UnitSpecError, match=re.escape(f"of shape {shape}:")):
        to_channel_maps(torch.zeros(shape))


def test_reduce_maps_exact() -> None:
    maps = torch.tensor([[[[1.0, -3.0], [2.0, 4.0]], [[-1.0, -2.0], [-3.0, -6.0]]]])
    assert reduce_maps(maps, "max").tolist() == [[4.0, -1.0]]
    assert reduce_maps(maps, "mean").tolist() == [[1.0, -3.0]]


def test_invalid_reduction_names_the_option() -> None:
    message = "`reduction` can be max or mean, got 'median'"
    model = HandNet()
    with pytest.raises(ConfigurationError, match=message):
        ActivationRecorder(model, resolve_units(model, "conv:0"), reduction="median")
    with pytest.raises(ConfigurationError, match=message):
        reduce_maps(torch.zeros(1, 1, 1, 1), "median")
    with pytest.raises(ConfigurationError, match=message):
        record_units(model, IMAGES, resolve_units(model, "conv:0"), reduction="median")
    assert_no_hooks(model)


# ---------------------------------------------------------------------------------------------
# layer outputs that are not a plain tensor


@dataclass
class ModelOutput:
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class Wrapping(nn.Module):
    """Runs HandNet and wraps its output: the logits are (N, 2), the hidden state its conv maps."""

    def __init__(self, wrap: Any) -> None:
        super().__init__()
        self.net = HandNet()
        self.wrap = wrap

    def forward(self, x: torch.Tensor) -> Any:
        hidden = self.net.conv(x)
        return self.wrap(self.net(x), hidden)


@pytest.mark.parametrize(
    ("wrap", "expected"),
    [
        (lambda logits, hidden: (logits, hidden), HAND_LOGITS),
        (lambda logits, hidden: [None, "text", logits], HAND_LOGITS),
        (lambda logits, hidden: {"scores": logits, "maps": hidden}, HAND_LOGITS),
        (lambda logits, hidden: {"hidden": hidden, "logits": logits}, HAND_LOGITS),
        (lambda logits, hidden: ModelOutput(logits=logits), HAND_LOGITS),
        (lambda logits, hidden: ModelOutput(last_hidden_state=logits), HAND_LOGITS),
        (lambda logits, hidden: ModelOutput(logits, hidden), HAND_LOGITS),
        (lambda logits, hidden: OrderedDict(last_hidden_state=hidden, logits=logits), HAND_LOGITS),
    ],
)
def test_output_finds_the_logits_in_wrapped_outputs(wrap: Any, expected: list[list[float]]) -> None:
    model = Wrapping(wrap)
    with ActivationRecorder(model, resolve_units(model, "output:0,1")) as recorder:
        model(IMAGES)
    assert recorder.activations["output"].tolist() == expected


def test_inner_layers_prefer_the_hidden_state_and_output_prefers_logits() -> None:
    both = ModelOutput(logits=torch.ones(2, 2), last_hidden_state=torch.zeros(2, 5, 3))
    assert output_tensor(both) is both.last_hidden_state
    assert output_tensor(both, prefer_logits=True) is both.logits
    as_dict = {"logits": both.logits, "last_hidden_state": both.last_hidden_state}
    assert output_tensor(as_dict) is both.last_hidden_state
    assert output_tensor(as_dict, prefer_logits=True) is both.logits


def test_inner_layer_with_a_model_output_records_its_hidden_state() -> None:
    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = hand_conv()

        def forward(self, x: torch.Tensor) -> ModelOutput:
            maps = self.conv(x)
            return ModelOutput(logits=maps.mean(dim=(2, 3)), last_hidden_state=maps)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Inner()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x).logits

    model = Outer()
    with ActivationRecorder(model, [UnitSelection("inner", (0, 1, 2))]) as recorder:
        model(IMAGES)
    assert recorder.activations["inner"].tolist() == CONV_MAX


@pytest.mark.parametrize("output", ["text", 3, (None, "x"), {"a": 1}, ModelOutput()])
def test_output_without_a_tensor_is_an_error(output: Any) -> None:
    with pytest.raises(UnitSpecError, match=f"type {type(output).__name__}"):
        output_tensor(output)


# ---------------------------------------------------------------------------------------------
# hooks never leak


def test_hooks_are_removed_after_a_normal_exit() -> None:
    model = HandNet()
    selections = resolve_units(model, ["conv:0", "relu:*", "fc:1", "output:0"])
    with ActivationRecorder(model, selections) as recorder:
        assert len(model.conv._forward_hooks) == 1
        assert len(model._forward_hooks) == 1
        model(IMAGES)
    assert_no_hooks(model)
    assert set(recorder.records) == {"conv", "relu", "fc", "output"}


def test_hooks_are_removed_when_the_forward_raises() -> None:
    model = HandNet()
    selections = resolve_units(model, ["conv:0", "relu:*", "output:0"])
    with pytest.raises(RuntimeError), ActivationRecorder(model, selections):
        model(torch.zeros(1, 2, 2, 2))  # two input channels for a one-channel conv
    assert_no_hooks(model)


def test_hooks_are_removed_when_the_with_body_raises() -> None:
    model = HandNet()

    def forward_then_fail() -> None:
        with ActivationRecorder(model, resolve_units(model, "conv:0")):
            model(IMAGES)
            raise KeyError("after the forward")

    with pytest.raises(KeyError, match="after the forward"):
        forward_then_fail()
    assert_no_hooks(model)


def test_hooks_the_model_already_had_are_kept() -> None:
    model = HandNet()
    seen: list[int] = []
    handle = model.conv.register_forward_hook(lambda module, inputs, output: seen.append(1))
    with ActivationRecorder(model, resolve_units(model, "conv:0")):
        model(IMAGES)
    assert len(model.conv._forward_hooks) == 1
    model(IMAGES)
    assert seen == [1, 1]
    handle.remove()
    assert_no_hooks(model)


def test_unit_past_the_width_fails_at_the_first_forward_with_the_real_width() -> None:
    model = HandNet()
    selections = resolve_units(model, ["conv:1,5", "fc:0"])  # conv has 3 channels
    recorder = ActivationRecorder(model, selections)
    with pytest.raises(UnitIndexError) as caught, recorder:
        model(IMAGES)
    message = str(caught.value)
    assert "conv:5" in message
    assert "has 3 channels" in message
    assert "0-2" in message
    assert isinstance(caught.value, IndexError)
    assert_no_hooks(model)


def test_the_first_index_past_the_width_is_already_out_of_range() -> None:
    model = HandNet()
    with pytest.raises(UnitIndexError, match=r"conv:3 is out of range.*has 3 channels"):
        record_units(model, IMAGES, resolve_units(model, "conv:3"))
    assert record_units(model, IMAGES, resolve_units(model, "conv:2")).records["conv"].width == 3
    assert_no_hooks(model)


def test_class_logit_past_the_number_of_classes() -> None:
    model = HandNet()
    with pytest.raises(UnitIndexError, match=r"output:7.*has 2 channels"):
        record_units(model, IMAGES, resolve_units(model, "output:7"))
    assert_no_hooks(model)


def test_the_same_layer_twice_is_an_error() -> None:
    model = HandNet()
    selections = [UnitSelection("conv", (0,)), UnitSelection("conv", (2,))]
    with pytest.raises(UnitSpecError, match=r"once.*\['conv', 'conv'\]"):
        ActivationRecorder(model, selections)
    assert_no_hooks(model)


def test_an_unknown_layer_fails_before_any_hook() -> None:
    model = HandNet()
    with pytest.raises(UnitSpecError, match="closest: conv"):
        ActivationRecorder(model, [UnitSelection("fc", (0,)), UnitSelection("cnv", (0,))])
    assert_no_hooks(model)


# ---------------------------------------------------------------------------------------------
# record_units and looking units up


def test_record_units_runs_under_inference_mode() -> None:
    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = hand_conv()
            self.modes: list[bool] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.modes.append(torch.is_inference_mode_enabled())
            return self.conv(x)

    model = Spy()
    recorder = record_units(model, IMAGES, resolve_units(model, "conv:*"), reduction="mean")
    assert model.modes == [True]
    assert not torch.is_inference_mode_enabled()
    assert recorder.activations["conv"].is_inference()
    assert recorder.activations["conv"].tolist() == CONV_MEAN
    assert_no_hooks(model)


def test_record_units_reads_tokens_with_the_layout() -> None:
    model = nn.Sequential(nn.Identity())
    values = torch.arange(17.0).view(1, 17, 1)
    recorder = record_units(
        model, values, [UnitSelection("0", None)], tokens=TokenLayout(drop_cls=True)
    )
    assert recorder.maps["0"].shape == (1, 1, 4, 4)
    assert recorder.activations["0"].tolist() == [[16.0]]


def test_multi_index_selection_maps_units_to_positions() -> None:
    model = nn.Sequential(Scaled())
    image = IMAGES[:1]  # max 3, mean 0.5
    with ActivationRecorder(model, [UnitSelection("0", (5, 2))]) as recorder:
        model(image)
    assert recorder.activations["0"].tolist() == [[18.0, 9.0]]
    assert recorder.unit_activations(Unit("0", 5)).tolist() == [18.0]
    assert recorder.unit_activations(Unit("0", 2)).tolist() == [9.0]
    torch.testing.assert_close(recorder.unit_maps(Unit("0", 5)), 6 * image[:, 0])
    torch.testing.assert_close(recorder.unit_maps(Unit("0", 2)), 3 * image[:, 0])
    assert recorder.units() == [Unit("0", 5), Unit("0", 2)]


def test_star_selection_looks_units_up_by_channel() -> None:
    model = nn.Sequential(Scaled())
    with ActivationRecorder(model, [UnitSelection("0", None)], reduction="mean") as recorder:
        model(IMAGES[:1])
    assert recorder.activations["0"].tolist() == [[0.5, 1.0, 1.5, 2.0, 2.5, 3.0]]
    assert recorder.unit_activations(Unit("0", 4)).tolist() == [2.5]
    torch.testing.assert_close(recorder.unit_maps(Unit("0", 1)), 2 * IMAGES[:1, 0])
    for index in (6, -1):
        with pytest.raises(UnitIndexError, match=r"has 6 channels"):
            recorder.unit_activations(Unit("0", index))


def test_looking_up_units_that_were_not_recorded() -> None:
    model = nn.Sequential(Scaled(), nn.ReLU())
    with ActivationRecorder(model, [UnitSelection("0", (5, 2))]) as recorder:
        model(IMAGES[:1])
    with pytest.raises(UnitSpecError, match=r"unit 0:3 is not among the recorded units"):
        recorder.unit_activations(Unit("0", 3))
    with pytest.raises(UnitSpecError, match=r"layer '1' was not recorded"):
        recorder.unit_maps(Unit("1", 0))


def test_without_keep_maps_there_are_no_maps() -> None:
    model = HandNet()
    selections = resolve_units(model, "conv:0-2")
    with ActivationRecorder(model, selections, keep_maps=False) as recorder:
        model(IMAGES)
    assert recorder.maps == {}
    assert recorder.records["conv"].maps is None
    assert recorder.unit_activations(Unit("conv", 2)).tolist() == [7.0, 9.0]
    with pytest.raises(UnitSpecError, match="keep_maps=True"):
        recorder.unit_maps(Unit("conv", 2))


def test_kept_maps_are_not_changed_by_a_later_in_place_op() -> None:
    model = nn.Sequential(OpaqueConv(), nn.ReLU(inplace=True))
    selections = resolve_units(model, "0:*")
    assert selections[0].indices is None  # the width is only found at the forward
    with ActivationRecorder(model, selections, reduction="mean") as recorder, torch.no_grad():
        output = model(IMAGES)
    torch.testing.assert_close(recorder.maps["0"], CONV_MAPS)
    torch.testing.assert_close(output, CONV_MAPS.clamp(min=0))
    assert recorder.activations["0"].tolist() == CONV_MEAN


# ---------------------------------------------------------------------------------------------
# recording does not change the model


def test_recording_in_train_mode_with_dropout_leaves_outputs_and_gradients_alone() -> None:
    def make() -> nn.Sequential:
        torch.manual_seed(1)
        return nn.Sequential(hand_conv(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(12, 2))

    plain, recorded = make(), make()
    assert plain.training
    assert recorded.training

    torch.manual_seed(7)
    expected = plain(IMAGES)
    expected.sum().backward()

    selections = resolve_units(recorded, ["0:*", "1:*", "output:*"])
    torch.manual_seed(7)
    with ActivationRecorder(recorded, selections) as recorder:
        output = recorded(IMAGES)
    output.sum().backward()

    assert recorded.training
    assert torch.equal(output, expected)
    assert output.requires_grad
    assert plain[0].weight.grad is not None
    assert recorded[0].weight.grad is not None
    torch.testing.assert_close(recorded[0].weight.grad, plain[0].weight.grad)
    # the dropout really dropped: its recorded maps are the conv maps zeroed or doubled
    dropped = recorder.maps["1"]
    assert dropped.shape == (2, 3, 2, 2)
    kept = dropped != 0
    assert 0 < int(kept.sum()) < dropped.numel()
    torch.testing.assert_close(dropped[kept], 2 * CONV_MAPS[kept])
    torch.testing.assert_close(recorder.maps["0"], CONV_MAPS)
    torch.testing.assert_close(recorder.activations["output"], expected.detach())
    assert not recorder.maps["0"].requires_grad
    assert_no_hooks(recorded)
