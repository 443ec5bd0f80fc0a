"""How big a run is, from its config alone: absurd sizes are bad input (exit 2 naming
the key), found before anything is built, not an out-of-memory crash or an overflow
deep inside numpy or torch (exit 3).

What is checked (no torch, no data loaded: the built-in datasets' sizes are known):

* integers that reach C code: ``run.torch_threads`` (at most :data:`MAX_THREADS`) and
  every ``pool.models[i].seed`` (torch seeds are 64-bit: ``0 .. 2**63 - 1``);
* ``data.participants`` against a built-in dataset's records: after the holdout every
  participant needs ``data.min_records`` (exact for an IID split, a necessary bound
  for a Dirichlet one);
* the run's memory, estimated up front against this machine's physical memory
  (:func:`memory_limit`). Every participant's node keeps working copies of the models
  it trains, its masked input and its share of the protocol state, about
  :data:`BYTES_PER_PARAMETER_PER_NODE` bytes per model parameter (27 measured in mask
  mode with 10 and 20 participants and a 2.6-million-parameter mlp), plus
  :data:`BYTES_PER_PARAMETER` for the coordinator's globals, checkpoints and
  acceptance; each participant's trust summary is ``trust.sketch_dim`` values per
  model. The estimate is a floor: HE ciphertexts are larger still.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from securepool.architecture import Architecture

if TYPE_CHECKING:
    from securepool.config import RunConfig

MAX_THREADS = 1024
SEED_MAX = 2**63 - 1
BYTES_PER_PARAMETER_PER_NODE = 32
BYTES_PER_PARAMETER = 64
BYTES_PER_SKETCH_VALUE = 32  # a float64 per slot, in the node, the wire, the auditor, a copy
#: a built-in dataset's records (checked against the loaded data by the tests)
BUILTIN_RECORDS = {"digits": 1797, "breast_cancer": 569}
_FALLBACK_MEMORY = 16 * 2**30


def memory_limit() -> int:
    """This machine's physical memory in bytes (16 GiB where the OS does not say)."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return _FALLBACK_MEMORY
    return int(pages) * int(size) if pages > 0 and size > 0 else _FALLBACK_MEMORY


def parameters(
    arch: Architecture, *, n_features: int, n_classes: int, hidden: int | None
) -> int | None:
    """The number of trainable parameters of :func:`securepool.models.build_model`'s model
    (None for a custom model: only building it tells)."""
    if arch is Architecture.CUSTOM:
        return None
    if arch is Architecture.LOGREG:
        return n_features * n_classes + n_classes
    if arch is Architecture.MLP:
        h = 64 if hidden is None else hidden
        return n_features * h + h + h * n_classes + n_classes
    # cnn: two 3x3 convolutions (1 -> 16 -> 32) with GroupNorm, then a linear layer of 128
    return (16 * 9 + 16) + 2 * 16 + (32 * 16 * 9 + 32) + 2 * 32 + 128 * n_classes + n_classes


def _bytes(n: float) -> str:
    if n >= 1e18:
        return f"{n:.1e} bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def size_problems(
    cfg: RunConfig,
    *,
    limit: int | None = None,
    custom: Mapping[int, int] | None = None,
    shape: tuple[int, int] | None = None,
) -> list[str]:
    """Every size in ``cfg`` that cannot run (see the module doc), one line each naming
    its key; ``limit`` is the memory in bytes (default: :func:`memory_limit`).

    ``custom`` gives the parameter counts of custom models (by index in
    ``pool.models``), known once they are built (:func:`securepool.runner.check_components`);
    a custom model without one counts for nothing in the estimate. ``shape``: (model
    inputs, classes) of agency tables whose config leaves them to the files (read by
    :func:`securepool.data.federation`); without it such a run's memory is not estimated."""
    from securepool.config import Partition, Runtime

    out: list[str] = []
    if cfg.run.torch_threads > MAX_THREADS:
        out.append(f"run.torch_threads must be <= {MAX_THREADS}, got {cfg.run.torch_threads}")
    for i, m in enumerate(cfg.pool.models):
        if not 0 <= m.seed <= SEED_MAX:
            out.append(f"pool.models[{i}].seed must be in 0 .. 2**63 - 1, got {m.seed}")
    d = cfg.data
    records = BUILTIN_RECORDS.get(d.dataset.value)
    if d.participants < 3 or d.min_records < 2:
        return out  # refused by the data section already
    if records is not None and cfg.run.runtime is not Runtime.FLOWER and 0 < d.holdout_fraction < 1:
        rest = records - int(round(d.holdout_fraction * records))
        most = rest // d.min_records
        if d.participants > most:
            uneven = (
                " (a Dirichlet split is uneven: fewer may be needed)"
                if d.partition is Partition.DIRICHLET
                else ""
            )
            out.append(
                f"data.participants = {d.participants}: the {d.dataset.value} data has "
                f"{rest} records after the holdout ({records} x (1 - holdout_fraction "
                f"{d.holdout_fraction:g})), {rest // d.participants} per participant; "
                f"data.min_records = {d.min_records} allows at most {most} participants"
                f"{uneven}"
            )
            return out  # the memory estimate would blame the same key again
    shape = shape or d.declared_shape()
    if not cfg.pool.models or shape is None:
        return out
    n_features, n_classes = shape
    nodes = d.participants if cfg.run.runtime is not Runtime.FLOWER else 0
    per_model = {
        i: (custom or {}).get(i, 0)
        if m.arch is Architecture.CUSTOM
        else parameters(m.arch, n_features=n_features, n_classes=n_classes, hidden=m.hidden) or 0
        for i, m in enumerate(cfg.pool.models)
    }
    model_bytes = {
        i: p * (BYTES_PER_PARAMETER_PER_NODE * nodes + BYTES_PER_PARAMETER)
        for i, p in per_model.items()
    }
    sketch_bytes = (
        cfg.trust.sketch_dim * BYTES_PER_SKETCH_VALUE * d.participants * len(per_model)
        if cfg.trust.enabled
        else 0
    )
    total = sum(model_bytes.values()) + sketch_bytes
    cap = memory_limit() if limit is None else limit
    if total <= cap:
        return out
    need = f"the run would need about {_bytes(total)} of memory, more than this machine's "
    need += f"{_bytes(cap)}"
    biggest = max(model_bytes, key=lambda i: model_bytes[i])
    if sketch_bytes > model_bytes[biggest]:
        out.append(
            f"trust.sketch_dim = {cfg.trust.sketch_dim}: {need} ({_bytes(sketch_bytes)} "
            f"for {d.participants} participants' summaries of {cfg.trust.sketch_dim} values "
            "per model); use a smaller trust.sketch_dim"
        )
        return out
    m = cfg.pool.models[biggest]
    key = f"pool.models[{biggest}]"
    if m.hidden:
        key += f".hidden = {m.hidden}"
    elif m.factory:
        key += f".factory = {m.factory!r}"
    out.append(
        f"{key}: {need}; model {m.id!r} has {per_model[biggest]:,} parameters "
        f"({_bytes(model_bytes[biggest])} with {nodes} participants); use a smaller model"
    )
    return out
