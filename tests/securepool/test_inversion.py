"""Gradient inversion, performed from the coordinator's side: it is handed the bytes
participant nodes really upload in plaintext mode (recorded at its Driver in one real
iteration), decodes them as the coordinator does, and reconstructs the records.

Each of three nodes holds one training record, trains one SGD step on it (batch 1,
learning rate 0.1, no momentum), and uploads the update."""

from __future__ import annotations

import dataclasses
import html
import json
import tomllib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from crypto.signing import IdentityKey
from protocols.plaintext import decode_plain_update
from securepool.audit.inversion import (
    closed_form,
    dlg,
    infer_label,
    inversion_audit,
    node_trainer,
    real_update,
    score,
)
from securepool.config import DataSection, RunConfig, parse_config
from securepool.coordinator.loop import PoolCoordinator
from securepool.data import FederatedData, partition
from securepool.models import Architecture, build_model, layout_of, load_flat
from securepool.node.app import ParticipantNode, training_seed
from securepool.node.wire import Reply
from securepool.runtime.inprocess import InProcessDriver
from securepool.runtime.recording import TranscriptRecorder

ONE_STEP = """
[run]
seed = 5
[data]
participants = 3
[[pool.models]]
id = "m"
arch = "{arch}"
seed = 2
{hidden}
[assignment]
min_group_size = 3
max_models = 1
beacon = "seeded-insecure"
[training]
epochs = 1
batch_size = 1
lr = 0.1
[evaluation]
mode = "federated"
[convergence]
max_iterations = 1
[aggregation]
mode = "plaintext"
"""


@dataclass
class Uploads:
    """What one plaintext iteration put on the coordinator's wire."""

    data: FederatedData  # the split the nodes' single records come from
    model: torch.nn.Module  # the global model the nodes were sent (the coordinator has it)
    seen: dict[str, np.ndarray]  # each node's update, decoded from the recorded bytes


def one_step_uploads(arch: Architecture) -> Uploads:
    """Three participant nodes with one training record each, one real plaintext
    iteration, and the updates read off the coordinator's recorded view."""
    hidden = "hidden = 32" if arch is Architecture.MLP else ""
    cfg = parse_config(tomllib.loads(ONE_STEP.format(arch=arch.value, hidden=hidden)))
    data = partition(DataSection(participants=3), seed=5)
    keys = {pid: IdentityKey.generate() for pid in data.participants}
    registry = {pid: k.public_bytes() for pid, k in keys.items()}
    nodes = {
        pid: ParticipantNode(
            pid,
            cfg=cfg,
            data=dataclasses.replace(d, x_train=d.x_train[:1], y_train=d.y_train[:1]),
            identity=keys[pid],
            registry=registry,
            n_features=data.n_features,
            n_classes=data.n_classes,
        )
        for pid, d in data.participants.items()
    }
    coordinator = PoolCoordinator(
        cfg,
        driver_factory=lambda: InProcessDriver(nodes),
        registry=registry,
        n_features=data.n_features,
        n_classes=data.n_classes,
    )
    recorder = TranscriptRecorder(keep_payloads=True)
    coordinator.wrap_driver = recorder.wrap
    spec = cfg.pool.models[0]
    model = build_model(spec.arch, n_features=64, n_classes=10, seed=spec.seed, hidden=spec.hidden)
    load_flat(model, coordinator.state.globals["m"], layout_of(model))
    coordinator.run()
    seen = {}
    for e in recorder.entries["coordinator"]:
        if e["direction"] == "received" and e["kind"] == "train:reply":
            body = Reply.from_bytes(bytes.fromhex(e["payload_hex"])).body
            seen[e["peer"]], _weight = decode_plain_update(body)
    assert sorted(seen) == ["p00", "p01", "p02"]
    return Uploads(data, model, seen)


def test_closed_form_recovers_a_one_record_logreg_update_exactly() -> None:
    up = one_step_uploads(Architecture.LOGREG)
    x = up.data.participants["p01"].x_train[0].numpy()
    candidates = closed_form(up.seen["p01"], up.model)
    assert len(candidates) == 10  # every class row has a non-zero bias update
    np.testing.assert_allclose(candidates, np.broadcast_to(x, candidates.shape), atol=1e-5)
    # and the nearest record of the whole dataset is the true one
    dataset = np.concatenate([d.x_train.numpy() for d in up.data.participants.values()])
    truth_idx = np.array([len(up.data.participants["p00"].x_train)])  # p01's first record
    result = score(candidates[:1], x[None], dataset, truth_idx, side=8)
    assert result["identified"] == 1 and result["mse"] < 1e-10 and result["ssim"] > 0.999


def test_dlg_identifies_the_record_of_a_one_step_mlp_update() -> None:
    up = one_step_uploads(Architecture.MLP)
    local = up.data.participants["p02"]
    x, y = local.x_train[0].numpy(), int(local.y_train[0])
    seen = up.seen["p02"]
    label = infer_label(seen, 10)
    assert label == y  # iDLG: read off the last bias update
    recon = dlg(
        up.model,
        seen,
        torch.tensor([label]),
        n_features=64,
        image_side=8,
        iterations=150,
        restarts=1,
        seed=0,
    ).numpy()
    dataset = np.concatenate(
        [
            np.concatenate([d.x_train.numpy(), d.x_test.numpy()])
            for d in up.data.participants.values()
        ]
    )
    p02_first = sum(
        len(d.x_train) + len(d.x_test) for p, d in up.data.participants.items() if p < "p02"
    )
    np.testing.assert_array_equal(dataset[p02_first], x)
    result = score(recon, x[None], dataset, np.array([p02_first]), side=8)
    assert result["identified"] == 1
    assert result["ssim"] > 0.8
    # a random image in [0, 1] is far worse: the optimisation, not the prior, found it
    rand = np.random.default_rng(0).random((1, 64)).astype(np.float32)
    assert score(rand, x[None], dataset, np.array([p02_first]), side=8)["identified"] == 0


