"""``arch = "custom"``: the user's own torch module, from a short real run (in-process,
mask mode) to load_pool predicting on raw rows, and every way its factory is refused:
in the config, when the run starts (before anything is written), and at load time."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import custom_model_helpers
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

import securepool
from crypto.errors import ConfigError
from securepool.cli import main
from securepool.config import parse_config
from securepool.rundir import RunDirError, seal_pool_manifest
from securepool.runner import start_job

GOOD = "custom_model_helpers:small_net"

BASE = """
[run]
seed = 4
[data]
dataset = "breast_cancer"
participants = 6
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[[pool.models]]
id = "net"
arch = "custom"
seed = 2
factory = "{factory}"
[training]
epochs = 2
lr = 0.3
momentum = 0.9
[convergence]
max_iterations = 1
[acceptance]
max_error_bound = 1.0
"""


def _holdout_raw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The raw (unscaled) held-out rows, as partition() draws them (see test_pool)."""
    bunch = load_breast_cancer()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    order = rng.permutation(len(bunch.target))
    hold = order[: int(round(0.2 * len(bunch.target)))]
    return bunch.data[hold], bunch.target[hold]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("custom")
    cfg = root / "c.toml"
    cfg.write_text(BASE.format(factory=GOOD))
    start_job(cfg, root / "run")
    return root / "run"


def test_a_custom_model_trains_and_load_pool_rebuilds_it_with_its_factory(
    finished: Path,
) -> None:
    manifest = json.loads((finished / "pool" / "manifest.json").read_text())
    net = {m["id"]: m for m in manifest["models"]}["net"]
    assert net["arch"] == "custom" and net["factory"] == GOOD
    assert net["layout"]["names"] == [
        "inp.weight",
        "inp.bias",
        "norm.weight",
        "norm.bias",
        "out.weight",
        "out.bias",
    ]
    pool = securepool.load_pool(finished, factories=[GOOD])
    model = pool.models["net"]
    assert model.arch == "custom" and model.factory == GOOD
    assert isinstance(model.module, custom_model_helpers.SmallNet)
    # the trained weights on raw rows reproduce the run's own held-out test error
    x, y = _holdout_raw(seed=4)
    for mid, m in pool.models.items():
        error = float(np.mean(m.predict(x) != y))
        assert error == pytest.approx(m.test_error, abs=1e-9), mid
    proba = model.predict_proba(x)
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(np.unique(pool.predict(x))) <= {0, 1}


def _copy_with(finished: Path, tmp: Path, **changes: object) -> Path:
    """pool/ copied out, the custom entry changed and the manifest resealed (as someone
    who edits it on purpose would: the digest alone does not stop them)."""
    shared = tmp / "shared"
    shutil.copytree(finished / "pool", shared)
    m = json.loads((shared / "manifest.json").read_text())
    m["models"] = [{**e, **changes} if e["id"] == "net" else e for e in m["models"]]
    body = {k: v for k, v in m.items() if k not in ("format", "digest")}
    (shared / "manifest.json").write_text(json.dumps(seal_pool_manifest(body)))
    return shared


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        ("no_such_module_for_securepool:make", "cannot import module"),
        ("custom_model_helpers:gone", "has no attribute 'gone'"),
    ],
)
def test_load_pool_refuses_a_factory_it_cannot_import(
    finished: Path, tmp_path: Path, factory: str, words: str
) -> None:
    shared = _copy_with(finished, tmp_path, factory=factory)
    with pytest.raises(RunDirError, match=words) as info:
        securepool.load_pool(shared, factories=[factory])
    assert info.value.file == shared / "manifest.json"
    assert "model 'net' cannot be rebuilt" in str(info.value)


