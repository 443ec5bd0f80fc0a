"""Input pruning: the coordinator's cut of the inputs clean data does not use.

After Fine-Pruning (Liu, Dolan-Gavitt and Garg, RAID 2018), which prunes the units that
stay dormant on clean data, applied to the units a backdoor trigger on a few pixels
needs most: the model's input features. A participant that trains on records carrying
a trigger on pixels honest data (almost) never sets (issue 22, item 5) teaches the
first linear layer large weights on those pixels' columns; honest training barely
touches them (a weight's gradient is proportional to its input), so averaging keeps
them, and the coordinator cannot see whose they are.

After each group's aggregate is added (and tuned, when clean tuning is on too), the
coordinator scales the weight column of every input feature ``j`` of the model's first
linear layer by ``min(1, use_j / (threshold x max_k use_k))``, ``use_j`` the feature's
mean absolute value on its clean split: a feature the clean split never uses is cut
(its column zeroed, as Fine-Pruning prunes a dormant unit), one it uses rarely is
scaled down in proportion, and one used at least ``threshold`` x as much as the
most-used feature is kept as it is. On records that do not use a feature its column
changes nothing, so clean predictions move only through the rarely used features; a
trigger's pixels set to full intensity where clean data has (almost) none lose
(almost) all of their pull, every iteration anew. What each iteration's aggregate
re-adds to a cut column is cut again before the model is tested or released.

It acts on the aggregated model alone, in every aggregation mode and runtime alike; it
learns nothing about any participant. It does not defend a trigger on features honest
data does use (the cut would cost the task itself), nor models whose first layer is not
linear on the inputs (the cnn's convolution shares each weight across pixels: there is
no per-pixel weight to cut).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

#: layers that pass the inputs through unchanged before a Sequential's first linear layer
_PASS_THROUGH = (nn.Flatten, nn.Identity)


def input_use(x: torch.Tensor) -> NDArray[np.float64]:
    """Each input feature's mean absolute value over the rows of ``x`` (the clean split)."""
    return np.asarray(x.detach().abs().double().mean(dim=0).numpy(), dtype=np.float64)


def column_scale(use: NDArray[np.float64], threshold: float) -> NDArray[np.float64]:
    """The factor each input feature's weight column is multiplied by:
    ``min(1, use / (threshold x max(use)))``; all ones when no feature is used at all (a
    clean split of zeros tells nothing about which inputs matter)."""
    top = float(use.max(initial=0.0))
    if not top > 0:
        return np.ones_like(use)
    return np.asarray(np.minimum(1.0, use / (threshold * top)), dtype=np.float64)


def first_linear(model: nn.Module, n_features: int) -> nn.Linear | None:
    """The linear layer that reads the raw inputs: a Sequential's first child that is
    not a pass-through (Flatten, Identity), if it is an ``nn.Linear`` on ``n_features``
    inputs; None for any other model (a convolution first, a custom module)."""
    if not isinstance(model, nn.Sequential):
        return None
    for child in model:
        if isinstance(child, _PASS_THROUGH):
            continue
        if isinstance(child, nn.Linear) and child.in_features == n_features:
            return child
        return None
    return None


def prune_inputs(model: nn.Module, scale: NDArray[np.float64]) -> bool:
    """Multiply the weight column of each input feature of ``model``'s first linear
    layer by ``scale`` (one factor per feature), in place; False (model unchanged) when
    the model has no such layer (:func:`first_linear`)."""
    layer = first_linear(model, int(scale.shape[0]))
    if layer is None:
        return False
    with torch.no_grad():
        layer.weight.mul_(torch.from_numpy(scale.astype(np.float32)))
    return True


__all__ = ["column_scale", "first_linear", "input_use", "prune_inputs"]
