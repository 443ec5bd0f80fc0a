"""How messages move between the roles: one driver interface, one file per transport.

* :mod:`.driver`      the interface: the coordinator sends one stage's batch of per-node
  messages and gets each node's reply or a timeout (a dropout); a node answers a message
  with a :class:`NodeApp`.
"""
