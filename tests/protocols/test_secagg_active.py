"""A malicious coordinator against real SecAggClient objects (issue 10, SecAgg+ part).

Each test mounts one of the issue's known failures from the coordinator's side of the
wire: it crafts the messages a lying coordinator (plus colluding participants, whose
identity keys it holds) would send, feeds them to honest clients, and shows the attack
refused. Numbered as in the issue.
"""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import pytest
from secagg_session import DIGEST, SETTINGS, Session, make_inputs, reference, run_session

from crypto.agreement import AgreementKey
from crypto.errors import (
    MessageError,
    SecurityViolation,
    StageError,
    ThresholdNotMet,
)
from crypto.fixedpoint import decode
from crypto.shamir import shamir_combine
from protocols.secagg.client import (
    LABEL_ADVERTISE,
    LABEL_SURVIVORS,
    ClientStage,
    SessionHistory,
    advertise_payload,
    survivors_payload,
    x_coordinates,
)
from protocols.secagg.graph import (
    consistency_threshold,
    graph_seed_from,
    neighbours_of,
    session_parameters,
)
from protocols.secagg.messages import (
    MAGIC,
    VERSION,
    AdvertiseKeys,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from protocols.secagg.settings import MaskSettings

# An X25519 point of order 8 (RFC 7748 section 6.1 / libsodium's blocklist): every
# scalar multiple is the identity, so the shared secret is all zeros.
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


def _shares_step(s: Session) -> dict[str, bytes]:
    """Everybody shares keys through the honest server; the deliveries it would send."""
    for p, c in s.clients.items():
        s.server.receive(c.handle(s.directory), sender=p)
    return s.server.close_shares()


# --- 1. masked input without t verified shares ---------------------------------------


def test_1_client_refuses_to_mask_without_t_verified_shares() -> None:
    """The coordinator delivers fewer than t shares (none; t - 1; t with one tampered):
    the masked input would carry only the self mask plus a few pair masks the colluding
    coordinator could strip. The client refuses and stays where it was."""
    s = Session(n=8)
    s.advertise()
    deliveries = _shares_step(s)
    target = "p00"
    t = s.clients[target].params.threshold
    honest = decode_message(deliveries[target], ShareDelivery)
    cts = dict(honest.ciphertexts)
    assert len(cts) >= t
    keep = sorted(cts)[: t - 1]
    tampered = dict(list(cts.items())[:t])
    first = next(iter(tampered))
    tampered[first] = tampered[first][:-1] + bytes([tampered[first][-1] ^ 1])
    for evil in ({}, {k: cts[k] for k in keep}, tampered):
        msg = encode_message(ShareDelivery("s", evil))
        with pytest.raises(SecurityViolation, match="refusing to send a masked input"):
            s.clients[target].handle(msg)
        assert s.clients[target].stage is ClientStage.INPUT
    # with exactly t verified shares it masks, and only with those t neighbours
    exact = {k: cts[k] for k in sorted(cts)[:t]}
    reply = decode_message(s.clients[target].handle(encode_message(ShareDelivery("s", exact))))
    client = s.clients[target]
    assert set(client._held) == set(exact)
    # recompute the masked vector from the parts (the test knows every secret): it is
    # encode(x) + PRG(b) + the pair masks with exactly the t holders, nothing else
    from crypto.prg import expand_mask

    dtype = client._spec.dtype
    y = reply.vector.copy()
    y -= expand_mask(client._b, label=b"secagg/selfmask", length=y.size, dtype=dtype)
    for v in exact:
        m = expand_mask(client._mask_seeds[v], label=b"secagg/pairmask", length=y.size, dtype=dtype)
        y = y - m if target < v else y + m
    from crypto.fixedpoint import decode

    x = decode(y, client._spec)
    w = s.inputs[target].weight
    assert np.allclose(x[:-1], w * s.inputs[target].update, atol=1e-4)
    assert x[-1] == pytest.approx(w, abs=1e-4)


# --- 2. different survivor lists to different clients --------------------------------


def _split_attack(n: int, colluders: tuple[str, ...], split: int) -> dict[str, int]:
    """Tell ``split`` honest members that the target survived (list L1) and the rest
    that it dropped (L2); colluders sign both. Returns what the coordinator collected."""
    s = Session(n=n, d=3)
    s.advertise()
    deliveries = _shares_step(s)
    for p, msg in deliveries.items():
        s.server.receive(s.clients[p].handle(msg), sender=p)
    ids = sorted(s.inputs)
    honest = [p for p in ids if p not in colluders]
    target = honest[0]
    l1 = tuple(ids)
    l2 = tuple(p for p in ids if p != target)
    told_l1 = set(honest[:split]) | {target}
    sigs1: dict[str, bytes] = {}
    sigs2: dict[str, bytes] = {}
    for p in honest:
        lst, sigs = (l1, sigs1) if p in told_l1 else (l2, sigs2)
        try:
            sig = decode_message(s.clients[p].handle(encode_message(SurvivorList("s", lst))))
        except ThresholdNotMet:
            continue
        sigs[p] = sig.signature
    for c in colluders:  # a colluder signs whatever the coordinator wants
        sigs1[c] = s.ids[c].sign(survivors_payload("s", DIGEST, l1), label=LABEL_SURVIVORS)
        sigs2[c] = s.ids[c].sign(survivors_payload("s", DIGEST, l2), label=LABEL_SURVIVORS)
    b_shares: dict[str, bytes] = {}
    s_shares: dict[str, bytes] = {}
    answered = {"L1": 0, "L2": 0}
    for p in honest:
        if p == target:
            continue
        if p in told_l1:
            req = UnmaskRequest("s", l1, (), sigs1)
        else:
            req = UnmaskRequest("s", l2, (target,), sigs2)
        try:
            resp = decode_message(s.clients[p].handle(encode_message(req)), UnmaskResponse)
        except SecurityViolation:
            continue
        answered["L1" if p in told_l1 else "L2"] += 1
        b_shares.update({p: resp.b_shares[target]} if target in resp.b_shares else {})
        s_shares.update({p: resp.s_shares[target]} if target in resp.s_shares else {})
    # the colluders' own shares of the target
    for c in colluders:
        held = s.clients[c]._held.get(target)
        if held is not None:
            b_shares[c], s_shares[c] = held
    t = s.clients[target].params.threshold
    xs = x_coordinates(s.inputs)
    rebuilt_both = False
    if len(b_shares) >= t and len(s_shares) >= t:
        key = shamir_combine({xs[h]: v for h, v in s_shares.items()}, threshold=t)
        rebuilt = AgreementKey.from_private_bytes(key).public_bytes()
        rebuilt_both = rebuilt == s.clients[target]._s.public_bytes()
    return {
        **answered,
        "b": len(b_shares),
        "s": len(s_shares),
        "t": t,
        "both": int(rebuilt_both),
    }


@pytest.mark.parametrize(("n", "n_colluders"), [(20, 1), (40, 2)])
def test_2_split_survivor_lists_never_yield_both_secrets(n: int, n_colluders: int) -> None:
    """The issue's attack: half of the target's group told it survived, half that it
    dropped. With the old threshold (t = 10 at n = 20, 17 at n = 40) both halves had
    enough signatures; now every split leaves at least one half unanswered."""
    colluders = tuple(f"p{n - 1 - i:02d}" for i in range(n_colluders))
    honest = n - n_colluders
    consistency = consistency_threshold(n, corrupt=SETTINGS.corrupt_fraction)
    old_t = session_parameters(n, dropout=0.1, corrupt=0.2).threshold
    # the old rule (t signatures) let both halves of the balanced split through
    assert honest // 2 + n_colluders >= old_t and honest - honest // 2 + n_colluders >= old_t
    l1_just_enough = consistency - n_colluders
    for split in (honest // 2, l1_just_enough, l1_just_enough - 1, honest - l1_just_enough):
        got = _split_attack(n, colluders, split)
        assert got["both"] == 0
        assert got["L1"] == 0 or got["L2"] == 0  # only one list is ever answered
        assert min(got["b"], got["s"]) < got["t"]  # one kind comes from colluders alone
        if split == honest // 2:  # the balanced split: nobody answers at all
            assert got["L1"] == got["L2"] == 0
        if split == l1_just_enough:  # L1 answered: the target's self-mask shares only
            assert got["L1"] > 0 and got["s"] <= n_colluders


def test_2_bound_is_tight_and_matches_the_documented_formula() -> None:
    """T = floor((n + C)/2) + 1 is the smallest count for which two lists cannot both be
    signed: with T - 1, an honest split plus the colluders would reach it twice."""
    for n in (3, 5, 10, 20, 40, 100, 1000):
        for gamma in (0.0, 0.1, 0.2, 0.33):
            c = math.ceil(gamma * n)
            big_t = consistency_threshold(n, corrupt=gamma)
            assert 2 * big_t - n > c  # any two T-sets of n share > C members
            assert big_t <= n
            if big_t - 1 >= 1 and (big_t - 1) <= n:
                assert 2 * (big_t - 1) - n <= c or big_t == n


# --- 3. the coordinator names degree, threshold and graph seed -------------------------


def test_3_ground_graph_seed_is_refused() -> None:
    """The coordinator grinds graph seeds until, at degree 2, two colluders are the
    target's only neighbours (the issue's n = 40 attack). Clients derive the seed from the
    joint seed and refuse any other; they also derive (k, t) themselves."""
    s = Session(n=40, d=2)
    s.advertise()
    ids = sorted(s.inputs)
    target, colluders = "p00", frozenset({"p38", "p39"})
    ground = None
    for i in range(200_000):
        seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
        if neighbours_of(target, ids, 2, seed=seed) == colluders:
            ground = seed
            break
    assert ground is not None  # the grinding itself works (about 1 in 741 seeds)
    with pytest.raises(SecurityViolation, match="graph seed"):
        s.clients[target].handle(s.crafted_directory(graph_seed=ground))
    assert s.clients[target].stage is ClientStage.SHARE
    # the client's own (k, t) at n = 40, whatever the coordinator says
    params = s.clients[target].params
    assert (params.degree, params.threshold) == (32, 17)
    assert s.clients[target]._graph_seed == graph_seed_from(s.joint_seed, session="s")
    # and an agreed degree of 2 is refused by the client itself (fails the 2^-40 bound)
    with pytest.raises(SecurityViolation, match="degree 2"):
        s.client(target, settings=MaskSettings(max_weight=128.0, degree=2))


def test_3_directory_with_non_members_is_refused() -> None:
    s = Session(n=6)
    s.advertise()
    d = decode_message(s.directory)
    extra = dict(d.keys)
    extra["zz99"] = d.keys["p01"]
    with pytest.raises(SecurityViolation, match="non-members"):
        s.clients["p00"].handle(s.crafted_directory(keys=extra))


# --- 4. survivor sets below min_group_size ---------------------------------------------


def test_4_survivor_set_below_min_group_size_is_refused_by_every_client() -> None:
    s = Session(n=6)
    s.advertise()
    deliveries = _shares_step(s)
    for p, msg in deliveries.items():
        s.server.receive(s.clients[p].handle(msg), sender=p)
    for p, c in s.clients.items():
        others = [q for q in s.inputs if q != p]
        two = encode_message(SurvivorList("s", (p, others[0])))
        with pytest.raises(ThresholdNotMet, match="min_group_size"):
            c.handle(two)
        assert c.stage is ClientStage.CONSISTENCY


def test_4_groups_of_one_or_two_are_refused() -> None:
    s = Session(n=6)
    for size in (1, 2):
        with pytest.raises(ThresholdNotMet, match="min_group_size"):
            s.client("p00", members=sorted(s.inputs)[:size])
    # a directory of two (the coordinator drops everybody else) is refused as well
    s.advertise()
    d = decode_message(s.directory)
    two = {p: d.keys[p] for p in ("p00", "p01")}
    with pytest.raises(ThresholdNotMet, match="min_group_size"):
        s.clients["p00"].handle(s.crafted_directory(keys=two))
    # and a client-side min_group_size cannot be lowered below 3
    with pytest.raises(SecurityViolation):
        s.client("p00", min_group_size=2)


# --- 5. duplicate and low-order public keys ----------------------------------------------


def _readvertise(s: Session, copier: str, victim: str) -> bytes:
    """``copier`` advertises ``victim``'s public keys, validly signed by the copier."""
    v = decode_message(s.adverts[victim], AdvertiseKeys)
    payload = advertise_payload("s", copier, v.c_pk, v.s_pk, DIGEST)
    sig = s.ids[copier].sign(payload, label=LABEL_ADVERTISE)
    return encode_message(AdvertiseKeys("s", copier, v.c_pk, v.s_pk, DIGEST, sig))


def test_5_duplicate_keys_exclude_the_readvertiser_and_the_session_goes_on() -> None:
    """A colluder advertises an honest peer's public keys under its own identity: the
    server refuses the copy (it arrives after the original it copies) and excludes
    only the copier; the session completes with the exact sum of the others."""
    s = Session(n=7)
    for p, c in s.clients.items():
        s.adverts[p] = c.start()
    s.advertise(replace={"p05": _readvertise(s, "p05", "p01")})
    assert set(s.server.excluded) == {"p05"}
    assert "re-advertises a public key of p01" in s.server.excluded["p05"]
    total, weight, who = s.finish()
    assert who == frozenset(s.inputs) - {"p05"}
    ref, ref_w = reference(s.inputs, who)
    assert np.abs(total - ref).max() < 1e-3 and weight == pytest.approx(ref_w, abs=1e-3)


def test_5_duplicate_keys_in_a_lying_directory_are_excluded_by_clients() -> None:
    """The coordinator itself lists p05 with p01's keys (p05 colluding, signing them)."""
    s = Session(n=7)
    s.advertise()
    copy = decode_message(_readvertise(s, "p05", "p01"), AdvertiseKeys)
    keys = dict(decode_message(s.directory).keys)
    keys["p05"] = (copy.c_pk, copy.s_pk, copy.model_digest, copy.signature)
    evil = s.crafted_directory(keys=keys)
    s.clients["p01"].handle(evil)
    assert s.clients["p01"].excluded == {"p05": "re-advertised this participant's public key"}
    for p in ("p00", "p02", "p03"):
        s.clients[p].handle(evil)  # goes on, without both holders of the duplicate
        assert set(s.clients[p].excluded) == {"p01", "p05"}


def test_5_low_order_key_excludes_that_participant_only() -> None:
    s = Session(n=7)
    for p, c in s.clients.items():
        s.adverts[p] = c.start()
    v = decode_message(s.adverts["p03"], AdvertiseKeys)
    payload = advertise_payload("s", "p03", v.c_pk, LOW_ORDER, DIGEST)
    bad = encode_message(
        AdvertiseKeys(
            "s", "p03", v.c_pk, LOW_ORDER, DIGEST, s.ids["p03"].sign(payload, label=LABEL_ADVERTISE)
        )
    )
    s.advertise(replace={"p03": bad})
    assert set(s.server.excluded) == {"p03"} and "low order" in s.server.excluded["p03"]
    total, _w, who = s.finish()
    assert who == frozenset(s.inputs) - {"p03"}
    ref, _ = reference(s.inputs, who)
    assert np.abs(total - ref).max() < 1e-3
    # a lying coordinator that lists the low-order key anyway: clients exclude p03 only
    s2 = Session(n=7)
    for p, c in s2.clients.items():
        s2.adverts[p] = c.start()
        s2.server.receive(s2.adverts[p], sender=p)
    s2.directory = s2.server.close_keys()
    keys = dict(decode_message(s2.directory).keys)
    c_pk = keys["p03"][0]
    sig = s2.ids["p03"].sign(
        advertise_payload("s", "p03", c_pk, LOW_ORDER, DIGEST), label=LABEL_ADVERTISE
    )
    keys["p03"] = (c_pk, LOW_ORDER, DIGEST, sig)
    evil = s2.crafted_directory(keys=keys)
    for p, c in s2.clients.items():
        if p == "p03":
            continue
        c.handle(evil)
        assert set(c.excluded) <= {"p03"}
        assert c.stage is ClientStage.INPUT


# --- 6. identifiers where they enter ---------------------------------------------------


@pytest.mark.parametrize("bad", ["s|x", "s\x00x", " s", "s\n", "ѕ", "", "a" * 200])
def test_6_ids_and_sessions_are_validated_where_they_enter(bad: str) -> None:
    """The old payloads joined fields with '|' or NUL, so ("s|x", ...) and ("s", "x|..")
    framed alike. Ids that could alias are refused by constructors and decoders, and
    the payloads are bind() encodings, injective whatever the fields hold."""
    with pytest.raises(MessageError):
        SurvivorList(bad, ("p00",))
    with pytest.raises(MessageError):
        ShareKeys("s", bad, {})
    raw = bad.encode("utf-8")
    # a SurvivorList of session "s" naming ``bad``, framed by hand (the encoder refuses it)
    forged = (
        MAGIC
        + bytes([VERSION, SurvivorList.KIND])
        + struct.pack(">H", 1)
        + b"s"
        + struct.pack(">I", 1)
        + struct.pack(">H", len(raw))
        + raw
    )
    with pytest.raises(MessageError):
        decode_message(forged)
    s = Session(n=4)
    with pytest.raises(MessageError):
        s.client("p00", session=bad)


def test_6_payloads_are_injective_across_field_boundaries() -> None:
    shifted = survivors_payload("s", DIGEST, ["a", "bc"])
    assert survivors_payload("s", DIGEST, ["ab", "c"]) != shifted
    k = bytes(32)
    assert advertise_payload("s", "p1", k, k, DIGEST) != advertise_payload("s", "p", k, k, DIGEST)
    from protocols.secagg.client import mask_label, share_aad

    assert mask_label("s", "a", "bc") != mask_label("s", "ab", "c")
    assert mask_label("s", "a", "b") == mask_label("s", "b", "a")
    assert share_aad("s", "a", "b") != share_aad("s", "b", "a")


# --- model consistency and replay ------------------------------------------------------


def test_inconsistent_models_to_two_halves_abort_before_any_data_leaves() -> None:
    """Pasquini et al.: half of the group is sent another global model. Every client
    sees the other half's digest in the signed adverts and aborts at the directory,
    before its share message, masked input or anything else is sent."""
    evil = hashlib.sha256(b"a model crafted for the first half").digest()
    s = Session(n=8, digests={f"p0{i}": evil for i in range(4)})
    s.advertise()
    for c in s.clients.values():
        with pytest.raises(SecurityViolation, match="model digest mismatch"):
            c.handle(s.directory)
        assert c.stage is ClientStage.SHARE
    # a single target sent its own model: it and every other client abort
    s1 = Session(n=6, digests={"p02": evil})
    s1.advertise()
    for c in s1.clients.values():
        with pytest.raises(SecurityViolation, match=r"model digest mismatch: \['p02'\]|\(of 5\)"):
            c.handle(s1.directory)


def test_replayed_session_is_refused() -> None:
    s = Session(n=4)
    history = SessionHistory()
    first = s.client("p00", history=history, iteration=3)
    first.start()
    with pytest.raises(StageError, match="replay"):
        s.client("p00", history=history, iteration=4).start()
    with pytest.raises(StageError, match="iteration 2"):
        s.client("p00", history=history, session="s2", iteration=2).start()
    # a whole session, the same session string twice to the same participants (their
    # keys and histories kept, as their nodes keep them): every client refuses the
    # replay, so the server never gets enough adverts
    inputs = make_inputs(5, 3)
    ids: dict = {}
    histories: dict[str, SessionHistory] = {}
    run_session(inputs, session="it0001/m", ids=ids, histories=histories)
    with pytest.raises(ThresholdNotMet):
        run_session(inputs, session="it0001/m", ids=ids, histories=histories)
    result = run_session(inputs, session="it0002/m", ids=ids, histories=histories)
    assert result.contributors == frozenset(inputs)


def test_a_group_of_two_is_refused_by_every_client() -> None:
    with pytest.raises(ThresholdNotMet, match="below min_group_size"):
        Session(n=2)  # a client refuses to be built for it
    with pytest.raises(ThresholdNotMet, match="0 advertised keys"):
        run_session(make_inputs(2, 3), session="it0001/m")


def test_without_binding_the_survivor_list_names_no_input_digests() -> None:
    """Issue 26: the digests of the masked inputs fix the binding's projection; without
    binding no client checks them, so the coordinator neither hashes nor lists them. The
    clients still sign the exact survivor list and the sum stays exact."""
    s = Session(n=6, d=5)
    s.advertise()
    for c in s.clients.values():
        s.server.receive(c.handle(s.directory))
    for p, msg in s.server.close_shares().items():
        s.server.receive(s.clients[p].handle(msg))
    survivors = s.server.close_inputs()
    listed = decode_message(survivors, SurvivorList)
    assert listed.digests == {} and s.server.digests == {}
    assert set(listed.survivors) == set(s.clients)
    for p in sorted(s.server.survivors):
        s.server.receive(s.clients[p].handle(survivors))
    unmask = s.server.close_signatures()
    for p in sorted(s.server.signers):
        s.server.receive(s.clients[p].handle(unmask))
    total = s.server.close_unmask()
    assert s.server.spec is not None
    values = decode(total, s.server.spec)
    expected, weight = reference(s.inputs, frozenset(s.clients))
    assert np.abs(values[:-1] - expected).max() < 1e-3 and abs(values[-1] - weight) < 1e-3
