"""session_digest binds everything a member was sent: change any input, the digest moves.
(The advert check that uses it is attacked in tests/protocols/test_secagg_active.py and,
through real nodes, in tests/securepool/test_split_inprocess.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np

from securepool.consistency import session_digest
from securepool.models import Architecture, build_model, flatten, layout_of
from securepool.training import TrainSettings


def test_every_input_is_bound() -> None:
    model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
    other = build_model(Architecture.MLP, n_features=64, n_classes=10, seed=0)
    base = {
        "session": "it0001/lr",
        "model_id": "lr",
        "group_seed": bytes(32),
        "layout": layout_of(model),
        "training": TrainSettings(),
        "params": flatten(model),
    }
    ref = session_digest(**base)  # type: ignore[arg-type]
    assert session_digest(**base) == ref  # type: ignore[arg-type]
    changes = {
        "session": "it0002/lr",
        "model_id": "lr2",
        "group_seed": bytes(31) + b"\x01",
        "layout": layout_of(other),
        "training": dataclasses.replace(TrainSettings(), lr=0.2),
        "params": (flatten(model) + np.float32(1e-7)).astype(np.float32),
    }
    for key, value in changes.items():
        assert session_digest(**{**base, key: value}) != ref, key  # type: ignore[arg-type]
