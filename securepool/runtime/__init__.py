"""How messages move between the roles: one driver interface, one file per transport.

* :mod:`.driver`      the interface: the coordinator sends one stage's batch of per-node
  messages and gets each node's reply or a timeout (a dropout); a node answers a message
  with a :class:`NodeApp`.
* :mod:`.flower`      the Flower transport: :class:`FlowerDriver` over a ServerApp's Grid,
  and the ClientApp's handler that builds a node's NodeApp from its node config.
* :mod:`.flower_app`  the ServerApp and ClientApp (``[tool.flwr.app.components]``).
* :mod:`.simulation`  the same apps on Flower's simulation engine (Ray, loopback only).
* :mod:`.flower_harness` a whole TLS + node-auth deployment on 127.0.0.1 (tests, bench).

Importing the Flower modules needs flwr (a dependency); the simulation needs Ray
(``flwr[simulation]``, the ``simulation`` and ``dev`` extras).
"""
