"""Using the shared pool: :func:`load_pool` gives ready torch models and their preprocessing.

    import securepool
    pool = securepool.load_pool("runs/demo")         # a run directory, or its pool/ copy
    votes = pool.vote(raw_features)                  # rows x n_features, unscaled
    per_model = pool.predict(raw_features)           # {model id: predicted classes}

Everything is checked before a model is built: a run directory against its run manifest
(:func:`securepool.rundir.verify_run_dir`), a bare pool directory against its own
manifest (format, digest, every weight file's sha256), and each weight vector against
the layout its architecture gives. A mismatch is a :class:`~securepool.rundir.RunDirError`
naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from securepool.models import Architecture, build_model, layout_of, load_flat
from securepool.preprocessing import Preprocessing
from securepool.rundir import MANIFEST, RunDirError, verify_pool_dir, verify_run_dir


@dataclass(frozen=True)
class PoolModel:
    id: str
    arch: str
    module: nn.Module  # in eval mode, weights loaded
    test_error: float
    error_bound: float


@dataclass(frozen=True)
class Pool:
    """The released shared pool: its models, the preprocessing, and what the run said."""

    path: Path
    models: Mapping[str, PoolModel]
    preprocessing: Preprocessing
    n_features: int
    n_classes: int
    converged: bool
    manifest: Mapping[str, Any]

    def probabilities(self, raw: NDArray[Any]) -> dict[str, NDArray[np.float32]]:
        """Per model: class probabilities (rows x n_classes) for raw, unscaled features."""
        x = torch.from_numpy(self.preprocessing.apply(raw))
        out = {}
        with torch.no_grad():
            for mid, m in self.models.items():
                out[mid] = torch.softmax(m.module(x), dim=1).numpy().astype(np.float32)
        return out

    def predict(self, raw: NDArray[Any]) -> dict[str, NDArray[np.int64]]:
        """Per model: the predicted class of every row."""
        return {m: p.argmax(axis=1).astype(np.int64) for m, p in self.probabilities(raw).items()}

    def vote(self, raw: NDArray[Any]) -> NDArray[np.int64]:
        """The pool's ensemble vote: the class most models predict; a tie goes to the
        tied class with the highest summed probability."""
        probs = self.probabilities(raw)
        if not probs:
            raise RunDirError(self.path, "the pool holds no model (none passed acceptance)")
        stack = np.stack(list(probs.values()))  # models x rows x classes
        counts = np.zeros(stack.shape[1:], dtype=np.float64)
        for p in stack:
            counts[np.arange(p.shape[0]), p.argmax(axis=1)] += 1.0
        # votes first; summed probability (< number of models) only breaks ties
        score = counts * (len(stack) + 1) + stack.sum(axis=0)
        out: NDArray[np.int64] = score.argmax(axis=1).astype(np.int64)
        return out


def load_pool(path: str | Path) -> Pool:
    """Load and verify a shared pool from a run directory or a pool directory.

    Raises :class:`~securepool.rundir.RunDirError` (a ConfigError) naming the file when
    a manifest, a weight file or a layout does not match, or the run is not finished.
    """
    path = Path(path)
    if (path / MANIFEST).exists():
        info = verify_run_dir(path)
        if not info.finished:
            raise RunDirError(
                path / MANIFEST,
                f"the run is not finished (iteration {info.iteration}): it has no pool yet",
            )
        pool_dir = path / "pool"
        manifest = dict(info.pool_manifest or {})
    else:
        pool_dir = path / "pool" if (path / "pool" / "manifest.json").exists() else path
        manifest = verify_pool_dir(pool_dir)
    mpath = pool_dir / "manifest.json"
    try:
        pre = Preprocessing.from_json(manifest["preprocessing"])
        n_features, n_classes = int(manifest["n_features"]), int(manifest["n_classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(mpath, f"no usable preprocessing / shape ({exc})") from None
    if pre.n_features != n_features:
        raise RunDirError(mpath, "preprocessing and n_features disagree")
    models: dict[str, PoolModel] = {}
    for entry in manifest["models"]:
        file = pool_dir / str(entry["file"])
        try:
            arch = Architecture(entry["arch"])
        except ValueError:
            raise RunDirError(mpath, f"unknown architecture {entry['arch']!r}") from None
        module = build_model(
            arch,
            n_features=n_features,
            n_classes=n_classes,
            seed=int(entry["seed"]),
            hidden=entry.get("hidden"),
        )
        layout = layout_of(module)
        if [list(s) for s in layout.shapes] != entry["layout"]["shapes"]:
            raise RunDirError(mpath, f"model {entry['id']!r}: layout does not match its arch")
        vector = np.load(file, allow_pickle=False)
        if vector.dtype != np.float32 or vector.shape != (layout.size,):
            raise RunDirError(file, f"holds {vector.dtype} {vector.shape}, needs ({layout.size},)")
        if not np.all(np.isfinite(vector)):
            raise RunDirError(file, "holds NaN or infinite weights")
        load_flat(module, vector, layout)
        module.eval()
        models[str(entry["id"])] = PoolModel(
            id=str(entry["id"]),
            arch=arch.value,
            module=module,
            test_error=float(entry["test_error"]),
            error_bound=float(entry["error_bound"]),
        )
    return Pool(
        path=pool_dir,
        models=models,
        preprocessing=pre,
        n_features=n_features,
        n_classes=n_classes,
        converged=bool(manifest["converged"]),
        manifest=manifest,
    )


__all__ = ["Pool", "PoolModel", "load_pool"]
