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
