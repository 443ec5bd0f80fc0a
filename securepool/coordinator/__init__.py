"""The coordinator: the S401-S406 loop over a Driver; it sees only protocol messages.

* :mod:`.loop`     :class:`~.loop.PoolCoordinator` (pool, schedule, beacon and protocol
  servers, checkpoint state);
* :mod:`.privacy`  the participants' self-reported privacy spend, for the summary;
* :mod:`.launch`   build a multiprocess run (one OS process per participant node).
"""
