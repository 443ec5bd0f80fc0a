"""CKKS encryption in worker processes: TenSEAL holds the GIL, so threads do not help.

Each worker loads the *public* context once (its bytes are sent at start-up; a secret
context cannot be pickled, so it cannot reach a worker) and then encrypts batches of
chunks. (The coordinator's sum needs no TenSEAL and runs in threads:
crypto.ckks.coefficients.) Uses the ``spawn`` start method: TenSEAL keeps a
thread pool per context, and forking a process with live threads is unsafe.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from crypto.ckks.context import PublicCKKSContext
from crypto.ckks.params import CKKSParameters
from crypto.ckks.vectors import encrypt_chunks
from crypto.errors import EncodingError

_WORKER: PublicCKKSContext | None = None
T = TypeVar("T")
R = TypeVar("R")


def _init(public_bytes: bytes, params: CKKSParameters) -> None:
    global _WORKER
    _WORKER = PublicCKKSContext.from_bytes(public_bytes, params=params)


def worker_context() -> PublicCKKSContext:
    """The public context of the current worker process (for protocol-level tasks)."""
    if _WORKER is None:
        raise EncodingError("CKKS worker used before its context was loaded")
    return _WORKER


_worker_ctx = worker_context


def _encrypt_batch(rows: NDArray[np.float64]) -> list[bytes]:
    return encrypt_chunks(_worker_ctx(), rows)


class CKKSWorkerPool:
    """A pool of worker processes that hold a public CKKS context.

    Security: workers receive the public context only; they can encrypt and add, never
    decrypt.
    """

    def __init__(self, public: PublicCKKSContext, *, workers: int) -> None:
        if workers < 1:
            raise EncodingError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._public = public
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(public.to_bytes(), public.params),
        )

    def encrypt(self, chunks: NDArray[np.float64]) -> list[bytes]:
        """:func:`encrypt_chunks`, split row-wise over the workers (same output order)."""
        batches = [b for b in np.array_split(chunks, self.workers) if len(b)]
        out: list[bytes] = []
        for part in self._pool.map(_encrypt_batch, batches):
            out.extend(part)
        return out

    def map(self, fn: Callable[[T], R], batches: Sequence[T]) -> list[R]:
        """Run a top-level function of this package or protocols/ on each batch, in order.

        ``fn`` runs in a worker and may call :func:`worker_context`.
        """
        return list(self._pool.map(fn, batches))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> CKKSWorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
