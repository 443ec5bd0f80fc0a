"""The base-model architectures a pool can hold (torch-free, so configs load fast)."""

from __future__ import annotations

from enum import Enum


class Architecture(str, Enum):
    LOGREG = "logreg"
    MLP = "mlp"
    CNN = "cnn"
