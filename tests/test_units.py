"""Unit specs: every documented form, merging, `*` widths, and errors that name what came."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lightning_maia.errors import ConfigurationError, UnitSpecError
from lightning_maia.units import (
    Unit,
    UnitSelection,
    find_layer,
    parse_unit_spec,
    resolve_units,
    static_width,
    units_of,
)

CLASS_NAMES = ["dog", "cat", "cow", "fox"]


class BasicBlock(nn.Module):
    """A torchvision-like residual block; its type does not tell its width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class MiniResNet(nn.Module):
    """Module paths like torchvision's ResNet (conv1, bn1, layer4.1.conv2, fc) at toy size."""

    def __init__(self, width: int = 20, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer4 = nn.Sequential(BasicBlock(width), BasicBlock(width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.norm(torch.flatten(self.avgpool(x), 1)))


class MiniVGG(nn.Module):
    """Module paths like torchvision's VGG: `features` and `classifier` Sequentials."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 7, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(7, 5), nn.ReLU(), nn.Dropout(), nn.Linear(5, 3), nn.Dropout()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TimmLikeNet(nn.Module):
    """A root whose ``num_features`` is its pre-logits width (timm's convention), not its output."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 8
        self.body = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


class WithOutputChild(nn.Module):
    """A model with a child called ``output``, which then wins over the model output."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.output = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.body(x))


# ---------------------------------------------------------------------------------------------
# Unit and UnitSelection


def test_unit_spec_and_str_round_trip_through_the_parser() -> None:
    unit = Unit("layer4.1.conv2", 17)
    assert unit.spec == "layer4.1.conv2:17"
    assert str(unit) == "layer4.1.conv2:17"
    assert parse_unit_spec(unit.spec).units() == [unit]
    assert Unit("output", 3).is_class_logit
    assert not unit.is_class_logit


def test_units_sort_by_layer_then_index() -> None:
    units = [Unit("b", 1), Unit("a", 10), Unit("a", 2)]
    assert sorted(units) == [Unit("a", 2), Unit("a", 10), Unit("b", 1)]


def test_selection_units_with_explicit_indices_ignore_width() -> None:
    selection = UnitSelection("conv", (5, 2))
    assert selection.units() == [Unit("conv", 5), Unit("conv", 2)]
    assert selection.units(width=100) == [Unit("conv", 5), Unit("conv", 2)]


def test_selection_of_every_channel_expands_with_the_width() -> None:
    selection = UnitSelection("relu", None)
    assert selection.units(3) == [Unit("relu", 0), Unit("relu", 1), Unit("relu", 2)]
    with pytest.raises(UnitSpecError, match=r"`relu:\*` selects every channel.*forward pass"):
        selection.units()


def test_units_of_flattens_selections_in_order() -> None:
    selections = [UnitSelection("b", (3,)), UnitSelection("a", (0, 1))]
    assert units_of(selections) == [Unit("b", 3), Unit("a", 0), Unit("a", 1)]
    with pytest.raises(UnitSpecError, match="relu"):
        units_of([UnitSelection("relu", None)])


# ---------------------------------------------------------------------------------------------
# parse_unit_spec: every form in the module docstring


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("layer4.1.conv2:17", UnitSelection("layer4.1.conv2", (17,))),
        ("layer4:0-9,12", UnitSelection("layer4", (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12))),
        ("features:*", UnitSelection("features", None)),
        ("output:3", UnitSelection("output", (3,))),
        ("layer4:4-4", UnitSelection("layer4", (4,))),
        # spaces are allowed around every part; repeats keep their first position
        ("  layer4 : 3 , 1 - 3 ,3 ", UnitSelection("layer4", (3, 1, 2))),
        ("features: * ", UnitSelection("features", None)),
    ],
)
def test_parse_unit_spec_forms(spec: str, expected: UnitSelection) -> None:
    assert parse_unit_spec(spec) == expected


def test_parse_class_names_resolve_to_their_index() -> None:
    assert parse_unit_spec("output:cat", CLASS_NAMES) == UnitSelection("output", (1,))
    assert parse_unit_spec("output:fox,dog,2", CLASS_NAMES) == UnitSelection("output", (3, 0, 2))


def test_parse_class_name_without_class_names_asks_for_them() -> None:
    with pytest.raises(UnitSpecError, match=r"'cat'.*'output:cat'.*pass class_names"):
        parse_unit_spec("output:cat")


def test_parse_unknown_class_lists_class_names_and_the_closest() -> None:
    with pytest.raises(UnitSpecError) as caught:
        parse_unit_spec("output:cta", CLASS_NAMES)
    message = str(caught.value)
    assert "unknown class 'cta'" in message
    assert "'output:cta'" in message
    assert "class_names are dog, cat, cow, fox" in message
    assert message.endswith("closest: cat")


def test_parse_unknown_class_with_nothing_close_gives_no_closest() -> None:
    with pytest.raises(UnitSpecError) as caught:
        parse_unit_spec("output:zebra", CLASS_NAMES)
    assert "class_names are dog, cat, cow, fox" in str(caught.value)
    assert "closest" not in str(caught.value)


def test_parse_class_names_do_not_apply_to_other_layers() -> None:
    with pytest.raises(UnitSpecError, match=r"cannot read 'cat'.*expected channel indices"):
        parse_unit_spec("fc:cat", CLASS_NAMES)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("layer4", r"LAYER:CHANNELS.*got 'layer4'$"),
        ("layer4:", r"LAYER:CHANNELS.*got 'layer4:'$"),
        (":3", r"LAYER:CHANNELS.*got ':3'$"),
        ("   ", r"LAYER:CHANNELS.*got '   '$"),
        ("layer4:9-3", r"range '9-3' in unit spec 'layer4:9-3' runs backwards"),
        ("conv1:abc", r"cannot read 'abc' in unit spec 'conv1:abc': expected channel indices"),
        ("conv1:1,,2", r"cannot read '' in unit spec 'conv1:1,,2'"),
        ("conv1:-1", r"cannot read '-1' in unit spec 'conv1:-1'"),
        ("conv1:1.5", r"cannot read '1.5'"),
        ("conv1:*,3", r"cannot read '\*'"),
        ("conv1:²", r"cannot read '²'"),
        ("output:abc", r"cannot read 'abc'.*class indices \(or pass class_names\)"),
    ],
)
def test_parse_bad_syntax_names_what_came(spec: str, pattern: str) -> None:
    with pytest.raises(UnitSpecError, match=pattern):
        parse_unit_spec(spec)


@pytest.mark.parametrize("spec", [17, None, ("conv1", 3), b"conv1:3"])
def test_parse_non_string_spec_names_what_came(spec: object) -> None:
    with pytest.raises(UnitSpecError, match="must be a string.*" + re.escape(f"got {spec!r}")):
        parse_unit_spec(spec)  # type: ignore[arg-type]


def test_unit_spec_error_is_a_configuration_and_value_error() -> None:
    with pytest.raises(ValueError, match="runs backwards") as caught:
        parse_unit_spec("layer4:3-1")
    assert isinstance(caught.value, ConfigurationError)


# ---------------------------------------------------------------------------------------------
# find_layer


def test_find_layer_follows_dotted_paths() -> None:
    model = MiniResNet()
    assert find_layer(model, "layer4.1.conv2") is model.layer4[1].conv2
    assert find_layer(model, "layer4") is model.layer4


def test_output_is_the_model_itself_without_an_output_child() -> None:
    model = MiniResNet()
    assert find_layer(model, "output") is model


def test_output_is_the_child_called_output_when_there_is_one() -> None:
    model = WithOutputChild()
    assert find_layer(model, "output") is model.output
    assert resolve_units(model, "output:*") == [UnitSelection("output", (0, 1))]


def test_unknown_layer_suggests_the_closest_module_names() -> None:
    with pytest.raises(UnitSpecError) as caught:
        find_layer(MiniResNet(), "layer4.1.conv")
    message = str(caught.value)
    assert message.startswith("no layer 'layer4.1.conv' in MiniResNet; closest: ")
    closest = message.split("closest: ")[1].split(", ")
    assert closest[0] == "layer4.1.conv2"
    assert "layer4.1.conv1" in closest
    assert len(closest) <= 5


def test_unknown_layer_with_nothing_close_lists_layers() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(UnitSpecError, match=r"^no layer 'zzzzzzzz' in Sequential; layers: 0, 1$"):
        find_layer(model, "zzzzzzzz")


# ---------------------------------------------------------------------------------------------
# resolve_units


def test_resolve_a_single_string() -> None:
    model = MiniResNet()
    assert resolve_units(model, "layer4.1.conv2:17") == [UnitSelection("layer4.1.conv2", (17,))]


def test_resolve_keeps_layer_order_and_merges_specs_for_the_same_layer() -> None:
    model = MiniResNet()
    selections = resolve_units(model, ["layer4:3,1", "conv1:0", "layer4:1-2", "layer4:12"])
    assert selections == [
        UnitSelection("layer4", (3, 1, 2, 12)),
        UnitSelection("conv1", (0,)),
    ]


def test_resolve_output_by_index_and_by_class_name() -> None:
    model = MiniResNet()
    selections = resolve_units(model, ["output:3", "output:cat"], class_names=CLASS_NAMES)
    assert selections == [UnitSelection("output", (3, 1))]


def test_resolve_accepts_a_tuple_of_specs() -> None:
    model = MiniResNet()
    assert resolve_units(model, ("fc:1", "bn1:0")) == [
        UnitSelection("fc", (1,)),
        UnitSelection("bn1", (0,)),
    ]


@pytest.mark.parametrize(
    ("spec", "width"),
    [
        ("conv1:*", 20),  # Conv2d.out_channels
        ("fc:*", 4),  # Linear.out_features
        ("bn1:*", 20),  # BatchNorm2d.num_features
        ("norm:*", 20),  # LayerNorm.normalized_shape
        ("layer4.0.conv2:*", 20),
    ],
)
def test_star_expands_by_the_static_width(spec: str, width: int) -> None:
    (selection,) = resolve_units(MiniResNet(), spec)
    assert selection.indices == tuple(range(width))


def test_star_on_a_sequential_takes_its_last_width_past_activations_and_dropout() -> None:
    model = MiniVGG()
    assert resolve_units(model, "features:*") == [UnitSelection("features", tuple(range(7)))]
    assert resolve_units(model, "classifier:*") == [UnitSelection("classifier", (0, 1, 2))]


def test_star_on_a_sequential_ending_in_a_linear() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4, 9))
    assert resolve_units(model, "output:*") == [UnitSelection("output", tuple(range(9)))]


def test_star_stays_open_when_the_width_is_unknown() -> None:
    model = MiniResNet()
    assert resolve_units(model, "relu:*") == [UnitSelection("relu", None)]
    # layer4 ends in a block whose type does not tell its width
    assert resolve_units(model, "layer4:*") == [UnitSelection("layer4", None)]
    (selection,) = resolve_units(model, "relu:*")
    assert selection.units(3) == [Unit("relu", 0), Unit("relu", 1), Unit("relu", 2)]


def test_star_on_a_sequential_does_not_look_past_a_child_that_may_change_the_width() -> None:
    widening = nn.Sequential(nn.Conv2d(3, 8, 1), BasicBlock(8), nn.Conv2d(8, 16, 1))
    assert static_width(widening) == 16
    unknown_last = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Flatten())
    assert static_width(unknown_last) is None
    unknown_block = nn.Sequential(nn.Conv2d(3, 8, 1), BasicBlock(8), nn.ReLU())
    assert static_width(unknown_block) is None


def test_star_on_a_root_whose_attributes_describe_its_insides_waits_for_a_forward() -> None:
    model = TimmLikeNet()
    assert resolve_units(model, "output:*") == [UnitSelection("output", None)]
    assert resolve_units(model, "head:*") == [UnitSelection("head", (0, 1, 2))]


@pytest.mark.parametrize(
    ("module", "width"),
    [
        (nn.Conv2d(3, 5, 1), 5),
        (nn.LazyConv2d(11, 1), 11),
        (nn.Linear(3, 6), 6),
        (nn.LazyLinear(4), 4),
        (nn.BatchNorm2d(7), 7),
        (nn.LayerNorm(12), 12),
        (nn.LayerNorm((4, 12)), None),
        (nn.MultiheadAttention(8, 2), 8),
        (nn.Sequential(nn.Linear(3, 6), nn.GELU(), nn.Dropout(0.1)), 6),
        (nn.Sequential(nn.Sequential(nn.Conv2d(3, 9, 1)), nn.MaxPool2d(2)), 9),
        (nn.Sequential(), None),
        (nn.ReLU(), None),
        (nn.Identity(), None),
        (nn.Flatten(), None),
    ],
)
def test_static_width(module: nn.Module, width: int | None) -> None:
    assert static_width(module) == width


def test_merging_star_with_explicit_indices() -> None:
    model = MiniResNet()
    known = resolve_units(model, ["fc:2", "fc:*"])
    assert known == [UnitSelection("fc", (2, 0, 1, 3))]
    assert resolve_units(model, ["relu:2", "relu:*"]) == [UnitSelection("relu", None)]
    assert resolve_units(model, ["relu:*", "relu:2"]) == [UnitSelection("relu", None)]


def test_resolve_unknown_layer_suggests_the_closest() -> None:
    with pytest.raises(
        UnitSpecError, match=r"no layer 'layer4\.1\.conv'.*closest: layer4\.1\.conv2"
    ):
        resolve_units(MiniResNet(), ["conv1:0", "layer4.1.conv:17"])


def test_resolve_unknown_class_lists_class_names() -> None:
    with pytest.raises(UnitSpecError, match=r"class_names are dog, cat, cow, fox; closest: cow"):
        resolve_units(MiniResNet(), "output:cwo", class_names=CLASS_NAMES)


def test_resolve_no_specs() -> None:
    with pytest.raises(UnitSpecError, match=r"no units given.*'layer4:0-9'"):
        resolve_units(MiniResNet(), [])
    with pytest.raises(UnitSpecError, match="no units given"):
        resolve_units(MiniResNet(), ())


@pytest.mark.parametrize("specs", [5, ["conv1:0", 5], Unit("conv1", 0)])
def test_resolve_non_string_spec_names_what_came(specs: object) -> None:
    came = specs[1] if isinstance(specs, list) else specs
    with pytest.raises(UnitSpecError, match="must be a string.*" + re.escape(f"got {came!r}")):
        resolve_units(MiniResNet(), specs)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["layer4", "layer4:", "layer4:9-3", "conv1:abc"])
def test_resolve_bad_syntax(spec: str) -> None:
    with pytest.raises(UnitSpecError, match=re.escape(repr(spec))):
        resolve_units(MiniResNet(), spec)
