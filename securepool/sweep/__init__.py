"""``securepool sweep``: privacy–utility grids of whole runs (see :mod:`.command`)."""
