"""P6 trust check on privileged decrypted summaries.

* :mod:`.config`     the ``[trust]`` section
* :mod:`.screening`  the screens run before the vote (near-duplicates, too central,
  misaligned)
* :mod:`.voting`     the voting rules that elect the trusted participant
* :mod:`.difference` difference measures and threshold rules
* :mod:`.auditor`    the auditor role: judges summaries, votes, flags, signs
* :mod:`.registry`   untrusted marks and how long they last
* :mod:`.ledger`     the coordinator's side: flags, marks and the verdicts it acted on
* :mod:`.he_binding` HE mode: the auditor's answer to a fold request, and its check
* :mod:`.check`      plaintext mode's count-sketch seed (drawn after the updates) and
  the public one the ``kernel`` attacker aims at

The auditor runs as a node of its own (securepool/node/auditor.py), reached through the
coordinator (securepool/coordinator), in every runtime.
"""
