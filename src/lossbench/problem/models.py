"""The model: K independent MLPs stacked into batched weights ``[K, out, in]``.

One member per training seed (and per loss, when a sweep varies it): a vectorized fit trains all
members in one batched forward and backward pass. Members never share anything: each draws its
init and dropout masks from its own generator, so member k is the same model whether it trains
alone (K=1) or beside others.

``hidden=[]`` is a linear model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "gelu": F.gelu,
}
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {  # the same functions, as modules
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
INITS = (
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "normal",
)


def check_architecture(
    hidden: Sequence[int], activation: str, dropout: float, init: str, init_std: float
) -> None:
    """Raise a clear error for hidden sizes, activation, dropout or init that cannot be built."""
    sizes = list(hidden) if isinstance(hidden, Sequence) and not isinstance(hidden, str) else None
    if sizes is None or any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in sizes):
        raise ValueError(
            f"model.hidden={hidden!r} must be a list of positive integers ([] for a linear model)"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"model.activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout={dropout} must be in [0, 1)")
    if init not in INITS:
        raise ValueError(f"model.init={init!r} is not one of {', '.join(INITS)}")
    if not init_std > 0:
        raise ValueError(f"model.init_std={init_std} must be > 0")


def mlp(
    in_features: int,
    out_features: int,
    seeds: Sequence[int],
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    dropout: float = 0.0,
    init: str = "default",
    init_std: float = 0.01,
) -> StackedMLP:
    """``model=mlp``: stacked MLPs with at least one hidden layer."""
    if isinstance(hidden, Sequence) and not isinstance(hidden, str) and len(hidden) == 0:
        raise ValueError(
            "model.hidden=[] is empty: an MLP needs at least one hidden layer "
            "(model=linear is the model without one)"
        )
    return StackedMLP(in_features, out_features, seeds, hidden, activation, dropout, init, init_std)


def linear(
    in_features: int,
    out_features: int,
    seeds: Sequence[int],
    init: str = "default",
    init_std: float = 0.01,
) -> StackedMLP:
    """``model=linear``: no hidden layer (logistic/softmax or linear regression)."""
    return StackedMLP(in_features, out_features, seeds, [], "relu", 0.0, init, init_std)


def member_generators(seeds: Sequence[int], stream: int) -> list[torch.Generator]:
    """One CPU generator per member for a given random stream (0: init, 1: data order, 2: dropout).

    Streams are derived with NumPy's SeedSequence so that they are independent of each other.
    """
    import numpy as np

    gens = []
    for seed in seeds:
        state = np.random.SeedSequence([int(seed), stream]).generate_state(1, dtype=np.uint64)[0]
        gens.append(torch.Generator().manual_seed(int(state)))
    return gens


class StackedMLP(nn.Module):
    """K MLPs with identical architecture and independent weights.

    ``forward`` takes ``x`` as ``[K, B, in]`` (each member its own batch) or ``[B, in]`` (one
    batch shared by all members) and returns ``[K, B, out]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        seeds: Sequence[int],
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        dropout: float = 0.0,
        init: str = "default",
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        check_architecture(hidden, activation, dropout, init, init_std)
        hidden = list(hidden)
        self.seeds = [int(s) for s in seeds]
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        self.dropout = float(dropout)
        sizes = [in_features, *hidden, out_features]
        k = len(self.seeds)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(k, n_out, n_in))
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(k, n_out)) for n_out in sizes[1:])
        self._init_members(init, init_std)
        self._dropout_gens = member_generators(self.seeds, stream=2) if self.dropout else []

    @property
    def n_members(self) -> int:
        """Number of stacked members."""
        return len(self.seeds)

    @torch.no_grad()
    def _init_members(self, init: str, init_std: float) -> None:
        # xavier's gain for the activation (torch has none for gelu; relu's is the usual stand-in)
        gain = nn.init.calculate_gain(
            "relu" if self.activation_name == "gelu" else self.activation_name
        )
        for member, gen in enumerate(member_generators(self.seeds, stream=0)):
            for weight, bias in zip(self.weights, self.biases, strict=True):
                w, b = weight[member], bias[member]
                fan_in = w.shape[1]
                bound = 1 / math.sqrt(fan_in)
                if init == "default":  # torch.nn.Linear's own init
                    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
                    nn.init.uniform_(b, -bound, bound, generator=gen)
                    continue
                if init == "xavier_uniform":
                    nn.init.xavier_uniform_(w, gain=gain, generator=gen)
                elif init == "xavier_normal":
                    nn.init.xavier_normal_(w, gain=gain, generator=gen)
                elif init == "kaiming_uniform":
                    nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=gen)
                elif init == "kaiming_normal":
                    nn.init.kaiming_normal_(w, nonlinearity="relu", generator=gen)
                else:  # "normal": N(0, init_std), as the articles' randn * 0.01
                    nn.init.normal_(w, 0.0, init_std, generator=gen)
                nn.init.zeros_(b)

    def layer_parameters(self) -> list[nn.Parameter]:
        """The stacked parameters in the plain model's order: each layer's weight, then its
        bias (``nn.Sequential`` of ``nn.Linear``: what an optimizer of one member sees)."""
        return [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]

    def weight_matrices(self) -> list[Tensor]:
        """The stacked weight matrices, first layer first (biases excluded)."""
        return list(self.weights)

    def hidden_activations(self, x: Tensor) -> list[Tensor]:
        """Post-activation outputs of each hidden layer, ``[K, B, width]`` each (no dropout)."""
        outs = []
        h = x.to(self.weights[0].dtype)
        for weight, bias in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = self.activation(_linear(h, weight, bias))
            outs.append(h)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        """Outputs of all members, ``[K, B, out]`` (inputs in the weights' precision)."""
        h = x.to(self.weights[0].dtype)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = _linear(h, weight, bias)
            if i < last:
                h = self.activation(h)
                if self.dropout and self.training:
                    h = self._drop(h)
        return h

    def member(self, k: int) -> nn.Sequential:
        """Member ``k`` alone as an ordinary module (``nn.Linear`` layers, the activation,
        ``nn.Dropout``), a copy of its weights: ``[B, in] -> [B, out]``, what ``forward``
        gives for member ``k`` in eval mode."""
        layers: list[nn.Module] = []
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            n_out, n_in = weight.shape[1:]
            layer = nn.Linear(int(n_in), int(n_out))
            with torch.no_grad():
                layer.weight.copy_(weight[k])
                layer.bias.copy_(bias[k])
            layers.append(layer)
            if i < last:
                layers.append(ACTIVATION_MODULES[self.activation_name]())
                if self.dropout:
                    layers.append(nn.Dropout(self.dropout))
        return nn.Sequential(*layers).eval()

    def _drop(self, h: Tensor) -> Tensor:
        keep = 1.0 - self.dropout
        masks = torch.stack(
            [torch.rand(h.shape[1:], generator=g) < keep for g in self._dropout_gens]
        ).to(h.device)
        return h * masks / keep


def _linear(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Batched affine map: ``h [K,B,in] or [B,in]`` times ``weight [K,out,in]`` plus ``bias``.
    A batch shared by all members is a view repeated K times, not a copy (one fused
    ``baddbmm`` either way: a broadcast ``matmul`` and an added bias took 60% longer)."""
    if h.dim() == 2:
        h = h.expand(weight.shape[0], -1, -1)
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
