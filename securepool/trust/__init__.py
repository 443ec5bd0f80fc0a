"""P6 trust check on privileged decrypted summaries.

* :mod:`.config`     the ``[trust]`` section
* :mod:`.voting`     the voting rules that elect the trusted participant
* :mod:`.difference` difference measures and threshold rules
* :mod:`.auditor`    the auditor role: opens sealed summaries, votes, flags, signs
* :mod:`.registry`   untrusted marks and how long they last
* :mod:`.check`      TrustCheck: the loop's TrustHooks, wiring the above together
"""
