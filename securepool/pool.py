"""Using the shared pool: :func:`load_pool` gives an estimator-style pool of ready models.

    import securepool
    pool = securepool.load_pool("runs/demo")      # a run directory, or its pool/ copy
    pool.predict(X)                               # the pool's vote per row (classes_)
    pool.predict_proba(X)                         # the mean of its models' probabilities
    pool.models["lr"].predict(X)                  # one model of the pool
    securepool.load_pool("runs/demo", factories=["mypkg.nets:small"])  # custom models

``X`` holds *raw* rows (scikit-learn conventions: a 2-D numpy array, a list of rows or a
pandas DataFrame, rows x ``n_features_in_``); the manifest's preprocessing is applied and
every value is checked as ``securepool predict`` checks it (the same function:
:func:`securepool.predict.check_rows`), a bad one being a ConfigError naming its cell.

Everything is checked before a model is built: a run directory against its run manifest
(:func:`securepool.rundir.verify_run_dir`), a bare pool directory against its own
manifest (format, digest, every weight file's sha256), and each weight vector against
the layout its architecture gives (a custom model: the layout its factory builds now,
names and shapes). A mismatch is a :class:`~securepool.rundir.RunDirError` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from crypto.errors import ConfigError
from securepool.models import Architecture, build_model, layout_of, load_flat
from securepool.predict import check_rows
from securepool.preprocessing import Preprocessing
from securepool.rundir import MANIFEST, RunDirError, verify_pool_dir, verify_run_dir
from securepool.tables import TableSchema, encode_features, rows_table

log = logging.getLogger("securepool.pool")


@dataclass(frozen=True)
class RowReader:
    """Raw rows -> the models' inputs: shape, numbers and range checked, then the pool's
    preprocessing applied. ``feature_names``: the model's input columns, when the
    manifest names them (``table.columns``, dataset = "csv"); a DataFrame is then read
    by column name (order free, extra columns ignored), otherwise by position.
    ``schema`` (dataset = "csv"): the agencies' table, so rows as the agencies hold
    them are read too: a DataFrame with the feature columns by name, or rows of
    ``len(schema.features)`` cells, a categorical feature holding its category, which is
    one-hot encoded over the manifest's vocabulary (an unknown one is an error)."""

    n_features: int
    preprocessing: Preprocessing
    feature_names: tuple[str, ...] | None = None
    schema: TableSchema | None = None

    def _table_rows(self, X: Any) -> NDArray[np.float64] | None:
        """``X`` encoded through the schema when it holds the agencies' raw feature
        columns (None when it is already the model's inputs)."""
        schema = self.schema
        if schema is None:
            return None
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):
            columns = [str(c) for c in X.columns]
            if not all(f in columns for f in schema.features):
                return None
            rows = X[list(schema.features)].to_numpy(dtype=object).tolist()
        elif schema.categorical and isinstance(X, list | tuple | np.ndarray):
            rows = [list(r) for r in X] if len(X) and np.ndim(X[0]) == 1 else []
            if not rows or any(len(r) != len(schema.features) for r in rows):
                return None
        else:
            return None
        x, problems = encode_features(rows_table(rows, schema.features, source="X"), schema)
        if problems:
            raise ConfigError(problems)
        return x

    def rows(self, X: Any) -> NDArray[np.float64]:
        """``X`` as checked float64 rows (rows x n_features); ConfigError otherwise."""
        encoded = self._table_rows(X)
        if encoded is not None:
            names = self.feature_names or ()
            return check_rows(
                encoded,
                n_features=self.n_features,
                preprocessing=self.preprocessing,
                source="X",
                where=lambda r, c: f"X[{r}] ({names[c] if c < len(names) else c})",
            )
        columns: list[str] | None = None
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
            columns = [str(c) for c in X.columns]
            if self.feature_names is not None:
                missing = [f for f in self.feature_names if f not in columns]
                if missing:
                    raise ConfigError(
                        [f"X: the DataFrame has no column(s) {', '.join(map(repr, missing))}"]
                    )
                X = X[list(self.feature_names)]
                columns = list(self.feature_names)
            X = X.to_numpy()
        try:
            x = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError([f"X: not a table of numbers ({exc})"]) from None
        if x.ndim == 1:
            raise ConfigError(
                [
                    f"X: expected rows x {self.n_features} features (2-D), got a 1-D array of "
                    f"shape {x.shape}; one row is X.reshape(1, -1)"
                ]
            )

        def where(r: int, c: int) -> str:
            name = f" ({columns[c]})" if columns is not None and c < len(columns) else ""
            return f"X[{r}, {c}]{name}"

        return check_rows(
            x,
            n_features=self.n_features,
            preprocessing=self.preprocessing,
            source="X",
            where=where,
        )

    def tensor(self, X: Any) -> torch.Tensor:
        """The models' float32 inputs for raw rows ``X``."""
        return torch.from_numpy(self.preprocessing.apply(self.rows(X)))