def test_a_received_pool_imports_and_calls_no_factory_its_loader_did_not_name(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker ships a pool whose manifest (resealed: the digest is no signature)
    names code on the victim's machine; loading it without naming that code runs none."""
    trap = tmp_path / "trap_module_for_securepool.py"
    trap.write_text("raise SystemExit('imported')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        for factory in ("trap_module_for_securepool:make", "os:kill", GOOD):
            shared = _copy_with(finished, tmp_path / factory.replace(":", "_"), factory=factory)
            with pytest.raises(RunDirError, match="code this process would import") as info:
                securepool.load_pool(shared, factories=["other.module:fn"])
            assert f"--factory {factory}" in str(info.value)
        assert "trap_module_for_securepool" not in sys.modules
        # the command line: the same refusal, exit 2, nothing predicted
        rows = tmp_path / "x.csv"
        rows.write_text(",".join(["1"] * 30) + "\n")
        assert main(["predict", str(finished), str(rows)]) == 2
        assert "code this process would import" in capsys.readouterr().err
        assert main(["predict", str(finished), str(rows), "--factory", GOOD]) == 0
        assert capsys.readouterr().out.startswith("row,lr,net,vote\n0,")
    finally:
        sys.path.remove(str(tmp_path))


def test_load_pool_refuses_a_custom_entry_without_its_factory(
    finished: Path, tmp_path: Path
) -> None:
    shared = _copy_with(finished, tmp_path, factory="")
    with pytest.raises(RunDirError, match="'custom' without a factory"):
        securepool.load_pool(shared)


def test_load_pool_refuses_a_factory_whose_layout_changed(
    finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(custom_model_helpers, "WIDTH", 9)
    with pytest.raises(RunDirError, match=r"layout factory .* now builds .* differs") as info:
        securepool.load_pool(finished, factories=[GOOD])
    assert info.value.file == finished / "pool" / "manifest.json"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("no_such_module_for_securepool:make", "cannot import module"),
        ("custom_model_helpers:gone", "has no attribute 'gone'"),
        ("custom_model_helpers:NOT_CALLABLE", "names a 'int' object, not a function"),
        ("custom_model_helpers:raises", "raised RuntimeError when called as (30, 2)"),
        ("custom_model_helpers:not_a_module", "returned a list, not a torch.nn.Module"),
        ("custom_model_helpers:wrong_shape", "returned shape (2, 3); the pool needs"),
        ("custom_model_helpers:wrong_input", "failed on a batch of shape (2, 30)"),
        ("custom_model_helpers:with_batchnorm", "keeps buffers (1.running_mean"),
        ("custom_model_helpers:float64", "must be float32"),
        ("custom_model_helpers:no_parameters", "no parameters"),
    ],
)
def test_a_factory_that_cannot_be_used_is_refused_before_anything_is_written(
    tmp_path: Path, name: str, words: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.format(factory=name))
    with pytest.raises(ConfigError) as info:
        start_job(cfg, tmp_path / "run")
    (problem,) = info.value.problems
    assert problem.startswith(f"pool.models[1] (net): factory {name!r}"), problem
    assert words in problem, problem
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]


def test_the_command_line_refuses_a_bad_factory_in_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.format(factory="custom_model_helpers:wrong_shape"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pool.models[1] (net)" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ('arch = "custom"', "arch = 'custom' needs factory"),
        ('arch = "mlp"\nfactory = "a.b:c"', "factory applies to arch = 'custom' only"),
        ('arch = "custom"\nfactory = "a.b"', "factory must be 'package.module:function'"),
        ('arch = "custom"\nfactory = "a-b:c"', "'a-b' is not a Python name"),
        ('arch = "custom"\nfactory = "a:b"\nhidden = 8', "hidden applies to arch = 'mlp' only"),
    ],
)
def test_the_config_refuses_a_custom_model_without_a_usable_factory_string(
    model: str, words: str
) -> None:
    import tomllib

    table = tomllib.loads(f'[[pool.models]]\nid = "m"\n{model}\n')
    with pytest.raises(ConfigError) as info:
        parse_config(table)
    assert any(words in p for p in info.value.problems), info.value.problems


def test_a_custom_model_counts_in_the_memory_estimate_naming_its_factory() -> None:
    import tomllib

    from securepool.sizes import size_problems

    cfg = parse_config(tomllib.loads(BASE.format(factory=GOOD)))
    assert size_problems(cfg, limit=10**9) == []  # unbuilt: nothing known yet
    (problem,) = size_problems(cfg, limit=10**9, custom={1: 10**7})
    assert problem.startswith(f"pool.models[1].factory = {GOOD!r}: the run would need"), problem
    assert "model 'net' has 10,000,000 parameters" in problem
