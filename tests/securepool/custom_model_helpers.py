"""Factories for ``arch = "custom"`` tests: importable as ``custom_model_helpers:NAME``
(pytest puts this directory on the path), one good module and one per way to be wrong."""

from __future__ import annotations

from torch import nn

#: the good factory's hidden width (a test changes it to change the layout)
WIDTH = 8


class SmallNet(nn.Module):
    """A user's own module: a residual-free two-layer net with LayerNorm (no buffers)."""

    def __init__(self, n_features: int, n_classes: int, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(n_features, width)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.out(nn.functional.gelu(self.norm(self.inp(x))))


def small_net(n_features: int, n_classes: int) -> nn.Module:
    return SmallNet(n_features, n_classes, WIDTH)


def raises(n_features: int, n_classes: int) -> nn.Module:
    raise RuntimeError("the user's factory broke")


def not_a_module(n_features: int, n_classes: int) -> object:
    return [n_features, n_classes]


def wrong_shape(n_features: int, n_classes: int) -> nn.Module:
    return nn.Linear(n_features, n_classes + 1)


def wrong_input(n_features: int, n_classes: int) -> nn.Module:
    return nn.Linear(n_features + 1, n_classes)


def with_batchnorm(n_features: int, n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, 4), nn.BatchNorm1d(4), nn.Linear(4, n_classes))


def float64(n_features: int, n_classes: int) -> nn.Module:
    return nn.Linear(n_features, n_classes).double()


def no_parameters(n_features: int, n_classes: int) -> nn.Module:
    return nn.Identity()


NOT_CALLABLE = 3
