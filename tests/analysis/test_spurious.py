"""Spurious-feature analysis: L1 selection, the refit protocol, remedies, metrics, masked heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_maia.agents._records import UnitReport
from lightning_maia.analysis._masked_head import (
    MaskedHead,
    effective_linear,
    find_head,
    install_masked_head,
    restore_masked_heads,
)
from lightning_maia.analysis._spurious import (
    REFIT,
    RefitProtocol,
    balanced_indices,
    choose_copies,
    choose_refit,
    counterfactual_augment,
    counterfactual_deltas,
    dataset_groups,
    erase_projection,
    erase_remedy,
    head_metrics,
    judge_units,
    l1_top_units,
    refit_head,
    select_remedy,
    spurious_subspace,
)
from lightning_maia.errors import BackendError, ConfigurationError, ToolError
from lightning_maia.subject import Subject
from lightning_maia.tools.toolbox import Toolbox
from lightning_maia.world import SpuriousShapes


def planted(n: int, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Units 0..2 carry the class, 3..5 a background that matches it with probability p,
    6..9 are noise. Returns features, labels and groups (class * 2 + background)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    background = torch.where(torch.rand(n, generator=g) < p, labels, 1 - labels)
    core = labels[:, None].float() + 0.2 * torch.randn(n, 3, generator=g)
    spurious = 2.0 * background[:, None].float() + 0.2 * torch.randn(n, 3, generator=g)
    noise = torch.randn(n, 4, generator=g)
    return torch.cat([core, spurious, noise], 1), labels, labels * 2 + background


def test_l1_selection_ranks_the_class_units_first() -> None:
    features, labels, _ = planted(600, 0.95, seed=0)
    selection = l1_top_units(features, labels, k=3)
    assert sorted(selection.units) == [0, 1, 2]
    assert selection.weights.shape == (10,)
    assert all(selection.weights[u] > selection.weights[n] for u in range(3) for n in range(6, 10))
    # k larger than the units: every unit, the strongest first.
    assert sorted(l1_top_units(features, labels, k=50).units) == list(range(10))


def test_l1_selection_relaxes_the_penalty_until_k_units_have_weight() -> None:
    features, labels, _ = planted(600, 0.95, seed=0)
    # At c=1e-4 no unit keeps a weight; relaxed tenfold at a time, at least five do.
    selection = l1_top_units(features, labels, k=5, c=1e-4)
    assert int((selection.weights[selection.units] > 0).sum()) == 5


def test_select_remedy_on_core_units_is_robust_on_balanced_data() -> None:
    train, train_labels, _ = planted(600, 0.95, seed=0)
    test, test_labels, test_groups = planted(800, 0.5, seed=1)
    core = select_remedy(train, train_labels, [0, 1, 2])
    spurious = select_remedy(train, train_labels, [3, 4, 5])
    core_figures = head_metrics(core.logits(test), test_labels, test_groups)
    spurious_figures = head_metrics(spurious.logits(test), test_labels, test_groups)
    assert core_figures["balanced_accuracy"] == 1.0
    assert core_figures["worst_group_accuracy"] == 1.0
    # The background head is right only where background and class agree (about half).
    assert 0.4 < spurious_figures["balanced_accuracy"] < 0.6
    assert spurious_figures["worst_group_accuracy"] == 0.0
    # Dropped units get exactly zero weight; the mask says which were kept.
    assert core.mask.tolist() == [1.0] * 3 + [0.0] * 7
    assert torch.all(core.weight[:, 3:] == 0)


def test_counterfactual_augment_adds_shifted_copies_with_their_labels() -> None:
    features = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1])
    # One delta: every copy is shifted by it, copies in the order of the items.
    x, y = counterfactual_augment(features, labels, torch.tensor([[10.0, -1.0]]), copies=2)
    assert x.tolist() == [[0, 0], [1, 1], [10, -1], [11, 0], [10, -1], [11, 0]]
    assert y.tolist() == [0, 1, 0, 1, 0, 1]
    # No copies: the data as it was; draws are pinned by the seed.
    assert counterfactual_augment(features, labels, torch.ones(3, 2), 0)[0] is features
    deltas = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    first = counterfactual_augment(features, labels, deltas, 3, seed=4)[0]
    assert torch.equal(first, counterfactual_augment(features, labels, deltas, 3, seed=4)[0])
    with pytest.raises(ConfigurationError, match="`copies` can be a non-negative int"):
        counterfactual_augment(features, labels, deltas, -1)
    with pytest.raises(ConfigurationError, match="`deltas` can be an \\(M, 2\\) tensor"):
        counterfactual_augment(features, labels, torch.ones(4, 3), 1)
    with pytest.raises(ConfigurationError, match="`deltas`"):
        select_remedy(features, labels, [0, 1], copies=1)


def mixed(n: int, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit 0 carries the class; unit 1 a little of the class and much of a background that
    matches it with probability p: a unit the agent may judge core that still carries the
    shortcut."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    background = torch.where(torch.rand(n, generator=g) < p, labels, 1 - labels)
    core = labels[:, None].float() + 0.6 * torch.randn(n, 1, generator=g)
    mix = 0.5 * labels[:, None].float() + 2.0 * background[:, None].float()
    mix = mix + 0.3 * torch.randn(n, 1, generator=g)
    return torch.cat([core, mix], 1), labels, labels * 2 + background


def test_counterfactual_copies_teach_the_select_head_to_ignore_the_edited_direction() -> None:
    train, labels, _ = mixed(600, 0.99, seed=0)
    test, test_labels, test_groups = mixed(800, 0.5, seed=1)
    # Background-only edits move unit 1 by the background's +-2 and leave unit 0 alone.
    deltas = torch.tensor([[0.0, 2.0], [0.0, -2.0]])
    protocol = RefitProtocol(c=1.0)
    plain = select_remedy(train, labels, [0, 1], protocol=protocol)
    shifted = select_remedy(train, labels, [0, 1], protocol=protocol, deltas=deltas, copies=3)
    # The plain refit leans on unit 1 (the shortcut) more than on unit 0; the shifted one
    # reads mostly unit 0.
    assert plain.weight[1, 1] > plain.weight[1, 0] > 0
    assert 0 < shifted.weight[1, 1] < 0.5 * shifted.weight[1, 0]
    before = head_metrics(plain.logits(test), test_labels, test_groups)
    after = head_metrics(shifted.logits(test), test_labels, test_groups)
    assert before["worst_group_accuracy"] < 0.2
    assert after["worst_group_accuracy"] > before["worst_group_accuracy"] + 0.4
    assert after["balanced_accuracy"] > before["balanced_accuracy"] + 0.15


def test_choose_copies_picks_the_count_the_validation_classes_prefer() -> None:
    train, labels, _ = mixed(600, 0.99, seed=0)
    val, val_labels, _ = mixed(400, 0.5, seed=1)  # balanced: the copies help here
    deltas = torch.tensor([[0.0, 2.0], [0.0, -2.0]])
    protocol = RefitProtocol(c=1.0)
    choice = choose_copies(
        train, labels, [0, 1], deltas, [3, 0, 1], val, val_labels, protocol=protocol
    )
    assert sorted(choice.scores) == [0, 1, 3] and choice.penalties == {0: 1.0, 1: 1.0, 3: 1.0}
    for copies in (0, 1, 3):  # each score is that count's select head on the validation data
        head = select_remedy(train, labels, [0, 1], protocol=protocol, deltas=deltas, copies=copies)
        expected = head_metrics(head.logits(val), val_labels)["balanced_accuracy"]
        assert choice.scores[copies] == pytest.approx(expected)
    assert choice.copies == max(choice.scores, key=lambda c: (choice.scores[c], -c))
    assert choice.copies > 0 and choice.scores[choice.copies] > choice.scores[0] + 0.1
    # On data drawn like the training data the shortcut pays: no copies win (groups unread).
    same, same_labels, _ = mixed(400, 0.99, seed=2)
    assert (
        choose_copies(
            train, labels, [0, 1], deltas, [0, 3], same, same_labels, protocol=protocol
        ).copies
        == 0
    )
    with pytest.raises(ConfigurationError, match="`grid` can be one or more non-negative"):
        choose_copies(train, labels, [0, 1], deltas, [], val, val_labels)


def entangled(n: int, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit 0 carries the class; units 1..12 each carry a background that matches the class
    with probability p, plus noise: a shortcut spread over many units, as in real backbones."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    background = torch.where(torch.rand(n, generator=g) < p, labels, 1 - labels)
    core = labels[:, None].float() + 0.15 * torch.randn(n, 1, generator=g)
    spread = background[:, None].float() + 0.5 * torch.randn(n, 12, generator=g)
    return torch.cat([core, spread], 1), labels, labels * 2 + background


def test_choose_refit_finds_the_penalty_that_lets_a_head_leave_a_spread_shortcut() -> None:
    train, labels, _ = entangled(600, 0.95, seed=0)
    test, test_labels, test_groups = entangled(800, 0.5, seed=1)
    chosen = choose_refit(train, labels)  # class labels of the training data only
    assert chosen == RefitProtocol(c=1.0, max_iter=REFIT.max_iter)
    fixed = head_metrics(refit_head(train, labels).logits(test), test_labels, test_groups)
    tuned = refit_head(train, labels, protocol=chosen)
    figures = head_metrics(tuned.logits(test), test_labels, test_groups)
    # The strong fixed penalty spreads weight over the twelve shortcut units and follows them.
    assert fixed["worst_group_accuracy"] < 0.1
    assert figures["worst_group_accuracy"] > 0.95
    assert figures["balanced_accuracy"] > 0.98
    # A grid of one penalty is that penalty; bad grids, folds and labels name the argument.
    assert choose_refit(train, labels, [0, 1], grid=[0.5]).c == 0.5
    with pytest.raises(ConfigurationError, match="grid"):
        choose_refit(train, labels, grid=[])
    with pytest.raises(ConfigurationError, match="folds"):
        choose_refit(train, labels, folds=1)
    with pytest.raises(ConfigurationError, match="labels"):
        choose_refit(train[:3], torch.tensor([0, 0, 1]))


def test_the_remedies_take_cv_and_refit_with_the_penalty_choose_refit_picks() -> None:
    train, labels, _ = entangled(600, 0.95, seed=0)
    kept = list(range(train.shape[1]))
    picked = choose_refit(train, labels, kept)
    by_cv = select_remedy(train, labels, kept, protocol="cv")
    direct = select_remedy(train, labels, kept, protocol=picked)
    assert picked.c != REFIT.c  # so the test can tell the fixed default from the choice
    assert torch.equal(by_cv.logits(train), direct.logits(train))
    deltas = torch.zeros(4, train.shape[1])
    deltas[:, 1] = 1.0  # the edits move one shortcut unit
    projection = erase_projection(spurious_subspace(deltas))
    erased = erase_remedy(train, labels, deltas, protocol="cv")
    chosen = choose_refit(train, labels, projection=projection)
    expected = refit_head(train, labels, projection=projection, protocol=chosen)
    assert torch.equal(erased.logits(train), expected.logits(train))
    with pytest.raises(ConfigurationError, match="`protocol` can be a RefitProtocol or 'cv'"):
        select_remedy(train, labels, kept, protocol="strong")  # type: ignore[arg-type]


def test_refit_folds_standardisation_into_raw_weights_like_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression

    features, labels, _ = planted(300, 0.9, seed=2)
    features = features * 5 + 3  # far from standardised
    head = refit_head(features, labels, [0, 3, 7])
    x = features[:, [0, 3, 7]]
    mean, std = x.mean(0), x.std(0)
    reference = LogisticRegression(C=REFIT.c, max_iter=REFIT.max_iter).fit(
        ((x - mean) / std).numpy(), labels.numpy()
    )
    expected = reference.decision_function(((x - mean) / std).numpy())
    logits = head.logits(features)
    assert torch.allclose(logits[:, 1] - logits[:, 0], torch.as_tensor(expected).float(), atol=1e-4)


def test_refit_never_predicts_a_class_missing_from_training() -> None:
    features, labels, _ = planted(100, 0.9, seed=3)
    head = refit_head(features, labels, num_classes=3)
    assert head.weight.shape == (3, 10)
    assert set(head.logits(features).argmax(1).tolist()) <= {0, 1}


def test_spurious_subspace_and_its_projection() -> None:
    g = torch.Generator().manual_seed(0)
    directions = torch.zeros(2, 6)
    directions[0, 0], directions[1, 1] = 1.0, 1.0
    deltas = torch.randn(50, 2, generator=g) @ directions
    basis = spurious_subspace(deltas, energy=0.99)
    assert basis.shape == (6, 2)
    projection = erase_projection(basis)
    assert torch.allclose(projection @ torch.eye(6)[0], torch.zeros(6), atol=1e-5)
    assert torch.allclose(projection @ torch.eye(6)[4], torch.eye(6)[4], atol=1e-5)
    assert spurious_subspace(deltas, energy=0.99, max_rank=1).shape == (6, 1)
    with pytest.raises(ConfigurationError, match="`energy`"):
        spurious_subspace(deltas, energy=0.0)


def test_erase_remedy_removes_the_edited_direction() -> None:
    train, train_labels, _ = planted(600, 0.95, seed=0)
    test, test_labels, test_groups = planted(800, 0.5, seed=1)
    g = torch.Generator().manual_seed(4)
    # Counterfactual edits change only the background units (3..5), together.
    deltas = torch.randn(40, 1, generator=g) * torch.tensor([[0, 0, 0, 2.0, 2.0, 2.0, 0, 0, 0, 0]])
    head = erase_remedy(train, train_labels, deltas, energy=0.99)
    figures = head_metrics(head.logits(test), test_labels, test_groups)
    assert figures["worst_group_accuracy"] == 1.0
    assert torch.allclose(head.logits(test), head.logits(test + deltas[0]), atol=1e-4)


def test_head_metrics_exact_values() -> None:
    predictions = torch.tensor([0, 0, 0, 1, 1, 1])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    groups = torch.tensor([0, 1, 2, 2, 3, 3])
    figures = head_metrics(predictions, labels, groups)
    assert figures == pytest.approx(
        {"accuracy": 5 / 6, "balanced_accuracy": 0.875, "worst_group_accuracy": 0.5}
    )
    assert "worst_group_accuracy" not in head_metrics(predictions, labels)


def test_balanced_indices_cut_every_group_to_the_smallest() -> None:
    groups = torch.tensor([0] * 5 + [1] * 2 + [2] * 3)
    picked = balanced_indices(groups, seed=0)
    assert torch.bincount(groups[picked]).tolist() == [2, 2, 2]
    assert torch.equal(picked, balanced_indices(groups, seed=0))


def test_dataset_groups_from_metadata_and_from_group() -> None:
    data = SpuriousShapes("test", size=32)
    assert dataset_groups(data).tolist() == [i % 16 for i in range(32)]

    class Grouped:
        def __len__(self) -> int:
            return 3

        def group(self, index: int) -> int:
            return 2 - index

    assert dataset_groups(Grouped()).tolist() == [2, 1, 0]
    assert dataset_groups([1, 2]) is None


# -- masked heads -----------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_masked_head_math() -> None:
    head = MaskedHead(3, 2, mask=torch.tensor([1.0, 0.0, 1.0]), projection=2 * torch.eye(3))
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]))
        head.bias.copy_(torch.tensor([0.5, -0.5]))
    x = torch.tensor([[1.0, 10.0, 2.0]])
    assert head(x).tolist() == [[6.5, 13.5]]  # 2 * (1 + 2) + 0.5 and 2 * (1 + 6) - 0.5
    weight, bias = effective_linear(head)
    assert torch.allclose(x @ weight.T + bias, head(x))
    with pytest.raises(ConfigurationError, match="`mask`"):
        MaskedHead(3, 2, mask=torch.ones(4))
    with pytest.raises(ConfigurationError, match="`remedy`"):
        MaskedHead(3, 2, remedy="prune")


def test_install_converts_in_place_and_keeps_the_original() -> None:
    torch.manual_seed(0)
    net = Net()
    head = net.head
    parameters = [id(p) for p in net.parameters()]
    original = head.weight.detach().clone()
    x = torch.randn(5, 3)
    before = net(x).detach()
    new_weight = torch.ones(2, 4)
    installed = install_masked_head(
        net, "head", new_weight, torch.zeros(2), mask=torch.tensor([1.0, 1.0, 0.0, 0.0])
    )
    assert installed is head and isinstance(net.head, MaskedHead)
    assert [id(p) for p in net.parameters()] == parameters  # optimizers keep working
    assert torch.equal(net.head.original_weight, original)
    assert torch.allclose(net.head.original_forward(net.features(x)), before)
    features = net.features(x)
    assert torch.allclose(net(x), features[:, :2].sum(1, keepdim=True).expand(5, 2))
    # Installing again keeps the very first original head.
    install_masked_head(net, "head", 2 * new_weight, torch.zeros(2))
    assert torch.equal(net.head.original_weight, original)


def test_masked_head_survives_a_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    net = Net()
    basis = torch.nn.functional.normalize(torch.tensor([[1.0], [1.0], [0.0], [0.0]]), dim=0)
    install_masked_head(
        net,
        "head",
        torch.randn(2, 4) @ erase_projection(basis),
        torch.zeros(2),
        projection=erase_projection(basis),
        remedy="erase",
    )
    state = net.state_dict()
    fresh = Net()
    assert restore_masked_heads(fresh, state) == ["head"]
    fresh.load_state_dict(state)  # strict: every buffer has its place
    x = torch.randn(4, 3)
    assert isinstance(fresh.head, MaskedHead) and fresh.head.remedy == "erase"
    assert torch.allclose(fresh(x), net(x))
    assert torch.equal(fresh.head.projection, net.head.projection)
    # A plain Linear that loads the weights alone computes the same function.
    plain = Net()
    plain.load_state_dict(state, strict=False)
    assert torch.allclose(plain(x), net(x), atol=1e-5)


def test_find_head() -> None:
    net = Net()
    assert find_head(net)[0] == "head"
    assert find_head(net, "features")[0] == "features"
    with pytest.raises(
        ConfigurationError, match=r"`head` can be an nn\.Linear module: features, head"
    ):
        find_head(net, "classifier")
    with pytest.raises(ConfigurationError, match="`head`"):
        find_head(nn.Sequential(nn.ReLU()))


# -- judgement and counterfactual edits ------------------------------------------------------


class ColourMeans(nn.Module):
    """Features = the mean of each colour channel: a background edit moves all three."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))