@dataclass(frozen=True)
class PoolModel:
    """One model of the pool, usable on its own (scikit-learn style)."""

    id: str
    arch: str
    module: nn.Module  # in eval mode, weights loaded
    test_error: float
    error_bound: float
    reader: RowReader
    classes_: NDArray[Any]
    factory: str = ""  # arch "custom": the "package.module:function" that built it

    @property
    def n_features_in_(self) -> int:
        return self.reader.n_features

    def _proba(self, x: torch.Tensor) -> NDArray[np.float64]:
        with torch.no_grad():
            out: NDArray[np.float64] = torch.softmax(self.module(x), dim=1).double().numpy()
        return out

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Class probabilities, rows x len(classes_), for raw rows ``X``."""
        return self._proba(self.reader.tensor(X))

    def predict(self, X: Any) -> NDArray[Any]:
        """The predicted class (an element of ``classes_``) of every raw row of ``X``."""
        out: NDArray[Any] = self.classes_[self.predict_proba(X).argmax(axis=1)]
        return out


@dataclass(frozen=True)
class Pool:
    """The released shared pool: its models, the preprocessing, and what the run said.

    Scikit-learn conventions: :meth:`predict` / :meth:`predict_proba` on raw rows,
    ``classes_``, ``n_features_in_``; ``models[id]`` is each model on its own.
    """

    path: Path
    models: Mapping[str, PoolModel]
    preprocessing: Preprocessing
    n_features: int
    n_classes: int
    converged: bool
    manifest: Mapping[str, Any]
    reader: RowReader
    classes_: NDArray[Any]

    @property
    def n_features_in_(self) -> int:
        return self.n_features

    def probabilities(self, raw: Any) -> dict[str, NDArray[np.float32]]:
        """Per model: class probabilities (rows x n_classes) for raw, unscaled rows."""
        x = self.reader.tensor(raw)
        return {mid: m._proba(x).astype(np.float32) for mid, m in self.models.items()}

    def vote(self, raw: Any) -> NDArray[np.int64]:
        """The pool's ensemble vote as class indices (0 .. n_classes - 1): the class most
        models predict; a tie goes to the tied class with the highest summed probability."""
        probs = self._probabilities_or_refuse(raw)
        stack = np.stack(list(probs.values()))  # models x rows x classes
        counts = np.zeros(stack.shape[1:], dtype=np.float64)
        for p in stack:
            counts[np.arange(p.shape[0]), p.argmax(axis=1)] += 1.0
        # votes first; summed probability (< number of models) only breaks ties
        score = counts * (len(stack) + 1) + stack.sum(axis=0)
        out: NDArray[np.int64] = score.argmax(axis=1).astype(np.int64)
        return out

    def predict(self, X: Any) -> NDArray[Any]:
        """The pool's vote (:meth:`vote`) as classes (elements of ``classes_``), one per
        raw row of ``X``. It is the majority of the models, which can differ from the
        argmax of :meth:`predict_proba` when they disagree."""
        out: NDArray[Any] = self.classes_[self.vote(X)]
        return out

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """The mean of the models' class probabilities, rows x len(classes_)."""
        probs = self._probabilities_or_refuse(X)
        out: NDArray[np.float64] = np.mean(
            np.stack([p.astype(np.float64) for p in probs.values()]), axis=0
        )
        return out

    def _probabilities_or_refuse(self, raw: Any) -> dict[str, NDArray[np.float32]]:
        if not self.models:
            raise RunDirError(self.path, "the pool holds no model (none passed acceptance)")
        return self.probabilities(raw)


