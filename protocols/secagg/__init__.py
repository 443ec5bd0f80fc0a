"""SecAgg+ secure aggregation by pairwise masking with dropout recovery.

Bonawitz et al. (CCS 2017) over the sparse neighbour graph of Bell et al. (CCS 2020).
Stages: advertise keys -> share keys -> masked input -> consistency check -> unmasking.
Clients protect themselves from a malicious coordinator (issue 10): see the security
notes of :mod:`.client` and the bound in :mod:`.graph`. Wire format: the versioned
binary codec of :mod:`protocols.codec`.

* :mod:`.settings`   MaskSettings (modulus, clip, dropout and corruption assumptions)
* :mod:`.graph`      (k, t, T) choice, the graph seed from the joint seed, the graph
* :mod:`.messages`   one frozen dataclass per message, versioned wire format
* :mod:`.client`     the participant's state machine
* :mod:`.server`     the coordinator's state machine
* :mod:`.unmasking`  the unmasking step: remove self masks and dropped peers' masks
* :mod:`.binding`    the trust sketch bound to the masked input: report, checks,
                     signed verdict gating unmasking, post-check (issue 13)
* :mod:`.labels`     mask labels and signs shared by clients, unmasking and binding

Each node runs a :class:`~.client.SecAggClient` (securepool/node/app.py) and the
coordinator a :class:`~.server.SecAggServer` per group (securepool/coordinator/loop.py).
"""
