"""The coordinator: the S401-S406 loop over a Driver; it sees only protocol messages.

* :mod:`.loop`     :class:`~.loop.PoolCoordinator` (pool, schedule, connecting, the
  beacon, the train stage, evaluation, checkpoint state) and its stage table;
* :mod:`.modes`    one strategy object per aggregation mode (:mod:`.modes.plaintext`,
  :mod:`.modes.mask`, :mod:`.modes.he`): the stages after train and how a group's
  replies become its aggregate;
* :mod:`.trust`    :class:`~.trust.TrustRelay`, the trust check's coordinator side the
  modes call: the auditor's verdicts, the mask post-check, the ledger;
* :mod:`.records`  what an iteration and a group produce, and the loop's state;
* :mod:`.privacy`  the participants' self-reported privacy spend, for the summary;
* :mod:`.launch`   build the coordinator and its nodes for each runtime;
* :mod:`.flower`   the coordinator inside Flower's ServerApp.
"""
