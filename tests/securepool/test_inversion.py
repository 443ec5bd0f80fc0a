"""Gradient inversion, performed from the coordinator's side: it is handed the bytes a
participant really uploads in plaintext mode, decodes them as the coordinator does, and
reconstructs the record from them."""

from __future__ import annotations

import numpy as np
import torch

from protocols.aggregation import ClientInput, Router
from protocols.plaintext import PlaintextAggregator
from protocols.transcript import Transcript
from securepool.audit.inversion import closed_form, dlg, infer_label, score
from securepool.config import DataSection
from securepool.data import partition
from securepool.models import Architecture, build_model, flatten, layout_of
from securepool.participant import Participant
from securepool.training import TrainSettings


def _seen_by_coordinator(updates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the real plaintext aggregator and read the uploads off the coordinator's view."""
    from protocols.plaintext import decode_plain_update

    router = Router({"coordinator": Transcript("coordinator")})
    agg = PlaintextAggregator(min_contributors=1, router=router)
    agg.aggregate(
        session="it0001/m",
        inputs={p: ClientInput(update=u, weight=1.0) for p, u in updates.items()},
    )
    seen = {}
    for e in router.transcripts["coordinator"].received():
        vec, _ = decode_plain_update(e.payload)
        seen[e.peer] = vec
    return seen


def _one_record_update(arch: Architecture, pid: str, lr: float = 0.1) -> tuple:
    data = partition(DataSection(participants=3), seed=5)
    local = data.participants[pid]
    one = type(local)(local.x_train[:1], local.y_train[:1], local.x_test, local.y_test)
    model = build_model(arch, n_features=64, n_classes=10, seed=2, hidden=32)
    start = flatten(model)
    from securepool.training import PlainTrainer

    out = Participant(pid, one).train(
        model=model,
        global_params=start,
        layout=layout_of(model),
        trainer=PlainTrainer(),
        settings=TrainSettings(epochs=1, batch_size=1, lr=lr),
        seed=0,
    )
    return data, model, start, out.update, one.x_train[0].numpy(), int(one.y_train[0])


def test_closed_form_recovers_a_one_record_logreg_update_exactly() -> None:
    data, model, _, update, x, _ = _one_record_update(Architecture.LOGREG, "p01")
    seen = _seen_by_coordinator({"p01": update})["p01"]
    candidates = closed_form(seen, model)
    assert len(candidates) == 10  # every class row has a non-zero bias update
    np.testing.assert_allclose(candidates, np.broadcast_to(x, candidates.shape), atol=1e-5)
    # and the nearest record of the whole dataset is the true one
    dataset = np.concatenate([d.x_train.numpy() for d in data.participants.values()])
    truth_idx = np.array([len(data.participants["p00"].x_train)])  # p01's first record
    result = score(candidates[:1], x[None], dataset, truth_idx, side=8)
    assert result["identified"] == 1 and result["mse"] < 1e-10 and result["ssim"] > 0.999


def test_dlg_identifies_the_record_of_a_one_step_mlp_update() -> None:
    data, model, start, update, x, y = _one_record_update(Architecture.MLP, "p02")
    seen = _seen_by_coordinator({"p02": update})["p02"]
    from securepool.models import load_flat

    load_flat(model, start, layout_of(model))  # the coordinator holds the global model
    label = infer_label(seen, 10)
    assert label == y  # iDLG: read off the last bias update
    recon = dlg(
        model,
        seen,
        torch.tensor([label]),
        n_features=64,
        image_side=8,
        iterations=150,
        restarts=1,
        seed=0,
    ).numpy()
    dataset = np.concatenate(
        [np.concatenate([d.x_train.numpy(), d.x_test.numpy()]) for d in data.participants.values()]
    )
    p02_first = sum(
        len(d.x_train) + len(d.x_test) for p, d in data.participants.items() if p < "p02"
    )
    np.testing.assert_array_equal(dataset[p02_first], x)
    result = score(recon, x[None], dataset, np.array([p02_first]), side=8)
    assert result["identified"] == 1
    assert result["ssim"] > 0.8
    # a random image in [0, 1] is far worse: the optimisation, not the prior, found it
    rand = np.random.default_rng(0).random((1, 64)).astype(np.float32)
    assert score(rand, x[None], dataset, np.array([p02_first]), side=8)["identified"] == 0


def test_quick_audit_reports_every_view_and_is_json() -> None:
    import json

    from securepool.audit.inversion import inversion_audit
    from securepool.config import parse_config

    cfg = parse_config(
        {
            "data": {"participants": 6},
            "pool": {"models": [{"id": "lin", "arch": "logreg", "seed": 1}]},
            "training": {"epochs": 1, "batch_size": 16, "lr": 0.5},
        }
    )
    data = partition(cfg.data, seed=cfg.run.seed)
    report = json.loads(json.dumps(inversion_audit(config=cfg, data=data, quick=True)))
    views = [(c["view"], c["training"].split(":")[0]) for c in report["cases"]]
    assert views == [
        ("one participant's update", "one SGD step on one record each"),
        ("aggregate of 3 participants", "one SGD step on one record each"),
        ("one participant's update", "local training"),
        ("aggregate of 3 participants", "local training"),
    ]
    one, three = report["cases"][:2]
    assert one["identified"] == one["true_records"] == 2  # 2 trials, exact closed form
    assert one["mse"] < 1e-10 and one["labels_inferred_correctly"] == 2
    assert three["true_records"] == 6
    assert len(report["findings"]) == 4 and "records identified" in report["findings"][0]
