"""The stacked model: members are independent and equal to models trained alone."""

from __future__ import annotations

import pytest
import torch

from lossbench.problem.models import INITS, StackedMLP, mlp


@pytest.mark.parametrize("init", INITS)
def test_member_init_depends_only_on_its_seed(init: str) -> None:
    stacked = StackedMLP(3, 2, seeds=[5, 7, 9], hidden=[8, 4], init=init)
    for k, seed in enumerate([5, 7, 9]):
        alone = StackedMLP(3, 2, seeds=[seed], hidden=[8, 4], init=init)
        for w_stacked, w_alone in zip(stacked.parameters(), alone.parameters(), strict=True):
            # the same init call on the member's own generator: one code path, bit for bit
            assert torch.equal(w_stacked[k], w_alone[0])
    assert not torch.equal(stacked.weights[0][0], stacked.weights[0][1])


def test_forward_shapes_and_shared_input() -> None:
    model = StackedMLP(3, 2, seeds=[0, 1], hidden=[8])
    x = torch.randn(10, 3)
    shared = model(x)
    assert shared.shape == (2, 10, 2)
    assert torch.allclose(shared, model(x.expand(2, 10, 3)), atol=1e-6)


def test_mlp_option_needs_a_hidden_layer() -> None:
    with pytest.raises(ValueError, match="model=linear is the model without one"):
        mlp(2, 1, seeds=[0], hidden=[])


def test_linear_model_has_one_layer() -> None:
    model = StackedMLP(4, 1, seeds=[0], hidden=[])
    assert [tuple(w.shape) for w in model.weights] == [(1, 1, 4)]


def test_default_init_matches_torch_linear_bounds() -> None:
    model = StackedMLP(100, 1, seeds=[0], hidden=[])
    assert model.weights[0].abs().max() <= 1 / 100**0.5


def test_dropout_masks_are_per_member_and_reproducible() -> None:
    x = torch.ones(2, 6, 3)
    a = StackedMLP(3, 1, seeds=[0, 1], hidden=[16], dropout=0.5)
    b = StackedMLP(3, 1, seeds=[0], hidden=[16], dropout=0.5)
    assert torch.allclose(a(x)[0], b(x[:1])[0], atol=1e-6)
    a.eval()
    assert torch.equal(a(x), a(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": []}, None),
        ({"hidden": [0]}, "positive integers"),
        ({"hidden": [8, -1]}, "positive integers"),
        ({"hidden": 8}, "positive integers"),
        ({"activation": "swish"}, "not one of sigmoid, tanh, relu, leaky_relu, gelu"),
        ({"dropout": 1.0}, "dropout"),
        ({"init": "orthogonal"}, "not one of default"),
    ],
)
def test_architecture_checks(kwargs: dict, message: str | None) -> None:
    if message is None:
        StackedMLP(2, 1, seeds=[0], **kwargs)
        return
    with pytest.raises(ValueError, match=message):
        StackedMLP(2, 1, seeds=[0], **kwargs)
