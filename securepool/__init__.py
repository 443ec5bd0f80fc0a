"""SecurePool: federated learning with a random model shared pool.

The public entry point for using a trained pool is :func:`load_pool` (see
:mod:`securepool.pool`); runs are started with the ``securepool`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from securepool.pool import Pool, load_pool

__all__ = ["Pool", "load_pool"]


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
    raise AttributeError(f"module 'securepool' has no attribute {name!r}")
