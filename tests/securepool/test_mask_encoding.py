"""A coordinator that names its own fixed-point scale gets nothing (issue 21, item 7).

The real coordinator, real participant nodes and the in-process driver; the coordinator
lies through a tap on the link that rewrites the key directory (``secagg/keys``) on its
way to the nodes. Each node derives the encoding from its own settings and group
(:func:`protocols.secagg.settings.encoding_spec`) and refuses any other scale before it
shares a key."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from binding_helpers import assert_exact, pool, run_config, tapped

from protocols.secagg.messages import KeyDirectory, decode_message, encode_message
from protocols.secagg.settings import encoding_spec
from securepool.node.wire import NodeStage, Reply

KEYS = NodeStage.SECAGG_KEYS.value


def with_scale(scale: float, victims: Collection[str] | None = None) -> Any:
    """A link rewrite: the key directory with ``scale`` for ``victims`` (all: None)."""

    def rewrite(stage: str, node: str, payload: bytes) -> bytes:
        if stage != KEYS or (victims is not None and node not in victims):
            return payload
        d = decode_message(payload, KeyDirectory)
        return encode_message(KeyDirectory(d.session, d.keys, d.graph_seed, scale, d.length))

    return rewrite


@pytest.mark.parametrize("scale", [1e-300, 2.0**-20], ids=["1e-300", "2^-20"])
def test_every_node_refuses_a_directory_with_the_coordinators_scale(
    tmp_path: Path, scale: float
) -> None:
    made, tap = tapped(with_scale(scale))
    p = pool(run_config("mask", n=6, trust={}), tmp_path, driver=tap)
    (record,) = p.run()
    (group,) = record.groups
    assert group.status.startswith("aborted") and not group.contributors, group.status
    parts = made[0].parts(KEYS)
    assert sorted(part.node for part in parts) == sorted(group.members)
    for part in parts:
        assert part.answer is not None
        reply = Reply.from_bytes(part.answer)
        assert not reply.ok and not reply.body  # no ShareKeys: not a share left the node
        assert reply.meta["error"] == "SecurityViolation", reply.meta
        assert "'scale'" in reply.meta["reason"] and "agreed settings" in reply.meta["reason"]
    # nothing after the directory reached any node
    assert made[0].parts(NodeStage.SECAGG_SHARES.value) == []


def test_one_lied_to_node_drops_out_and_the_rest_sum_exactly(tmp_path: Path) -> None:
    made, tap = tapped(with_scale(1e-300, victims={"p02"}))
    cfg = run_config("mask", n=6, trust={})
    p = pool(cfg, tmp_path, driver=tap)
    (record,) = p.run()
    (group,) = record.groups
    assert set(group.contributors) == set(group.members) - {"p02"}
    refused = next(part for part in made[0].parts(KEYS) if part.node == "p02")
    assert refused.answer is not None
    assert "'scale'" in Reply.from_bytes(refused.answer).meta["reason"]
    assert_exact(p, record)


def test_an_honest_run_uses_the_derived_scale_and_is_exact(tmp_path: Path) -> None:
    made, tap = tapped()
    cfg = run_config("mask", n=6, trust={})
    p = pool(cfg, tmp_path, driver=tap)
    (record,) = p.run()
    (group,) = record.groups
    directory = decode_message(made[0].parts(KEYS)[0].payload, KeyDirectory)
    spec = encoding_spec(cfg.mask_settings(), group_size=len(group.members))
    assert directory.scale == spec.scale
    assert_exact(p, record)
