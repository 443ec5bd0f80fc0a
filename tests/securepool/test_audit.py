"""`securepool audit`: whole runs audited through the CLI, and every bad run directory.

Two small runs are made once per module: a mask-mode run with transcripts and
canaries, and a plaintext run trained to overfit (the attacks must find it). Bad input
is made by editing copies of the mask run the way an attacker or a crash would; where
the edit is one ``run.json`` would catch, it is also made the way someone who knows the
code would, recomputing both manifests, so the audit's own checks are exercised.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from protocols.secagg.messages import MaskedInput, decode_message, encode_message
from securepool.audit.inputs import load_run
from securepool.audit.transcripts import MASKED_INPUT_KIND, transcript_audit, uniformity_test
from securepool.cli import main
from securepool.node.wire import Reply
from securepool.rundir import RunDirError
from securepool.runner import start_job

MASK_RUN = """
[run]
seed = 5
record_transcripts = true
[data]
participants = 6
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[[pool.models]]
id = "mlp"
arch = "mlp"
seed = 2
hidden = 32
[training]
epochs = 2
lr = 0.1
momentum = 0.9
[convergence]
error_range = [0.0, 0.01]
max_iterations = 3
[acceptance]
max_error_bound = 1.0
[aggregation]
mode = "mask"
[audit]
canaries = 30
"""

# three participants with few records, one wide MLP trained for many epochs: it memorises
OVERFIT_RUN = """
[run]
seed = 11
[data]
participants = 3
holdout_fraction = 0.9  # 30 training records per participant: easy to memorise
local_test_fraction = 0.5
[[pool.models]]
id = "mlp"
arch = "mlp"
seed = 3
hidden = 256
[assignment]
max_models = 1
[training]
epochs = 40
batch_size = 16
lr = 0.1
momentum = 0.9
[convergence]
error_range = [0.0, 0.0001]
max_iterations = 3
[acceptance]
max_error_bound = 1.0
[aggregation]
mode = "plaintext"
[audit]
canaries = 100
"""


def _make_run(tmp: Path, name: str, text: str) -> Path:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(text)
    out = tmp / name
    start_job(cfg, out)
    return out


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_run(tmp_path_factory.mktemp("mask"), "run", MASK_RUN)


@pytest.fixture(scope="module")
def mask_audit(mask_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("mask-report") / "report"
    args = ["audit", str(mask_run), "--out", str(out), "--quick", "--quiet", "--workers", "2"]
    assert main(args) == 0
    audit: dict[str, Any] = json.loads((out / "audit.json").read_text())
    audit["_out"] = str(out)
    return audit


@pytest.fixture(scope="module")
def overfit_audit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("overfit")
    run = _make_run(tmp, "run", OVERFIT_RUN)
    out = tmp / "report"
    assert main(["audit", str(run), "--out", str(out), "--quick", "--quiet", "--workers", "1"]) == 0
    result: dict[str, Any] = json.loads((out / "audit.json").read_text())
    return result


# --- the report -------------------------------------------------------------------------


def test_audit_writes_json_html_with_embedded_plots_and_markdown(
    mask_audit: dict[str, Any],
) -> None:
    out = Path(mask_audit["_out"])
    assert sorted(p.name for p in out.iterdir()) == [
        "audit.json",
        "plots",
        "report.html",
        "report.md",
    ]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2  # ROC and group sizes at least
    assert "<link" not in page and 'src="http' not in page  # self-contained
    assert "Membership inference" in (out / "report.md").read_text()
    assert mask_audit["format"] == "securepool-audit/1"
    assert set(mask_audit["pool"]) == {"lr", "mlp"}
    # no leftover temporary directory beside the report
    assert [p.name for p in out.parent.iterdir()] == ["report"]


def test_shadow_models_in_worker_processes_give_the_same_audit(
    mask_run: Path, mask_audit: dict[str, Any]
) -> None:
    from securepool.audit.command import audit_run

    serial = audit_run(mask_run, quick=True, workers=1)
    assert serial["membership"] == mask_audit["membership"]  # the fixture used 2 workers


def test_dp_off_is_a_warning_block(mask_audit: dict[str, Any]) -> None:
    dp = mask_audit["dp"]
    assert dp["enabled"] is False and dp["noise_source"] == "none (DP off)"
    assert any("DP was OFF" in w for w in dp["warnings"])
    page = (Path(mask_audit["_out"]) / "report.html").read_text()
    assert '<div class="warn"><b>Warning:</b> DP was OFF' in page


def test_members_are_training_records_and_non_members_local_test_splits(
    mask_run: Path, mask_audit: dict[str, Any]
) -> None:
    from securepool.data import partition

    cfg = load_run(mask_run).config
    data = partition(cfg.data, seed=cfg.run.seed)
    mem = mask_audit["membership"]
    assert mem["members"] == sum(d.n_train for d in data.participants.values())
    assert mem["non_members"] == sum(int(d.y_test.shape[0]) for d in data.participants.values())
    # a few hundred non-members: 0.1% FPR cannot be resolved, and the audit says so
    rows = mem["models"]["lr"]["lira"]["at_fpr"]
    tiny = next(r for r in rows if r["target_fpr"] == 0.001)
    assert tiny["resolvable"] is False and tiny["epsilon_lower_bound"] is None
    assert any("cannot resolve an FPR of 0.001" in n for n in mem["notes"])


def test_group_sizes_and_transcript_checks(mask_audit: dict[str, Any]) -> None:
    tr = mask_audit["transcripts"]
    assert tr["recorded"] is True
    assert tr["smallest_aggregate"] >= 3
    assert all(r["below_min_group_size"] == [] for r in tr["group_sizes"])
    # recorded at the coordinator's Driver: the coordinator and every node it talked to
    # (no auditor node: neither HE nor the trust check)
    assert set(tr["roles"]) == {"coordinator", *(f"p{i:02d}" for i in range(6))}
    assert tr["roles"]["coordinator"]["received_kinds"][MASKED_INPUT_KIND] > 0
    mc = tr["mask_checks"]
    assert mc["passed"] is True and mc["repeated_masked_inputs"] == 0
    assert mc["uniformity"] is None and "digests only" in mc["cannot_test"]


# --- the attacks find a leaky model ------------------------------------------------------


def test_membership_attacks_find_an_overfit_model(overfit_audit: dict[str, Any]) -> None:
    """Both attacks rank members above non-members; LiRA, the stronger, separates them at
    10% FPR beyond both intervals (with 90 non-members the loss threshold's TPR there is
    within noise of the FPR, with or without canaries), and the corrected headline is
    positive."""
    mem = overfit_audit["membership"]
    entry = mem["models"]["mlp"]
    for attack in ("loss_threshold", "lira"):
        assert entry[attack]["auc"] > 0.6, attack
    ten = next(r for r in entry["lira"]["at_fpr"] if r["target_fpr"] == 0.1)
    assert ten["resolvable"] and ten["tpr_ci95"][0] > ten["fpr_ci95"][1]
    assert ten["epsilon_lower_bound"] > 0
    # one model, two attacks, one resolvable FPR (90 non-members): a family of 2
    hl = mem["headline"]
    assert hl["family_size"] == 2 and hl["correction"] == "bonferroni"
    assert hl["per_bound_confidence"] == pytest.approx(0.975)
    assert 0 < hl["epsilon_lower_bound"] == ten["epsilon_lower_bound_corrected"]
    assert ten["epsilon_lower_bound_corrected"] < ten["epsilon_lower_bound"]  # 97.5% < 95%
    ev = overfit_audit["empirical_vs_accountant"]
    assert ev["membership_epsilon_lower_bound"] == hl["epsilon_lower_bound"]
    # no DP: nothing to refute, and the report says what the design could certify
    assert hl["verdict"] == "no claim" and ev["power"]["membership"]["verdict"] == "no claim"
    assert hl["epsilon_lower_bound"] <= hl["power"] < 3


def test_canaries_certify_a_positive_lower_bound_on_the_overfit_run(
    overfit_audit: dict[str, Any],
) -> None:
    can = overfit_audit["canaries"]
    assert can["enabled"] and can["canaries"] == 100
    assert 30 <= can["included"] <= 70  # each included with probability 1/2
    assert 0 < can["epsilon_lower_bound"] <= can["best_possible_with_m"] == can["power"]
    assert can["verdict"] == "no claim" and "cannot certify epsilon above 3.11" in can["statement"]


def test_canaries_are_inserted_where_the_run_prepares_its_data(mask_run: Path) -> None:
    """In the nodes' own records: the in-process nodes the run builds, and the demo
    nodes of the split runtimes (their built-in partition), hold the same canaries."""
    from securepool.audit.canaries import make_canaries
    from securepool.data import partition
    from securepool.node.records import builtin_partition
    from securepool.runner import prepare

    text = (mask_run / "config.toml").read_text()
    cfg, _coordinator, nodes = prepare(text, mask_run / "config.toml")
    assert nodes is not None
    clean = partition(cfg.data, seed=cfg.run.seed)
    c = make_canaries(clean, 30, seed=cfg.run.seed)
    for pid in clean.participants:
        d = nodes.apps[pid]._data  # type: ignore[attr-defined]
        mine = int(sum(1 for h, inc in zip(c.host, c.included, strict=True) if h == pid and inc))
        assert d.n_train == clean.participants[pid].n_train + mine
        assert d.x_test.shape == clean.participants[pid].x_test.shape  # test splits untouched
        demo = builtin_partition(cfg, pid=pid)
        assert torch.equal(demo.x_train, d.x_train) and torch.equal(demo.y_train, d.y_train)
    # their own pool: inputs in [0, 1] that are no record of the dataset, holdout included
    every = torch.cat(
        [clean.x_holdout, *(torch.cat([d.x_train, d.x_test]) for d in clean.participants.values())]
    )
    assert float(c.x.min()) >= 0.0 and float(c.x.max()) <= 1.0
    assert not bool((torch.cdist(c.x, every).min(dim=1).values < 1e-3).any())
    assert set(c.y.tolist()) <= set(range(clean.n_classes))
    # so their number is not capped by the holdout's size (the run's own holdout is intact)
    assert len(make_canaries(clean, 2000, seed=cfg.run.seed).y) > clean.y_holdout.shape[0]
    assert torch.equal(nodes.holdout[0], clean.x_holdout)
    assert torch.equal(nodes.holdout[1], clean.y_holdout)


def test_canaries_config_is_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(MASK_RUN.replace("canaries = 30", "canaries = -1"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert not (tmp_path / "x").exists()


# --- bad input: exit 2, the problem named, nothing written ---------------------------


def _reseal(run: Path) -> None:
    """Recompute pool/manifest.json's digest and run.json over the files as they are now
    (no key protects them: anyone with the code can), so only deeper checks can object."""
    from securepool.rundir import _POOL_DOMAIN, _RUN_DOMAIN, _digest

    pm = json.loads((run / "pool" / "manifest.json").read_text())
    pm["digest"] = _digest(_POOL_DOMAIN, pm)
    (run / "pool" / "manifest.json").write_text(json.dumps(pm))
    rj = json.loads((run / "run.json").read_text())
    for p in sorted((run / "transcripts").glob("*.jsonl")):
        rj["files"].setdefault(f"transcripts/{p.name}", {})
    for rel, entry in rj["files"].items():
        if (run / rel).is_file():
            data = (run / rel).read_bytes()
            entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    rj["digest"] = _digest(_RUN_DOMAIN, rj)
    (run / "run.json").write_text(json.dumps(rj))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _other_version(run: Path) -> None:
    m = json.loads((run / "pool" / "manifest.json").read_text())
    m["format"] = "securepool-pool/9"
    (run / "pool" / "manifest.json").write_text(json.dumps(m))
    _reseal(run)


def _tamper_checkpoint(run: Path) -> None:
    with np.load(run / "checkpoint" / "globals.npz") as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    arrays["lr"][0] += 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (run / "checkpoint" / "globals.npz").write_bytes(buf.getvalue())


def _tamper_pool_consistently(run: Path) -> None:
    """Replace a released model and re-hash both manifests: the checkpoint still differs."""
    w = np.load(run / "pool" / "lr.npy")
    buf = io.BytesIO()
    np.save(buf, (w * 0).astype(np.float32))
    (run / "pool" / "lr.npy").write_bytes(buf.getvalue())
    m = json.loads((run / "pool" / "manifest.json").read_text())
    for entry in m["models"]:
        if entry["id"] == "lr":
            entry["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
            entry["bytes"] = len(buf.getvalue())
    (run / "pool" / "manifest.json").write_text(json.dumps(m))
    _reseal(run)


def _manifest_points_outside(run: Path) -> None:
    """A pool entry naming a file outside pool/, with that file's true hash, re-sealed."""
    outside = run / "config.toml"
    m = json.loads((run / "pool" / "manifest.json").read_text())
    m["models"][0]["file"] = "../config.toml"
    m["models"][0]["sha256"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    m["models"][0]["bytes"] = len(outside.read_bytes())
    (run / "pool" / "manifest.json").write_text(json.dumps(m))
    _reseal(run)


def _summary_not_an_object(run: Path) -> None:
    (run / "summary.json").write_text("[]")
    _reseal(run)


def _tamper_checkpoint_resealed(run: Path) -> None:
    _tamper_checkpoint(run)
    _reseal(run)


def _unfinished(run: Path) -> None:
    """A run stopped before it released anything: no summary, no pool, state running."""
    from securepool.rundir import _RUN_DOMAIN, _digest

    (run / "summary.json").unlink()
    shutil.rmtree(run / "pool")
    shutil.rmtree(run / "transcripts")
    rj = json.loads((run / "run.json").read_text())
    rj["state"] = "running"
    rj["files"] = {
        k: v
        for k, v in rj["files"].items()
        if k != "summary.json" and not k.startswith(("pool/", "transcripts/"))
    }
    rj["digest"] = _digest(_RUN_DOMAIN, rj)
    (run / "run.json").write_text(json.dumps(rj))


def _run_manifest_edited(run: Path) -> None:
    rj = json.loads((run / "run.json").read_text())
    rj["iteration"] -= 1
    (run / "run.json").write_text(json.dumps(rj))


def _transcript_added(run: Path) -> None:
    """A role's "transcript" that the run never wrote, dropped in after it finished."""
    (run / "transcripts" / "extra.jsonl").write_text('{"kind": "plain_update"}\n')


BAD = {
    "manifest names a file outside pool/": (_manifest_points_outside, "plain file name"),
    "summary not an object": (_summary_not_an_object, "summary.json: not a JSON object"),
    "summary edited": (
        lambda r: (r / "summary.json").write_text("{}"),
        "summary.json: does not match run.json",
    ),
    "missing summary": (lambda r: (r / "summary.json").unlink(), "summary.json"),
    "missing checkpoint": (lambda r: shutil.rmtree(r / "checkpoint"), "checkpoint/globals.npz"),
    "other format version": (_other_version, "securepool-pool/9"),
    "run manifest edited": (_run_manifest_edited, "run.json: edited"),
    "run not finished": (_unfinished, "run.json: the run is not finished"),
    "transcript added after the run": (_transcript_added, "transcripts/extra.jsonl"),
    "tampered pool file": (lambda r: _flip_byte(r / "pool" / "lr.npy"), "pool/lr.npy"),
    "tampered config": (
        lambda r: (r / "config.toml").write_text((r / "config.toml").read_text() + "\n#"),
        "config.toml",
    ),
    "tampered checkpoint": (_tamper_checkpoint, "checkpoint/globals.npz"),
    "tampered checkpoint, manifests re-sealed": (
        _tamper_checkpoint_resealed,
        "checkpoint/globals.npz: model 'lr' differs",
    ),
    "pool swapped, manifest re-hashed": (
        _tamper_pool_consistently,
        "checkpoint/globals.npz: model 'lr' differs",
    ),
    "truncated metrics": (
        lambda r: (r / "metrics.jsonl").write_text(
            (r / "metrics.jsonl").read_text().splitlines()[0] + "\n"
        ),
        "metrics.jsonl",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_run_directory_exits_2_names_the_problem_and_writes_nothing(
    case: str, mask_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, named = BAD[case]
    run = tmp_path / "run"
    shutil.copytree(mask_run, run)
    damage(run)
    out = tmp_path / "report"
    assert main(["audit", str(run), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert named in err.replace("\n", "")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp dir left
    with pytest.raises(RunDirError):
        load_run(run)


def test_a_v2_pool_manifest_is_read(mask_run: Path, tmp_path: Path) -> None:
    """Format 2 names each model's file, sha256 and size in its own entry."""
    run = tmp_path / "run"
    shutil.copytree(mask_run, run)
    m = json.loads((run / "pool" / "manifest.json").read_text())
    assert m["format"] == "securepool-pool/2" and "files" not in m
    assert {e["id"]: e["file"] for e in m["models"]} == {"lr": "lr.npy", "mlp": "mlp.npy"}
    loaded = load_run(run)
    assert set(loaded.pool) == {"lr", "mlp"}
    assert loaded.pool_specs()["mlp"]["hidden"] == 32 and "hidden" not in loaded.pool_specs()["lr"]
    _flip_byte(run / "pool" / "mlp.npy")
    with pytest.raises(RunDirError, match=r"pool/mlp.npy"):
        load_run(run)


def test_non_empty_report_directory_is_refused(mask_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["audit", str(mask_run), "--out", str(out), "--quiet"]) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --- mask mode: masked inputs off the real SecAgg+ state machines, then forged ones ---


def _recorded_session() -> list[dict[str, Any]]:
    """The coordinator's view of one real masked iteration (one group of 6 nodes over
    the in-process runtime), recorded at its Driver with the payloads kept."""
    import tomllib

    from securepool.config import parse_config
    from securepool.coordinator.launch import inprocess_coordinator
    from securepool.runtime.recording import TranscriptRecorder

    mlp = '[[pool.models]]\nid = "mlp"\narch = "mlp"\nseed = 2\nhidden = 32\n'
    text = MASK_RUN.replace("max_iterations = 3", "max_iterations = 1").replace(mlp, "")
    cfg = parse_config(tomllib.loads(text.replace("canaries = 30", "canaries = 0")))
    assert [m.id for m in cfg.pool.models] == ["lr"]
    coordinator, nodes = inprocess_coordinator(cfg)
    recorder = TranscriptRecorder(keep_payloads=True)
    coordinator.wrap_driver = recorder.wrap
    try:
        coordinator.connect()
        (group,) = coordinator.step().groups
    finally:
        coordinator.close()
        nodes.close()
    assert group.status == "aggregated" and len(group.contributors) == 6
    return recorder.entries["coordinator"]


def _unmasked(row: dict[str, Any]) -> dict[str, Any]:
    """The same reply with the masks left off: small fixed-point values mod 2^32."""
    reply = Reply.from_bytes(bytes.fromhex(row["payload_hex"]))
    msg = decode_message(reply.body, MaskedInput)
    plain = (np.random.default_rng(2).integers(-300, 300, msg.vector.size) % 2**32).astype(
        np.uint32
    )
    body = encode_message(MaskedInput(msg.session, msg.sender, msg.sealed_summary, plain))
    forged = Reply(reply.ok, body, reply.meta).to_bytes()
    return {**row, "payload_hex": forged.hex(), "sha256": hashlib.sha256(forged).hexdigest()}


def _with_coordinator_view(run: Path, tmp: Path, rows: list[dict[str, Any]]) -> Path:
    copy = tmp / "run"
    shutil.copytree(run, copy)
    (copy / "transcripts" / "coordinator.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    _reseal(copy)  # as if the run had recorded this view (run.json covers transcripts)
    return copy


def test_real_masked_inputs_pass_the_uniformity_test(mask_run: Path, tmp_path: Path) -> None:
    rows = _recorded_session()
    checks = transcript_audit(load_run(_with_coordinator_view(mask_run, tmp_path, rows)))[
        "mask_checks"
    ]
    assert checks["masked_inputs"] == 6
    assert checks["uniformity"]["uniform"] is True
    assert checks["passed"] is True and checks["cannot_test"] == ""


def test_an_unmasked_input_on_the_wire_fails_the_audit(mask_run: Path, tmp_path: Path) -> None:
    rows = _recorded_session()
    k = next(i for i, r in enumerate(rows) if r["kind"] == MASKED_INPUT_KIND)
    rows[k] = _unmasked(rows[k])
    checks = transcript_audit(load_run(_with_coordinator_view(mask_run, tmp_path, rows)))[
        "mask_checks"
    ]
    assert checks["uniformity"]["uniform"] is False
    assert checks["passed"] is False


def test_a_replayed_masked_input_is_reported(mask_run: Path, tmp_path: Path) -> None:
    rows = _recorded_session()
    masked = [i for i, r in enumerate(rows) if r["kind"] == MASKED_INPUT_KIND]
    rows[masked[1]] = {**rows[masked[0]], "peer": rows[masked[1]]["peer"]}
    checks = transcript_audit(load_run(_with_coordinator_view(mask_run, tmp_path, rows)))[
        "mask_checks"
    ]
    assert checks["repeated_masked_inputs"] == 1 and checks["passed"] is False


@pytest.mark.parametrize("bits", [32, 64])
def test_uniformity_test_rejects_small_values_and_accepts_random_words(bits: int) -> None:
    rng = np.random.default_rng(3)
    dtype = np.uint32 if bits == 32 else np.uint64
    words = np.frombuffer(rng.bytes(5000 * bits // 8), dtype=dtype)
    assert uniformity_test([words], bits=bits)["uniform"] is True
    small = rng.integers(-1000, 1000, size=5000).astype(dtype)  # two's complement wrap
    assert uniformity_test([small], bits=bits)["uniform"] is False


# --- the gradient-inversion section, built elsewhere, imported lazily ---------------


def test_inversion_section_is_skipped_with_a_note_when_absent(
    mask_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from securepool.audit.command import _inversion

    monkeypatch.setitem(sys.modules, "securepool.audit.inversion", None)
    section = _inversion(load_run(mask_run), quick=True)
    assert "not available" in section["skipped"]


def test_inversion_section_is_reported_when_present(
    mask_run: Path, mask_audit: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from securepool.audit.command import _inversion, write_audit
    from securepool.config import RunConfig
    from securepool.data import FederatedData

    png = (Path(mask_audit["_out"]) / "plots" / "roc.png").read_bytes()
    seen: dict[str, Any] = {}

    def inversion_audit(
        *, config: RunConfig, data: FederatedData, quick: bool = False
    ) -> dict[str, Any]:
        seen.update(config=config, data=data, quick=quick)
        return {"records_identified": 3, "reconstructions": png}

    fake = types.ModuleType("securepool.audit.inversion")
    fake.inversion_audit = inversion_audit  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "securepool.audit.inversion", fake)
    section = _inversion(load_run(mask_run), quick=True)
    run = load_run(mask_run)
    assert seen["config"] == run.config and seen["quick"] is True
    assert isinstance(seen["data"], FederatedData)
    assert sorted(seen["data"].participants) == [f"p{i:02d}" for i in range(6)]
    audit = {k: v for k, v in mask_audit.items() if k != "_out"} | {"inversion": section}
    write_audit(tmp_path / "r", audit)
    page = (tmp_path / "r" / "report.html").read_text()
    assert 'alt="inversion_reconstructions"' in page and "records_identified" in page
    stored = json.loads((tmp_path / "r" / "audit.json").read_text())["inversion"]
    assert stored["reconstructions"].startswith("data:image/png;base64,")


def test_a_run_recording_payloads_lets_the_audit_test_the_masked_values(tmp_path: Path) -> None:
    """run.transcript_payloads = true: the Driver-level transcript keeps the bytes, and
    the transcript audit decodes every masked input and tests it for uniformity (passes:
    the masks are a PRG's); without record_transcripts the key is refused."""
    from crypto.errors import ConfigError
    from securepool.audit.inputs import load_run
    from securepool.audit.transcripts import transcript_audit

    text = (
        "[run]\nseed = 2\nrecord_transcripts = true\ntranscript_payloads = true\n"
        '[data]\nparticipants = 5\n[[pool.models]]\nid = "lr"\narch = "logreg"\n'
        '[assignment]\nmax_models = 1\nbeacon = "seeded-insecure"\n'
        "[convergence]\nmax_iterations = 1\n[acceptance]\nmax_error_bound = 1.0\n"
    )
    (tmp_path / "c.toml").write_text(text)
    start_job(tmp_path / "c.toml", tmp_path / "run")
    checks = transcript_audit(load_run(tmp_path / "run"))["mask_checks"]
    assert checks["masked_inputs"] == 5 and checks["uniformity"] is not None
    assert checks["uniformity"]["uniform"] and checks["passed"] and not checks["cannot_test"]
    (tmp_path / "bad.toml").write_text(text.replace("record_transcripts = true\n", ""))
    with pytest.raises(ConfigError, match="transcript_payloads needs"):
        start_job(tmp_path / "bad.toml", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_roc_plot_shows_only_measured_false_positive_rates(
    mask_audit: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ROC's FPR axis starts at 1/non-members, the smallest rate the audit measures;
    the points at FPR 0 (where the old plot drew flat lines down to 1e-4) are left out."""
    from securepool.audit import report
    from securepool.audit.stats import roc

    mem = mask_audit["membership"]
    n_neg = mem["non_members"]
    # perfectly separated scores: TPR 1 at FPR 0; the first plotted point is (1/n, 1)
    fpr, tpr = roc(np.arange(5.0, 10.0), np.arange(0.0, 4.0))
    xs, ys = report.roc_points(fpr.tolist(), tpr.tolist(), n_neg=4, n_pos=5)
    assert xs[0] == 0.25 and ys[0] == 1.0 and min(xs) == 0.25
    seen: dict[str, Any] = {}

    def capture(fig: Any) -> bytes:
        ax = fig.axes[0]
        seen["xlim"] = ax.get_xlim()
        seen["xs"] = [x for line in ax.get_lines() for x in line.get_xdata()]
        return b""

    monkeypatch.setattr(report, "_png", capture)
    report.plot_roc(mem)
    assert seen["xlim"][0] == pytest.approx(1 / n_neg)
    assert min(seen["xs"]) >= 1 / n_neg * (1 - 1e-9)
    raw = [
        f
        for e in mem["models"].values()
        for a in ("lira", "loss_threshold")
        for f in e[a]["roc"]["fpr"]
    ]
    assert 0.0 in raw  # the measured curve has FPR-0 points, and they are not drawn
