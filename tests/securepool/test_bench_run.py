from __future__ import annotations

import tomllib
from pathlib import Path

from securepool.bench.run import _dump_toml, with_overrides

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.toml"


def test_config_round_trips_through_the_writer() -> None:
    table = tomllib.loads(EXAMPLE.read_text())
    assert tomllib.loads(_dump_toml(table)) == table


def test_overrides_do_not_touch_the_original() -> None:
    table = tomllib.loads(EXAMPLE.read_text())
    new = with_overrides(table, {"aggregation.mode": "mask", "privacy.enabled": True})
    assert new["aggregation"]["mode"] == "mask" and new["privacy"] == {"enabled": True}
    assert table["aggregation"]["mode"] == "mask" and "privacy" not in table