def test_counterfactual_deltas_count_background_only_edits() -> None:
    model = ColourMeans()
    toolbox = Toolbox(Subject(model, ["pool:0"]), "pool:0")
    ids = [g.id for g in toolbox.text2image(["a red circle on snow", "a red circle on snow"])]
    background = toolbox.edit_images([ids[0]], ["change the background to grass"])[0]
    toolbox.edit_images([ids[1]], ["make it blue"])  # changes the object: not counted
    deltas = counterfactual_deltas(model, "pool", [toolbox])
    assert deltas.shape == (1, 3)
    before = toolbox.images.get(ids[0]).image.mean(dim=(1, 2))
    after = toolbox.images.get(background.edited).image.mean(dim=(1, 2))
    assert torch.allclose(deltas[0], after - before, atol=1e-5)
    assert counterfactual_deltas(model, "pool", [toolbox], attribute="colour").shape == (1, 3)
    with pytest.raises(ToolError, match="changed only the shape"):
        counterfactual_deltas(model, "pool", [toolbox], attribute="shape")


class BrokenAgent:
    name = "broken"

    def run(self, toolbox: Toolbox, task: object) -> UnitReport:
        raise BackendError("the endpoint is down")


def test_judge_units_turns_failures_into_failed_judgements() -> None:
    warnings: list[str] = []
    judgements = judge_units(
        ColourMeans(),
        "pool",
        [0, 2],
        class_names=("circle", "square"),
        agent=BrokenAgent(),
        warn=warnings.append,
        progress=False,
    )
    assert [j.verdict for j in judgements] == ["failed", "failed"]
    assert [j.unit.spec for j in judgements] == ["pool:0", "pool:2"]
    assert len(warnings) == 2 and "endpoint is down" in warnings[0]
    assert judgements[0].to_row()["evidence"] == "failed: the endpoint is down"
    with pytest.raises(BackendError):
        judge_units(
            ColourMeans(), "pool", [0], class_names=("circle",), agent=BrokenAgent(),
            on_error="raise", progress=False,
        )  # fmt: skip


def test_scientist_judges_a_background_unit_spurious() -> None:
    # Unit 2 is the mean blue: water backgrounds light it up whatever the shape.
    judgements = judge_units(
        ColourMeans(), "pool", [2], class_names=("circle", "square", "star"), progress=False
    )
    (judgement,) = judgements
    assert judgement.verdict == "spurious"
    assert judgement.report.details["attribute_effects"]["background"] > 0.5
    assert set(judgement.to_row()) == {"unit", "l1_weight", "verdict", "description", "evidence"}
