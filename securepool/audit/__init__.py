"""Privacy audits of a finished run directory: ``securepool audit RUN_DIR --out REPORT_DIR``.

One module per check (:mod:`.dp`, :mod:`.membership`, :mod:`.canaries`,
:mod:`.transcripts`; gradient inversion lives in :mod:`.inversion` when present), the
run directory's loading and verification in :mod:`.inputs`, the report writers in
:mod:`.report` and the command in :mod:`.command`. Importing this package is cheap: the
checks import torch only when they run.
"""
