"""Agency tables (``dataset = "csv"``): one file per agency read by column name, every
problem of every file named at once, the same numbers for the in-process runtime and a
split node's records file, and no scaling anywhere."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from table_helpers import HEADER
from table_helpers import rows as _rows

from crypto.errors import ConfigError
from securepool.cli import main
from securepool.config import RunConfig, parse_config
from securepool.data import data_shape, federation, preprocessing_of, table_schema
from securepool.node.records import load_records
from securepool.tables import class_order


def _agencies(tmp_path: Path, n: int = 3, rows: int = 12) -> Path:
    root = tmp_path / "agencies"
    root.mkdir(parents=True)
    for a in range(n):
        (root / f"agency{a + 1}.csv").write_text(HEADER + _rows(rows, offset=a * 100))
    (tmp_path / "holdout.csv").write_text(HEADER + _rows(6, offset=1000))
    return root


def _config(tmp_path: Path, extra: str = "", *, data: str = "", evaluation: str = "") -> str:
    return f"""
[data]
dataset = "csv"
path = "{tmp_path / "agencies"}"
label = "kind"
min_records = 4
categorical = {{ colour = ["red", "white", "rose"] }}
{data}
[evaluation]
holdout = "{tmp_path / "holdout.csv"}"
{evaluation}
[[pool.models]]
id = "logreg"
arch = "logreg"
[convergence]
max_iterations = 1
{extra}"""


def _cfg(text: str) -> RunConfig:
    return parse_config(tomllib.loads(text))


def test_agencies_are_the_files_and_categories_are_one_hot(tmp_path: Path) -> None:
    _agencies(tmp_path)
    cfg = _cfg(_config(tmp_path))
    assert cfg.data.participants == 3 and cfg.data.ids() == ["agency1", "agency2", "agency3"]
    data = federation(cfg)
    assert sorted(data.participants) == ["agency1", "agency2", "agency3"]
    schema = table_schema(cfg.data)
    assert schema.columns == ("size", "colour=red", "colour=white", "colour=rose", "weight")
    assert schema.classes == ("cat", "dog")  # the sorted union of the labels
    assert data_shape(cfg.data) == (5, 2) == (data.n_features, data.n_classes)
    # raw values as given (no scaling), the colour one-hot, the holdout from its own file
    x = torch.cat([data.x_holdout])
    assert x[0].tolist() == [1000.5, 1.0, 0.0, 0.0, 10000.0]
    assert x[1].tolist() == [1001.5, 0.0, 1.0, 0.0, 10010.0]
    assert data.y_holdout.tolist() == [0, 1, 0, 1, 0, 1]
    local = data.participants["agency2"]
    every = torch.cat([local.x_train, local.x_test])
    assert sorted(every[:, 0].tolist()) == [100.5 + i for i in range(12)]
    assert local.x_test.shape[0] == 2  # local_test_fraction 0.2 of 12, rounded
    pre = preprocessing_of(cfg.data.dataset, n_features=5)
    assert pre.to_json() == {"transform": "identity", "divisor": [1.0] * 5}
    raw = np.array([[3.5, 0, 1, 0, 7e4]])
    assert np.array_equal(pre.apply(raw), raw.astype(np.float32))


def test_quoted_fields_a_byte_order_mark_and_declared_features(tmp_path: Path) -> None:
    root = tmp_path / "agencies"
    root.mkdir()
    body = '"id","weight","note","kind"\n' + "".join(
        f'{i},"{i},5","free, text",{"yes" if i % 2 else "no"}\n' for i in range(5)
    )
    for a in range(3):  # decimal commas are not numbers: features exclude that column
        (root / f"a{a}.csv").write_bytes("\ufeff".encode() + body.encode())
    text = _config(tmp_path, data='features = ["id"]\nclasses = ["no", "yes"]').replace(
        'label = "kind"', 'label = "kind"'
    )
    text = text.replace('categorical = { colour = ["red", "white", "rose"] }', "")
    cfg = _cfg(text.replace("[evaluation]\nholdout", "[evaluation]\nmode = 'federated'\n#"))
    data = federation(cfg)
    assert data.n_features == 1 and data.n_classes == 2
    local = data.participants["a1"]
    assert sorted(torch.cat([local.x_train, local.x_test])[:, 0].tolist()) == [0, 1, 2, 3, 4]
    bad = text.replace('features = ["id"]', 'features = ["id", "weight"]')
    bad = bad.replace("[evaluation]\nholdout", "[evaluation]\nmode = 'federated'\n#")
    with pytest.raises(ConfigError) as info:
        federation(_cfg(bad))
    assert f"{root / 'a0.csv'}, line 2, column 2 ('weight'): '0,5' is not a number" in str(
        info.value
    )


def test_every_problem_of_every_file_is_named_at_once(tmp_path: Path) -> None:
    root = _agencies(tmp_path)
    a1, a2, a3 = (root / f"agency{i}.csv" for i in (1, 2, 3))
    a1.write_text(HEADER + "1,red,,cat\n2,blue,3,cat\n3,red,x,cat\n4,red,5,cow\n5,red,6\n")
    a2.write_text(HEADER + "1,red,2,cat\n")
    a3.write_text(HEADER + "1,red,nan,\n" + _rows(4))
    (tmp_path / "holdout.csv").write_text(HEADER + "1,red,2,fish\n")
    cfg = _cfg(_config(tmp_path, data='classes = ["cat", "dog"]'))
    with pytest.raises(ConfigError) as info:
        federation(cfg)
    problems = info.value.problems
    expected = [
        f"{a1}, line 2, column 3 ('weight'): missing value",
        f"{a1}, line 3, column 2 ('colour'): unknown category 'blue' "
        "(data.categorical.colour: red, white, rose)",
        f"{a1}, line 4, column 3 ('weight'): 'x' is not a number",
        f"{a1}, line 5, column 4 ('kind'): unknown label 'cow' (classes: cat, dog)",
        f"{a1}, line 6: 3 fields, the header has 4",
        f"{a2}: 1 record(s), fewer than data.min_records = 4",
        f"{a3}, line 2, column 4 ('kind'): missing label",
        f"{a3}, line 2, column 3 ('weight'): 'nan' is not a finite number",
        f"evaluation.holdout: {tmp_path / 'holdout.csv'}, line 2, column 4 ('kind'): "
        "unknown label 'fish' (classes: cat, dog)",
    ]
    for line in expected:
        assert line in problems, (line, problems)
    assert len(problems) == len(expected)


def test_the_command_line_refuses_bad_tables_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _agencies(tmp_path)
    (root / "agency3.csv").write_text(HEADER + "1,red,2\n" + _rows(5))
    config = tmp_path / "run.toml"
    config.write_text(_config(tmp_path))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "agency3.csv, line 2: 3 fields, the header has 4" in " ".join(err.split())
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_config_problems_of_agency_tables(tmp_path: Path) -> None:
    root = _agencies(tmp_path)

    def problems(text: str) -> str:
        with pytest.raises(ConfigError) as info:
            _cfg(text)
        return str(info.value)

    text = problems(_config(tmp_path, data="participants = 3\npartition = 'dirichlet'"))
    assert "data.participants: with data.path, the participants are its files" in text
    assert "data.partition: splits a built-in dataset" in text
    (root / "auditor.csv").write_text(HEADER)
    (root / "bad name.csv").write_text(HEADER)
    (root / "agency1.npz").write_bytes(b"")
    text = problems(_config(tmp_path))
    assert "'auditor' is the auditor node's id" in text
    assert "bad name.csv: the file name is the participant id" in text
    assert "agency1.csv and agency1.npz are both 'agency1''s" in text
    for f in ("auditor.csv", "bad name.csv", "agency1.npz", "agency3.csv", "agency2.csv"):
        (root / f).unlink()
    assert "holds 1 agency table(s) (agency1): at least 3 are needed" in problems(_config(tmp_path))
    _agencies(tmp_path / "again")
    no_label = _config(tmp_path / "again").replace('label = "kind"', "")
    text = problems(no_label.replace("[evaluation]\nholdout", "[evaluation]\n#"))
    assert "needs label = the name of the label column" in text
    assert "needs evaluation.holdout = FILE" in text
    digits = _config(tmp_path / "again").replace('"csv"', '"digits"')
    text = problems(digits.replace("min_records = 4", ""))
    for key in ("path", "label", "categorical"):
        assert f"data: {key} applies to dataset = 'csv' only, not 'digits'" in text
    assert "evaluation.holdout applies to dataset = 'csv' only" in text
    inside = _config(tmp_path / "again").replace(
        str(tmp_path / "again" / "holdout.csv"), str(tmp_path / "again" / "agencies" / "h.csv")
    )
    assert "lies in data.path, where every table is an agency's" in problems(inside)
    attack = _config(tmp_path / "again", "[attack]\nenabled = true\nparticipants = ['p00']")
    assert "attack.participants: no such participant(s) p00 (the files under data.path: " in (
        problems(attack)
    )
    flower = _config(tmp_path / "again").replace(
        "[evaluation]\nholdout",
        "[run]\nruntime = 'flower'\nregistry = '/keys'\n[evaluation]\nmode = 'federated'\n#",
    )
    text = problems(flower)
    assert "data.path: a deployed coordinator holds no agency's file" in text
    declared = flower.replace(f'path = "{tmp_path / "again" / "agencies"}"', "")
    text = problems(declared)
    assert "needs data.features and data.classes declared" in text
    cfg = _cfg(
        declared.replace(
            "min_records = 4", 'features = ["size", "colour"]\nclasses = ["a", "b", "c"]'
        )
    )
    assert data_shape(cfg.data) == (4, 3)  # a deployment: from the config alone


def test_a_split_nodes_records_file_reads_like_the_inprocess_runtime(tmp_path: Path) -> None:
    root = _agencies(tmp_path)
    cfg = _cfg(_config(tmp_path))
    shared = federation(cfg).participants["agency2"]
    # an NPZ of the same columns, and the same CSV given to a node as its records file
    np.savez(
        tmp_path / "agency2.npz",
        size=np.array([100.5 + i for i in range(12)]),
        colour=np.array(["red", "white", "rose"] * 4),
        weight=np.array([(100 + i) * 10 for i in range(12)]),
        kind=np.array(["cat", "dog"] * 6),
    )
    for path in (root / "agency2.csv", tmp_path / "agency2.npz"):
        own = load_records(
            path,
            n_features=5,
            n_classes=2,
            local_test_fraction=cfg.data.local_test_fraction,
            min_records=cfg.data.min_records,
            seed=cfg.run.seed,
            schema=table_schema(cfg.data),
        )
        for a, b in zip(
            (own.x_train, own.y_train, own.x_test, own.y_test),
            (shared.x_train, shared.y_train, shared.x_test, shared.y_test),
            strict=True,
        ):
            assert torch.equal(a, b), path
    with pytest.raises(ConfigError, match=r"gives? \(5, 2\).*not \(6, 2\)"):
        load_records(
            root / "agency2.csv",
            n_features=6,
            n_classes=2,
            local_test_fraction=0.2,
            min_records=4,
            seed=0,
            schema=table_schema(cfg.data),
        )


def test_classes_agreed_in_numeric_order() -> None:
    assert class_order({"10", "2", "1"}) == ("1", "2", "10")
    assert class_order({"b", "a", "10"}) == ("10", "a", "b")
