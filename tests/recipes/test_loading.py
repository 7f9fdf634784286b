"""Loading a model for an audit: a plain module keeps its layer names; checkpoints of several
shapes load; weights that do not fit say which keys, briefly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_maia.errors import ConfigurationError
from lightning_maia.recipes._loading import PlainModule, load_preprocess, load_weights
from lightning_maia.units import resolve_units


def test_a_plain_module_keeps_its_names_and_its_outputs() -> None:
    inner = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    wrapped = PlainModule(inner)
    assert [name for name, _ in wrapped.named_modules() if name] == ["0", "1"]
    assert resolve_units(wrapped, ["1:0-3"])[0].layer == "1"
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(wrapped(images), inner(images))
    assert wrapped.audited is inner and wrapped.get_submodule("0") is inner[0]


@pytest.mark.parametrize("shape", ["state_dict", "lightning", "prefixed", "module"])
def test_checkpoint_shapes_load(tmp_path: Path, shape: str) -> None:
    source = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    state = source.state_dict()
    saved = {
        "state_dict": state,
        "lightning": {"state_dict": state, "epoch": 3},
        "prefixed": {"state_dict": {f"model.{k}": v for k, v in state.items()}},
        "module": source,
    }[shape]
    torch.save(saved, tmp_path / "weights.pt")
    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    load_weights(target, tmp_path / "weights.pt")
    assert torch.equal(target[0].weight, source[0].weight)


def test_weights_that_do_not_fit_name_the_keys(tmp_path: Path) -> None:
    torch.save({f"w{i}": torch.zeros(1) for i in range(9)}, tmp_path / "other.pt")
    with pytest.raises(ConfigurationError) as caught:
        load_weights(nn.Sequential(nn.Conv2d(3, 4, 3)), tmp_path / "other.pt")
    message = str(caught.value)
    assert message.startswith(
        "`--ckpt`: the weights do not fit Sequential: missing 0.bias, 0.weight"
    )
    assert "unexpected w0, w1, w2, w3, w4 ..." in message
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigurationError, match="`--ckpt`: cannot read"):
        load_weights(nn.Sequential(nn.Conv2d(3, 4, 3)), tmp_path / "junk.pt")


def test_preprocess_specs() -> None:
    assert load_preprocess(None) is None and load_preprocess("none") is None
    resized = load_preprocess("imagenet:16")
    assert resized is not None and resized(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    with pytest.raises(ConfigurationError, match="imagenet:SIZE takes a number, got 'big'"):
        load_preprocess("imagenet:big")
