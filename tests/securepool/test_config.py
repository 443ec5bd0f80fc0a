from __future__ import annotations

from pathlib import Path

import pytest

from crypto.errors import ConfigError, SecurePoolError
from securepool.cli import main
from securepool.config import load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.toml"


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert [m.id for m in cfg.pool.models] == ["logreg", "mlp", "cnn"]
    assert cfg.data.participants == 20


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "data": {"participants": "many", "colour": "red"},
                "pool": {"models": [{"id": "a", "arch": "transformer"}]},
                "assignment": {"min_group_size": 2},
                "convergence": {"error_range": [0.5, 0.1]},
            }
        )
    problems = info.value.problems
    text = "\n".join(problems)
    assert "data.colour: unknown key" in text
    assert "data.participants: expected an integer" in text
    assert "pool.models[0].arch: 'transformer' is not one of" in text
    assert "min_group_size must be >= 3" in text
    assert "error_range must satisfy" in text
    assert len(problems) == 5
    assert isinstance(info.value, SecurePoolError)


def test_impossible_group_size_is_an_error() -> None:
    with pytest.raises(ConfigError, match="fewer than min_group_size"):
        parse_config(
            {
                "data": {"participants": 4},
                "pool": {"models": [{"id": "a"}]},
                "assignment": {"min_group_size": 5},
            }
        )


def test_duplicate_model_ids_and_empty_pool() -> None:
    with pytest.raises(ConfigError, match="duplicate model ids: a"):
        parse_config({"pool": {"models": [{"id": "a"}, {"id": "a"}]}})
    with pytest.raises(ConfigError, match="at least one base model"):
        parse_config({})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_bad_config_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[data]\nparticipants = "x"\nbogus = 1\n[assignment]\nmin_group_size = 1\n')
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "participants" in err and "bogus" in err and "min_group_size" in err
    assert not out.exists()