def test_quick_audit_reports_every_view_and_is_json() -> None:
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
    # the verdicts come from the stated test: the exact closed form is a significant leak
    assert report["alpha"] == 0.05 and "binomial" in report["test"] and "Holm" in report["test"]
    assert one["p_value"] < 0.01 and one["significant"] and one["verdict"] == "leaks its records"
    for c, line in zip(report["cases"], report["findings"], strict=True):
        assert 0 <= c["chance_rate"] <= 1 and 0.0 <= c["p_value"] <= 1.0
        assert c["expected_by_chance"] == pytest.approx(c["chance_rate"] * c["true_records"])
        assert f"{c['verdict']})" in line


def _node_config(dp: bool) -> RunConfig:
    table: dict[str, object] = {
        "data": {"participants": 3},
        "pool": {"models": [{"id": "lin", "arch": "logreg", "seed": 1}]},
        "training": {"epochs": 1, "batch_size": 16, "lr": 0.5, "momentum": 0.5},
        "convergence": {"max_iterations": 2},
    }
    if dp:
        table["privacy"] = {"enabled": True, "noise_multiplier": 1.0, "secure_rng": False}
    return parse_config(table)


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp-sgd"])
def test_the_audits_real_update_is_the_one_a_participant_node_computes(dp: bool) -> None:
    """The "local training" views train as the nodes do: the same update, to the bit
    (DP-SGD with its noise replayable from the seed, ``secure_rng = false``)."""
    cfg = _node_config(dp)
    data = partition(cfg.data, seed=cfg.run.seed)
    pid, iteration, members = "p01", 2, ("p00", "p01", "p02")
    d = data.participants[pid]
    key = IdentityKey.generate()
    node = ParticipantNode(
        pid,
        cfg=cfg,
        data=d,
        identity=key,
        registry={pid: key.public_bytes()},
        n_features=data.n_features,
        n_classes=data.n_classes,
    )
    spec = cfg.pool.models[0]
    model = build_model(spec.arch, n_features=64, n_classes=10, seed=spec.seed)
    start = np.random.default_rng(0).normal(0, 0.1, layout_of(model).size).astype(np.float32)
    theirs, _weight, _meta = node._local_update(spec.id, start, iteration, members)
    ours = real_update(
        model,
        start,
        node_trainer(cfg, data),
        pid=pid,
        x=d.x_train,
        y=d.y_train,
        settings=cfg.training.settings(),
        seed=training_seed(cfg.run.seed, iteration, members.index(pid)),
    )
    assert theirs is not None and ours is not None
    np.testing.assert_array_equal(ours, theirs)
    if dp:  # and it is DP-SGD's: not the plain update
        plain = real_update(
            model,
            start,
            node_trainer(_node_config(False), data),
            pid=pid,
            x=d.x_train,
            y=d.y_train,
            settings=cfg.training.settings(),
            seed=training_seed(cfg.run.seed, iteration, members.index(pid)),
        )
        assert plain is not None and not np.allclose(plain, ours)


def _logreg_config(dataset: str) -> RunConfig:
    return parse_config(
        {
            "data": {"participants": 6, "dataset": dataset},
            "pool": {"models": [{"id": "lin", "arch": "logreg", "seed": 1}]},
            "training": {"epochs": 1, "batch_size": 16, "lr": 0.5},
        }
    )


def test_report_shows_inversion_as_a_table_and_the_records_beside_their_reconstructions() -> None:
    """report.html's inversion section: one table row per case with the test's p-value
    and verdict, one picture per case of the true records beside what the attack
    rebuilt (the first case's true records are the participants' own first records),
    and no raw JSON dump."""
    from securepool.audit import report as rep

    cfg = _logreg_config("digits")
    data = partition(cfg.data, seed=cfg.run.seed)
    inv = json.loads(json.dumps(inversion_audit(config=cfg, data=data, quick=True)))
    first = inv["cases"][0]["examples"]
    assert first["image_side"] == 8 and len(first["true"]) == 2  # one record per trial
    pids = sorted(data.participants)
    for t, rec in enumerate(first["true"]):
        want = data.participants[pids[t]].x_train[t].numpy()
        np.testing.assert_allclose(rec, want, atol=6e-4)  # rounded to 3 decimals
    np.testing.assert_allclose(first["rebuilt"], first["true"], atol=2e-3)  # exact inversion
    assert first["identified"] == [True, True]
    doc = rep._Doc()
    rep._inversion(doc, inv)
    page = "".join(doc.html)
    assert "<pre>" not in page and '"cases"' not in page
    cases_table = page.split("<table>")[1]
    assert "<th>p-value</th>" in cases_table and "<th>verdict</th>" in cases_table
    assert cases_table.count("<tr>") == 1 + len(inv["cases"])
    for c in inv["cases"]:
        assert html.escape(c["verdict"]) in page
    pics = [k for k in doc.pngs if k.startswith("inversion_")]
    assert len(pics) == len(inv["cases"])
    assert all(doc.pngs[k].startswith(b"\x89PNG") for k in pics)
    # breast cancer (not images): the table, no pictures
    bc = _logreg_config("breast_cancer")
    inv_bc = inversion_audit(config=bc, data=partition(bc.data, seed=bc.run.seed), quick=True)
    assert all("examples" not in c for c in inv_bc["cases"])
    doc = rep._Doc()
    rep._inversion(doc, inv_bc)
    assert not doc.pngs and "<th>p-value</th>" in "".join(doc.html)
