"""What the auditor rebuilds: the released models and each participant's records.

The built-in datasets are partitioned deterministically from the config
(:func:`securepool.data.partition`), so the auditor knows every participant's training
records (members) and local test split (non-members); the coordinator's holdout is
not used as a non-member set, since it drives convergence and acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from securepool.audit.inputs import AuditInputs
from securepool.data import FederatedData, partition
from securepool.models import Architecture, build_model, layout_of, load_flat


@dataclass(frozen=True)
class AuditData:
    data: FederatedData
    x_members: torch.Tensor
    y_members: torch.Tensor
    x_non_members: torch.Tensor
    y_non_members: torch.Tensor


def auditor_data(run: AuditInputs) -> AuditData:
    data = partition(run.config.data, seed=run.config.run.seed)
    parts = [data.participants[p] for p in sorted(data.participants)]
    return AuditData(
        data,
        torch.cat([p.x_train for p in parts]),
        torch.cat([p.y_train for p in parts]),
        torch.cat([p.x_test for p in parts]),
        torch.cat([p.y_test for p in parts]),
    )


def fresh_model(run: AuditInputs, model_id: str, data: FederatedData, *, seed: int) -> nn.Module:
    spec = run.pool_specs()[model_id]
    return build_model(
        Architecture(spec["arch"]),
        n_features=data.n_features,
        n_classes=data.n_classes,
        seed=seed,
        hidden=spec.get("hidden"),  # pool/2: present for an mlp only
        factory=str(spec.get("factory", "")),  # present for a custom model only
    )


def released_model(run: AuditInputs, model_id: str, data: FederatedData) -> nn.Module:
    model = fresh_model(run, model_id, data, seed=0)
    load_flat(model, run.pool[model_id], layout_of(model))
    model.eval()
    return model


def logits(model: nn.Module, x: torch.Tensor) -> NDArray[np.float64]:
    model.eval()
    with torch.no_grad():
        out: NDArray[np.float64] = model(x).double().numpy()
    return out


def losses(z: NDArray[np.float64], y: NDArray[np.int64]) -> NDArray[np.float64]:
    """Per-record cross-entropy of label ``y`` under logits ``z``."""
    zmax = z.max(axis=1, keepdims=True)
    lse = (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))[:, 0]
    out: NDArray[np.float64] = lse - z[np.arange(len(y)), y]
    return out


def logit_confidence(z: NDArray[np.float64], y: NDArray[np.int64]) -> NDArray[np.float64]:
    """LiRA's statistic log(p_y / (1 - p_y)), computed stably from logits."""
    zy = z[np.arange(len(y)), y]
    rest = z.copy()
    rest[np.arange(len(y)), y] = -np.inf
    rmax = rest.max(axis=1, keepdims=True)
    lse_rest = (rmax + np.log(np.exp(rest - rmax).sum(axis=1, keepdims=True)))[:, 0]
    out: NDArray[np.float64] = zy - lse_rest
    return out
