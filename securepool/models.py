"""The base models of the pool (P1) and the flat-vector view protocols/ works on.

Every architecture here is Opacus-compatible (no BatchNorm: GroupNorm instead), so the
same pool trains with or without differential privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from securepool.architecture import Architecture


def build_model(
    arch: Architecture, *, n_features: int, n_classes: int, seed: int, hidden: int | None = None
) -> nn.Module:
    """A freshly initialised model; the same (arch, shape, seed) gives the same weights.

    ``hidden`` is the mlp's width (None: 64); the other architectures have none.
    """
    torch.manual_seed(seed)
    hidden = 64 if hidden is None else hidden
    if arch is Architecture.LOGREG:
        return nn.Sequential(nn.Linear(n_features, n_classes))
    if arch is Architecture.MLP:
        return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    side = int(round(n_features**0.5))
    if side * side != n_features:
        raise ValueError(f"cnn needs square images; {n_features} features is not a square")
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.GroupNorm(4, 32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4, n_classes),
    )


@dataclass(frozen=True)
class Layout:
    """Names and shapes of a model's parameters, to rebuild tensors from a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))


def layout_of(model: nn.Module) -> Layout:
    names, shapes = zip(*[(n, tuple(p.shape)) for n, p in model.named_parameters()], strict=True)
    return Layout(tuple(names), tuple(shapes))


def flatten(model: nn.Module) -> NDArray[np.float32]:
    with torch.no_grad():
        return (
            torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            .numpy()
            .astype(np.float32)
        )


def load_flat(model: nn.Module, vector: NDArray[np.floating], layout: Layout) -> None:
    if vector.shape != (layout.size,):
        raise ValueError(f"vector has shape {vector.shape}, layout needs ({layout.size},)")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            k = p.numel()
            p.copy_(
                torch.from_numpy(np.asarray(vector[offset : offset + k], dtype=np.float32)).reshape(
                    p.shape
                )
            )
            offset += k


__all__ = ["Architecture", "Layout", "build_model", "flatten", "layout_of", "load_flat"]
