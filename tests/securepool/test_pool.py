"""Using the shared pool: load_pool on real runs, its preprocessing, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SMALL_POOL
from sklearn.datasets import load_breast_cancer, load_digits

import securepool
from securepool.rundir import RunDirError
from securepool.runner import start_job


def _holdout_raw(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The raw (unscaled) held-out rows, as partition() draws them."""
    bunch = load_digits() if dataset == "digits" else load_breast_cancer()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    order = rng.permutation(len(bunch.target))
    hold = order[: int(round(0.2 * len(bunch.target)))]
    return bunch.data[hold], bunch.target[hold]


@pytest.fixture(scope="module", params=["digits", "breast_cancer"])
def finished(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    cfg = root / "c.toml"
    cfg.write_text(SMALL_POOL.format(dataset=request.param))
    start_job(cfg, root / "run")
    return root / "run"


def test_load_pool_gives_ready_models_that_reproduce_the_test_accuracy(finished: Path) -> None:
    pool = securepool.load_pool(finished)
    manifest = json.loads((finished / "pool" / "manifest.json").read_text())
    x, y = _holdout_raw(manifest["dataset"], seed=4)
    assert pool.n_features == x.shape[1] and pool.n_classes == int(y.max()) + 1
    assert set(pool.models) == {"lr", "mlp"}
    predictions = {mid: m.predict(x) for mid, m in pool.models.items()}
    for mid, m in pool.models.items():
        error = float(np.mean(predictions[mid] != y))
        assert error == pytest.approx(m.test_error, abs=1e-9), mid
    vote = pool.vote(x)
    assert vote.shape == y.shape and set(np.unique(vote)) <= set(range(pool.n_classes))
    # the vote is the majority where the models agree
    agree = predictions["lr"] == predictions["mlp"]
    np.testing.assert_array_equal(vote[agree], predictions["lr"][agree])
    # scikit-learn style: predict is the vote as classes_, predict_proba the models' mean
    np.testing.assert_array_equal(pool.classes_, np.arange(pool.n_classes))
    np.testing.assert_array_equal(pool.predict(x), pool.classes_[vote])
    mean = np.mean([m.predict_proba(x) for m in pool.models.values()], axis=0)
    np.testing.assert_allclose(pool.predict_proba(x), mean, rtol=1e-6)


def test_the_manifest_carries_what_loading_needs(finished: Path) -> None:
    manifest = json.loads((finished / "pool" / "manifest.json").read_text())
    by_id = {m["id"]: m for m in manifest["models"]}
    assert "hidden" not in by_id["lr"] and by_id["mlp"]["hidden"] == 16
    pre = manifest["preprocessing"]
    if manifest["dataset"] == "breast_cancer":
        maxima = np.log1p(load_breast_cancer().data).max(axis=0)
        assert pre["transform"] == "log1p"
        np.testing.assert_allclose(pre["divisor"], maxima)
    else:
        assert pre == {"transform": "identity", "divisor": [16.0] * 64}
    assert manifest["converged"] is False and manifest["status"] == "not converged"


def test_a_pool_copied_out_of_its_run_loads_on_its_own(finished: Path, tmp_path: Path) -> None:
    shutil.copytree(finished / "pool", tmp_path / "shared")
    pool = securepool.load_pool(tmp_path / "shared")
    assert set(pool.models) == {"lr", "mlp"}


def test_a_changed_weights_file_is_refused_naming_it(finished: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(finished / "pool", shared)
    data = bytearray((shared / "mlp.npy").read_bytes())
    data[-3] ^= 0x40
    (shared / "mlp.npy").write_bytes(bytes(data))
    with pytest.raises(RunDirError) as info:
        securepool.load_pool(shared)
    assert info.value.file == shared / "mlp.npy"


def test_an_edited_pool_manifest_is_refused(finished: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(finished / "pool", shared)
    m = json.loads((shared / "manifest.json").read_text())
    m["converged"] = True  # pretend
    (shared / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunDirError, match="digest does not match") as info:
        securepool.load_pool(shared)
    assert info.value.file == shared / "manifest.json"


def test_a_directory_without_a_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="missing"):
        securepool.load_pool(tmp_path)


def test_predict_reads_csv_with_a_header_and_npz(tmp_path: Path) -> None:
    from crypto.errors import ConfigError
    from securepool.predict import read_input

    csv = tmp_path / "a.csv"
    csv.write_text("f0,f1,f2\n1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(read_input(csv, n_features=3), [[1, 2, 3], [4, 5, 6]])
    npz = tmp_path / "a.npz"
    np.savez(npz, x=np.ones((2, 3)), y=np.zeros(2))
    assert read_input(npz, n_features=3).shape == (2, 3)
    ragged = tmp_path / "b.csv"
    ragged.write_text("1,2,3\n4,5\n")
    with pytest.raises(ConfigError, match="different numbers of columns"):
        read_input(ragged, n_features=3)
    nan = tmp_path / "c.csv"
    nan.write_text("1,nan,3\n")
    with pytest.raises(ConfigError, match="NaN"):
        read_input(nan, n_features=3)
    txt = tmp_path / "x.txt"
    txt.write_text("1,2,3\n")
    with pytest.raises(ConfigError, match=r"\.csv or \.npz"):
        read_input(txt, n_features=3)
