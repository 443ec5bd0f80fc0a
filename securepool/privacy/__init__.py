"""Differential privacy: DP-SGD local training and per-participant accounting.

* :mod:`.config`      the ``[privacy]`` section
* :mod:`.accounting`  RDP accounting of the sampled Gaussian mechanism, per participant
* :mod:`.noise`       discrete Gaussian noise on a grid, from the participant's CSPRNG
* :mod:`.trainer`     ParticipantDP (a participant's own ledger, randomness and budget)
  and DPTrainer, the in-process LocalTrainer that routes to them
"""