def test_cli_missing_file_and_bad_toml_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "missing.toml"), "--out", str(out), "--quiet"]) == 2
    bad = tmp_path / "syntax.toml"
    bad.write_text("[data\n")
    assert main(["run", str(bad), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


def test_cli_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["run", str(EXAMPLE), "--out", str(out), "--quiet"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_data_problems_are_found_before_output(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[data]\nparticipants = 200\nmin_records = 10\n[[pool.models]]\nid = 'a'\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


# --- secure by default, NaN / infinity, every problem at once ----------------------------

import dataclasses  # noqa: E402
import math  # noqa: E402
import typing  # noqa: E402
from enum import Enum  # noqa: E402
from typing import Any  # noqa: E402

from protocols.aggregation import AggregationMode  # noqa: E402
from securepool.config import RunConfig  # noqa: E402

ONE_MODEL = {"pool": {"models": [{"id": "a"}]}}


def test_default_aggregation_is_mask() -> None:
    assert parse_config(ONE_MODEL).aggregation.mode is AggregationMode.MASK
    plain = parse_config({**ONE_MODEL, "aggregation": {"mode": "plaintext"}})
    assert plain.aggregation.mode is AggregationMode.PLAINTEXT


def _float_keys(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every float key of the config tree (sections and sub-tables), as a key path."""
    out: list[tuple[str, ...]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if len(args) == 1 else tp
        if base is float:
            out.append((*prefix, f.name))
        elif dataclasses.is_dataclass(base) and isinstance(base, type):
            out += _float_keys(base, (*prefix, f.name))
    return out


FLOAT_KEYS = _float_keys(RunConfig)


def _with(table: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    out = dict(table)
    node = out
    for key in path[:-1]:
        node[key] = dict(node.get(key, {}))
        node = node[key]
    node[path[-1]] = value
    return out


def test_the_float_key_list_covers_every_section() -> None:
    sections = {p[0] for p in FLOAT_KEYS}
    assert {
        "data",
        "assignment",
        "training",
        "acceptance",
        "aggregation",
        "privacy",
        "trust",
        "attack",
    } <= sections
    assert ("aggregation", "mask", "clip") in FLOAT_KEYS
    assert ("aggregation", "he", "weight_unit") in FLOAT_KEYS


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_every_float_key_refuses_nan_and_infinity(bad: float) -> None:
    for path in FLOAT_KEYS:
        with pytest.raises(ConfigError) as info:
            parse_config(_with(ONE_MODEL, path, bad))
        dotted = ".".join(path)
        assert any(dotted in p and "finite" in p for p in info.value.problems), (dotted, info)


def test_all_non_finite_keys_are_listed_at_once() -> None:
    table: dict[str, Any] = dict(ONE_MODEL)
    for path in FLOAT_KEYS:
        table = _with(table, path, math.nan)
    with pytest.raises(ConfigError) as info:
        parse_config(table)
    text = "\n".join(info.value.problems)
    for path in FLOAT_KEYS:
        assert ".".join(path) in text


def test_range_checks_cannot_be_passed_by_nan_built_in_code() -> None:
    """The sections' own checks (not only the TOML loader) refuse NaN."""
    from securepool.attacks import AttackConfig
    from securepool.config import (
        AcceptanceSection,
        AssignmentSection,
        DataSection,
        TrainingSection,
    )
    from securepool.trust.config import TrustConfig

    for cls in (
        DataSection,
        AssignmentSection,
        TrainingSection,
        AcceptanceSection,
        TrustConfig,
        AttackConfig,
    ):
        for f in dataclasses.fields(cls):
            if typing.get_type_hints(cls)[f.name] is float:
                obj = cls(**{f.name: math.nan})  # type: ignore[arg-type]
                assert any(f.name in p for p in obj.problems()), (cls.__name__, f.name)


def test_hidden_is_refused_where_it_means_nothing() -> None:
    with pytest.raises(ConfigError, match="hidden applies to arch = 'mlp' only"):
        parse_config({"pool": {"models": [{"id": "a", "arch": "logreg", "hidden": 64}]}})
    cfg = parse_config({"pool": {"models": [{"id": "m", "arch": "mlp"}]}})
    assert cfg.pool.models[0].hidden_units == 64


def test_attack_participants_must_exist() -> None:
    with pytest.raises(ConfigError, match="no such participant"):
        parse_config({**ONE_MODEL, "attack": {"enabled": True, "participants": ["p99"]}})


@pytest.mark.parametrize("runtime", ["inprocess", "multiprocess"])
def test_every_runtime_accepts_attacks_transcripts_and_canaries(runtime: str) -> None:
    """One house: every runtime runs the same coordinator and nodes, so the attacker
    nodes, the transcripts recorded at the Driver and the canaries in the nodes' data
    are accepted with the split runtimes too (they were refused there before)."""
    cfg = parse_config(
        {
            **ONE_MODEL,
            "run": {"runtime": runtime, "record_transcripts": True},
            "aggregation": {"mode": "plaintext"},
            "attack": {"enabled": True, "participants": ["p00"]},
            "audit": {"canaries": 10},
        }
    )
    assert cfg.run.runtime.value == runtime and cfg.run.record_transcripts
    assert cfg.attack.enabled and cfg.audit.canaries == 10


def test_binary_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(path)


# --- the README documents every key, with its default -------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def _all_keys(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    hints = typing.get_type_hints(cls)
    obj = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        value = getattr(obj, f.name)
        if f"{prefix}{f.name}" in ("aggregation.he.min_group_size", "aggregation.he.equal_weights"):
            # not keys: HE takes assignment.min_group_size and aggregation.weighting
            # (both refused, tested)
            continue
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out += _all_keys(tp, f"{prefix}{f.name}.")
        elif f.name == "models":
            from securepool.config import ModelSpec

            out += _all_keys(ModelSpec, "pool.models.")
        else:
            out.append((prefix + f.name, value))
    return out


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        return f'"{value.value}"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def test_readme_documents_every_key_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `") and line.count("|") >= 4:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1]
    missing = []
    for key, default in _all_keys(RunConfig):
        want = f"`{_toml(default)}`"
        if rows.get(key) != want:
            missing.append(f"{key}: README has {rows.get(key)!r}, default is {want}")
    assert not missing, "\n".join(missing)


def test_he_min_group_size_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match="not a setting of its own"):
        parse_config({**ONE_MODEL, "aggregation": {"he": {"min_group_size": 5}}})


def test_weighting_keys_that_would_be_ignored_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"he\.equal_weights: not a setting of its own"):
        parse_config({**ONE_MODEL, "aggregation": {"he": {"equal_weights": True}}})
    for section, key in (("mask", "max_weight"), ("he", "weight_unit")):
        with pytest.raises(ConfigError, match=f"{key}: applies under"):
            parse_config({**ONE_MODEL, "aggregation": {section: {key: 64.0}}})
    cfg = parse_config(
        {**ONE_MODEL, "aggregation": {"weighting": "records", "mask": {"max_weight": 64.0}}}
    )
    assert cfg.mask_settings().max_weight == 64.0
    assert parse_config(ONE_MODEL).mask_settings().max_weight == 1.0
    assert parse_config(ONE_MODEL).he_settings().equal_weights
    assert parse_config(ONE_MODEL).he_settings().weight_unit == 1.0


def test_unimplemented_user_level_dp_is_refused() -> None:
    with pytest.raises(ConfigError, match="user_level is not supported"):
        parse_config({**ONE_MODEL, "privacy": {"user_level": {"enabled": True}}})


def test_breast_cancer_example_loads() -> None:
    cfg = load_config(EXAMPLE.with_name("breast_cancer.toml"))
    assert cfg.data.dataset.value == "breast_cancer"
    assert cfg.aggregation.mode is AggregationMode.MASK
    assert {m.arch.value for m in cfg.pool.models} == {"logreg", "mlp"}


@pytest.mark.parametrize("path", sorted(EXAMPLE.parent.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    """A shipped example that the current config refuses is a broken promise."""
    cfg = load_config(path)
    assert cfg.aggregation.mode is not AggregationMode.PLAINTEXT or "plaintext" in path.name
    if cfg.privacy.enabled:
        assert cfg.privacy.secure_rng  # examples never ship replayable DP noise
