"""SecAgg+ secure aggregation by pairwise masking with dropout recovery.

Bonawitz et al. (CCS 2017) over the sparse neighbour graph of Bell et al. (CCS 2020).
Stages: advertise keys -> share keys -> masked input -> consistency check -> unmasking.

* :mod:`.settings`   MaskSettings (modulus, clip, dropout and corruption assumptions)
* :mod:`.graph`      degree and threshold choice, the neighbour graph
* :mod:`.messages`   one frozen dataclass per message, versioned wire format
* :mod:`.client`     the participant's state machine
* :mod:`.server`     the coordinator's state machine
* :mod:`.unmasking`  the unmasking step: remove self masks and dropped peers' masks
* :mod:`.aggregator` MaskedAggregator, the GroupAggregator used by the pool loop
"""
