"""Differential privacy: DP-SGD local training (Opacus) and per-participant accounting.

* :mod:`.config`      the ``[privacy]`` section
* :mod:`.accounting`  RDP accounting of the sampled Gaussian mechanism, per participant
* :mod:`.trainer`     DPTrainer: the LocalTrainer that trains with Opacus and spends budget
* :mod:`.user_level`  clipping + distributed Gaussian noise on updates (DP-FedAvg style)
"""
