"""The participant node: one agency's process and everything only it may hold.

* :mod:`.keys`     its identity key file (``securepool keygen``; 0600, never sent);
* :mod:`.records`  its records, from its own CSV/NPZ file or a built-in partition (demos);
* :mod:`.wire`     the node's stage names and the framing of stage messages and replies;
* :mod:`.app`      :class:`~.app.ParticipantNode`, the :class:`~securepool.runtime.driver.
  NodeApp` that trains and answers the beacon, plaintext and SecAgg+ stages;
* :mod:`.serve`    the entry point of a node in its own OS process (multiprocess runtime).
"""
