"""P6 in plaintext mode judges what each participant sent, never what it claims (issue 13,
plaintext part; issue 22 item 4). Performed through the real coordinator, participant
nodes and auditor node: a participant tells the trust check nothing of its own (the
coordinator summarises the update it received, under a projection drawn after every
update of the group is fixed), so a poisoned update is judged as it is, and a reply
that still carries a summary of the sender's choosing (a cover, in the reply layout of
the public-projection days) is refused as malformed before anything reaches the
auditor.

The kernel attack (a perturbation in the public projection's kernel):
tests/securepool/test_plain_fresh_projection.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import POISONS, QUIET_P6, Recording, assert_exact, pool
from binding_helpers import run_config as make_config

from protocols.summaries import seal_summary, summarize
from protocols.trust_offer import TRUST_SETUP_SESSION, verify_trust_offer
from securepool.node.agreement import session_name
from securepool.node.auditor import AUDITOR_ID
from securepool.node.wire import Reply, TrainRequest, pack_list
from securepool.trust.check import public_projection_seed


def _config(sketch_dim: int = 256, n: int = 6, **trust: Any) -> Any:
    return make_config("plaintext", n=n, trust={**QUIET_P6, "sketch_dim": sketch_dim, **trust})


@pytest.mark.parametrize("sketch_dim", [256, 0])
def test_a_poisoned_update_is_judged_as_sent(tmp_path: Path, sketch_dim: int) -> None:
    """-5x updates (which their senders once covered with an honest summary) are
    flagged on the coordinator's summary of them. sketch_dim = 0: the raw update is the
    summary (the P6 baseline)."""
    bad = {"p04", "p05"}
    liar = functools.partial(Recording, poison=POISONS["scale_minus_5"])
    p = pool(_config(sketch_dim), tmp_path, nodes={pid: liar for pid in bad})
    (record,) = p.run()
    (group,) = record.groups
    for pid in bad:
        assert group.excluded[pid].startswith("untrusted: ")
    assert set(group.contributors) == set(group.members) - bad  # no honest node flagged
    assert set(p.flags()) == bad
    assert_exact(p, record)


class AttachesCover(Recording):
    """Sends its poisoned update with the summary of its honest one, under the public
    projection, sealed to the auditor's verified opening key, appended to its reply (as
    plaintext nodes did when they sealed their own summary)."""

    def _train(self, req: TrainRequest) -> Reply:
        reply = super()._train(req)
        assert self.honest is not None and reply.ok
        session = session_name(max(self.sent), req.model_id)
        opening = verify_trust_offer(
            req.trust_offer,
            auditor_public=self._registry_now()[AUDITOR_ID],
            session=TRUST_SETUP_SESSION,
        )
        seed = public_projection_seed(self.cfg.run.seed, session)
        cover = seal_summary(
            summarize(self.honest, dim=self.cfg.trust.sketch_dim, seed=seed),
            auditor_public=opening,
            session=session,
            participant=self.pid,
        )
        return Reply(True, pack_list([reply.body, cover]), reply.meta)


def test_a_reply_carrying_its_own_summary_is_refused(tmp_path: Path) -> None:
    """Under the validation vote (so the train request carries the auditor's opening
    key to seal to): p05 attaches a cover summary to its -5x update; the coordinator
    refuses the reply as malformed, the auditor judges the rest, and nobody is
    flagged."""
    cfg = _config(voting="validation")
    liar = functools.partial(AttachesCover, poison=POISONS["scale_minus_5"])
    p = pool(cfg, tmp_path, nodes={"p05": liar})
    (record,) = p.run()
    (group,) = record.groups
    assert group.excluded["p05"].startswith("malformed update: ")
    assert set(group.contributors) == set(group.members) - {"p05"}
    assert p.flags() == {}
    assert_exact(p, record)
    node = p.nodes["p05"]
    assert not np.allclose(node.sent[max(node.sent)][1], node.honest)