def load_pool(path: str | Path, *, factories: Collection[str] = ()) -> Pool:
    """Load and verify a shared pool from a run directory or a pool directory.

    ``factories``: the custom-model factories (``"package.module:function"``) this
    process may import and call to rebuild the pool's ``arch = "custom"`` models.

    Raises :class:`~securepool.rundir.RunDirError` (a ConfigError) naming the file when
    a manifest, a weight file or a layout does not match, the run is not finished, or a
    custom model's factory is not among ``factories``, cannot be imported here or
    builds another layout than the one the pool was trained with.

    Security: a pool names its custom models' factories in its manifest, and rebuilding
    one imports that module and calls that function; the manifest's digest is no
    signature, so a pool from elsewhere could name any importable callable. Nothing is
    imported or called unless the caller names the factory in ``factories``.
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
        # dataset = "csv": the classes' names and the model's input columns, in order
        table = manifest.get("table") or {}
        classes = np.asarray(table.get("classes", list(range(n_classes))))
        names = table.get("columns")
        feature_names = None if names is None else tuple(str(n) for n in names)
        schema = TableSchema.from_json(table) if "features" in table else None
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(mpath, f"no usable preprocessing / shape ({exc})") from None
    if pre.n_features != n_features:
        raise RunDirError(mpath, "preprocessing and n_features disagree")
    if classes.shape != (n_classes,):
        raise RunDirError(mpath, f"classes {classes.tolist()} are not {n_classes} labels")
    if feature_names is not None and len(feature_names) != n_features:
        raise RunDirError(mpath, f"table.columns names {len(feature_names)}, not {n_features}")
    reader = RowReader(n_features, pre, feature_names, schema)
    models: dict[str, PoolModel] = {}
    for entry in manifest["models"]:
        models[str(entry["id"])] = _model(pool_dir, mpath, entry, reader, classes, factories)
    pool = Pool(
        path=pool_dir,
        models=models,
        preprocessing=pre,
        n_features=n_features,
        n_classes=n_classes,
        converged=bool(manifest["converged"]),
        manifest=manifest,
        reader=reader,
        classes_=classes,
    )
    log.info("loaded pool %s: %d model(s) %s", pool_dir, len(models), ", ".join(models))
    if not pool.converged:
        log.warning(
            "pool %s: %s; its models passed acceptance on their own only",
            pool_dir,
            manifest.get("stop_reason") or "the run did not converge",
        )
    return pool


def _model(
    pool_dir: Path,
    mpath: Path,
    entry: Mapping[str, Any],
    reader: RowReader,
    classes: NDArray[Any],
    factories: Collection[str],
) -> PoolModel:
    """One manifest entry as a ready module: built, its layout checked, weights loaded."""
    mid = str(entry["id"])
    try:
        arch = Architecture(entry["arch"])
    except ValueError:
        raise RunDirError(mpath, f"unknown architecture {entry['arch']!r}") from None
    factory = str(entry.get("factory", ""))
    if arch is Architecture.CUSTOM and not factory:
        raise RunDirError(mpath, f"model {mid!r}: arch 'custom' without a factory")
    if factory and factory not in factories:
        raise RunDirError(
            mpath,
            f"model {mid!r} is built by factory {factory!r}, code this process would import "
            f"and call: if you trust it, name it (load_pool(..., factories=[{factory!r}]), "
            f"securepool predict --factory {factory})",
        )
    try:
        module = build_model(
            arch,
            n_features=reader.n_features,
            n_classes=len(classes),
            seed=int(entry["seed"]),
            hidden=entry.get("hidden"),
            factory=factory,
        )
    except ConfigError as exc:
        raise RunDirError(
            mpath,
            f"model {mid!r} cannot be rebuilt: {'; '.join(exc.problems)} (the pool was "
            f"trained with factory {factory!r}: it must be importable where the pool is loaded)",
        ) from None
    layout = layout_of(module)
    names, shapes = list(layout.names), [list(s) for s in layout.shapes]
    if shapes != entry["layout"]["shapes"] or names != entry["layout"]["names"]:
        what = f"factory {factory!r} now builds" if factory else "its arch gives"
        raise RunDirError(
            mpath,
            f"model {mid!r}: the layout {what} ({len(names)} tensors, {layout.size} "
            "parameters) differs from the one the pool was trained with (names or shapes)",
        )
    file = pool_dir / str(entry["file"])
    vector = np.load(file, allow_pickle=False)
    if vector.dtype != np.float32 or vector.shape != (layout.size,):
        raise RunDirError(file, f"holds {vector.dtype} {vector.shape}, needs ({layout.size},)")
    if not np.all(np.isfinite(vector)):
        raise RunDirError(file, "holds NaN or infinite weights")
    load_flat(module, vector, layout)
    module.eval()
    return PoolModel(
        id=mid,
        arch=arch.value,
        module=module,
        test_error=float(entry["test_error"]),
        error_bound=float(entry["error_bound"]),
        reader=reader,
        classes_=classes,
        factory=factory,
    )


__all__ = ["Pool", "PoolModel", "RowReader", "load_pool"]
