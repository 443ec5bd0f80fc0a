"""securepool sweep: grid parsing and validation (every problem at once, nothing written)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from crypto.errors import ConfigError
from securepool.cli import main
from securepool.sweep.grid import Axis, cell_name, dump_toml, parse_axes, plan, split_values

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.toml"


def base() -> dict:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_values_are_toml_or_bare_strings_and_split_at_top_level_commas() -> None:
    axes, problems = parse_axes(
        [
            "privacy.noise_multiplier=0.8,1.2",
            "aggregation.mode=mask,he",
            "convergence.error_range=[0.0, 0.1],[0.0,0.2]",
            "privacy.enabled=true,false",
        ]
    )
    assert problems == []
    assert axes[0] == Axis("privacy.noise_multiplier", (0.8, 1.2))
    assert axes[1].values == ("mask", "he")
    assert axes[2].values == ([0.0, 0.1], [0.0, 0.2])
    assert axes[3].values == (True, False)
    assert split_values('"a,b",c') == ['"a,b"', "c"]


def test_syntax_problems_are_all_listed() -> None:
    _, problems = parse_axes(["nokey", "=1", "a.b=1,,2", "a.b=1", "c.d=1,1", "x y=1"])
    joined = "\n".join(problems)
    assert "'nokey': expected KEY=V1,V2" in joined
    assert "'=1': expected KEY=V1,V2" in joined
    assert "empty value" in joined
    assert "c.d: value(s) given twice: 1" in joined
    assert "not a dotted config key" in joined
    assert "a.b: given twice" in joined
    assert len(problems) == 6


def test_plan_lists_every_bad_key_and_value() -> None:
    axes, _ = parse_axes(
        [
            "aggregation.mode=plaintext,mask,bogus",
            "training.lr=0.1,-1",
            "privacy.noise=1",
            "pool.models.9.hidden=3",
            "data.dataset.x=1",
        ]
    )
    with pytest.raises(ConfigError) as info:
        plan(base(), axes)
    joined = "\n".join(info.value.problems)
    assert "aggregation.mode=bogus: aggregation.mode: 'bogus' is not one of" in joined
    assert "training.lr=-1: training: lr must be" in joined
    assert "privacy.noise=1: privacy.noise: unknown key" in joined
    assert "pool.models.9.hidden: pool.models has no entry '9'" in joined
    assert "data.dataset.x: data.dataset is a value, not a table" in joined
    assert len(info.value.problems) == 5


def test_plan_names_the_combinations_that_clash() -> None:
    axes, _ = parse_axes(["aggregation.mode=plaintext,mask", "trust.voting=validation"])
    table = base()
    table["trust"] = {"enabled": True}
    table["aggregation"]["mode"] = "plaintext"  # validation voting alone is then fine
    with pytest.raises(ConfigError) as info:
        plan(table, axes)
    (problem,) = info.value.problems
    assert problem.startswith("cell aggregation.mode=mask trust.voting=validation: ")
    assert "allowed only with aggregation.mode = 'plaintext'" in problem


def test_array_of_tables_entries_by_id_or_index() -> None:
    axes, _ = parse_axes(["pool.models.mlp.hidden=8,16", "pool.models.0.seed=5"])
    cells = plan(base(), axes)
    assert len(cells) == 2
    hidden = sorted(c.config.pool.models[1].hidden for c in cells)
    assert hidden == [8, 16]
    assert all(c.config.pool.models[0].seed == 5 for c in cells)


def test_cell_names_are_stable_and_order_free() -> None:
    a = cell_name({"aggregation.mode": "mask", "training.lr": 0.1})
    b = cell_name({"training.lr": 0.1, "aggregation.mode": "mask"})
    assert a == b and "/" not in a
    assert a != cell_name({"aggregation.mode": "mask", "training.lr": 0.2})


def test_dump_toml_round_trips_the_example() -> None:
    assert tomllib.loads(dump_toml(base())) == base()


def test_cli_bad_grid_exits_2_lists_everything_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            str(EXAMPLE),
            "--grid",
            "aggregation.mode=mask,bogus",
            "--grid",
            "privacy.noise=1",
            "--grid",
            "run.record_transcripts=false",
            "--repeats",
            "0",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists()
    for needle in (
        "--repeats must be >= 1",
        "'bogus' is not one of",
        "privacy.noise: unknown",
        "run.record_transcripts: not sweepable",
    ):
        assert needle in " ".join(err.split()), needle


def test_cli_refuses_a_directory_that_is_not_a_sweep(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("x")
    code = main(["sweep", str(EXAMPLE), "--grid", "training.lr=0.1", "--out", str(tmp_path)])
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_a_bad_base_config_is_reported_as_such() -> None:
    table = base()
    table["training"]["epochs"] = 0
    axes, _ = parse_axes(["training.lr=0.1"])
    with pytest.raises(ConfigError) as info:
        plan(table, axes)
    assert info.value.problems == ("base config: training: epochs must be >= 1, got 0",)
