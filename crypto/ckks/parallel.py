"""CKKS work in worker processes: TenSEAL holds the GIL, so threads do not help.

Each worker loads the *public* context once (its bytes are sent at start-up; a secret
context cannot be pickled, so it cannot reach a worker) and then encrypts batches of
chunks or sums batches of uploads. Uses the ``spawn`` start method: TenSEAL keeps a
thread pool per context, and forking a process with live threads is unsafe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from crypto.ckks.context import PublicCKKSContext
from crypto.ckks.params import CKKSParameters
from crypto.ckks.vectors import CiphertextSum, encrypt_chunks, load_chunk
from crypto.errors import CiphertextError, EncodingError, SecurePoolError

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


def _sum_batch(
    uploads: list[tuple[int, list[bytes]]], n_chunks: int
) -> tuple[list[bytes] | None, list[int], dict[int, str]]:
    """Sum the uploads that load; report the index and reason of each that does not."""
    acc = CiphertextSum(_worker_ctx(), n_chunks=n_chunks)
    added: list[int] = []
    failed: dict[int, str] = {}
    for index, blobs in uploads:
        try:
            acc.add(blobs)
        except CiphertextError as exc:
            failed[index] = str(exc)
        else:
            added.append(index)
    return (acc.to_bytes() if added else None), added, failed


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

    def sum(
        self, uploads: Sequence[Sequence[bytes]], *, n_chunks: int
    ) -> tuple[list[bytes] | None, list[int], dict[int, str]]:
        """Sum chunked uploads; returns (sum or None, indices added, {index: reason})."""
        indexed = [(i, list(u)) for i, u in enumerate(uploads)]
        batches = [indexed[w :: self.workers] for w in range(self.workers)]
        futures = [self._pool.submit(_sum_batch, b, n_chunks) for b in batches if b]
        total = CiphertextSum(self._public, n_chunks=n_chunks)
        added: list[int] = []
        failed: dict[int, str] = {}
        for fut in futures:
            try:
                partial, ok, bad = fut.result()
            except SecurePoolError as exc:  # pragma: no cover - a worker-level failure
                raise CiphertextError(f"CKKS worker failed: {exc}") from exc
            if partial is not None:
                total.add(partial)
            added.extend(ok)
            failed.update(bad)
        return (total.to_bytes() if added else None), sorted(added), failed

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


UploadCheck = Callable[[bytes, bytes, int], Sequence[bytes]]


def _stream_worker(
    conn: Connection, public_bytes: bytes, params: CKKSParameters, check: UploadCheck
) -> None:
    """Worker loop of :class:`SumWorkers`: add streamed uploads until told to flush."""
    public = PublicCKKSContext.from_bytes(public_bytes, params=params)
    acc: CiphertextSum | None = None
    added: list[int] = []
    failed: dict[int, str] = {}
    while True:
        head = conn.recv()
        if head[0] == "stop":
            return
        if head[0] == "flush":
            conn.send(((acc.to_bytes() if acc is not None else None), added, failed))
            acc, added, failed = None, [], {}
            continue
        _, index, digest, n_chunks = head
        upload = conn.recv_bytes()
        try:
            vectors = [load_chunk(public, b) for b in check(upload, digest, n_chunks)]
        except SecurePoolError as exc:
            failed[index] = f"{type(exc).__name__}: {exc}"
            continue
        if acc is None:
            acc = CiphertextSum(public, n_chunks=n_chunks)
        acc.add_loaded(vectors)
        added.append(index)


class SumWorkers:
    """Persistent worker processes that check and add uploads streamed to them over pipes.

    Each worker keeps a running sum, so an upload crosses a process boundary once (as raw
    bytes, not pickled) and only one partial sum per worker comes back. ``check`` (a
    top-level function, so ``spawn`` can import it) turns an upload into its chunk blobs
    and raises a :class:`SecurePoolError` for a bad one, which is then reported, not added.

    Security: workers hold the public context only.
    """

    def __init__(self, public: PublicCKKSContext, *, workers: int, check: UploadCheck) -> None:
        if workers < 1:
            raise EncodingError(f"workers must be >= 1, got {workers}")
        ctx = multiprocessing.get_context("spawn")
        self._public = public
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for _ in range(workers):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_stream_worker,
                args=(theirs, public.to_bytes(), public.params, check),
                daemon=True,
            )
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)

    def sum(
        self, uploads: Sequence[tuple[bytes, bytes]], *, n_chunks: int
    ) -> tuple[list[bytes] | None, list[int], dict[int, str]]:
        """Check and add ``(upload, digest)`` pairs; (sum or None, indices added, failures)."""
        for index, (upload, digest) in enumerate(uploads):
            conn = self._conns[index % len(self._conns)]
            conn.send(("add", index, digest, n_chunks))
            conn.send_bytes(upload)
        total = CiphertextSum(self._public, n_chunks=n_chunks)
        added: list[int] = []
        failed: dict[int, str] = {}
        for conn in self._conns:
            conn.send(("flush",))
        for conn in self._conns:
            partial, ok, bad = conn.recv()
            if partial is not None:
                total.add(partial)
            added.extend(ok)
            failed.update(bad)
        return (total.to_bytes() if added else None), sorted(added), failed

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs, strict=True):
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("stop",))
            conn.close()
            proc.join(timeout=10)
        self._conns, self._procs = [], []
