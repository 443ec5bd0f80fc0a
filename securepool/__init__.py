"""SecurePool: federated learning with a random model shared pool.

The Python API: :func:`run` runs a job (as ``securepool run`` does) and returns its
summary; :func:`load_pool` gives the trained pool, estimator-style (see
:mod:`securepool.pool`). What the library says goes to :mod:`logging` under the logger
``"securepool"`` (``securepool.runner``: the run's start, banners, iterations and end;
``securepool.pool``: a loaded pool; ``securepool.node``: a node's refusals). Unconfigured,
Python shows its warnings on stderr; the ``securepool`` command keeps its own console.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from securepool.api import run
    from securepool.pool import Pool, load_pool

__all__ = ["Pool", "__version__", "load_pool", "run"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("securepool")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    # lazy: `import securepool` stays cheap (no torch) for the CLI's bad-input paths
    if name in ("load_pool", "Pool"):
        from securepool import pool

        return getattr(pool, name)
    if name == "run":
        from securepool.api import run

        return run
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'securepool' has no attribute {name!r}")
