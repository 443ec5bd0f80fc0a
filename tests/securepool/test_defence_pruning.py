"""``[defence] prune``: the coordinator cuts the inputs its clean split does not use
(issue 22, item 5).

A model trained on triggered records (the attack's own trigger: the top-left 2x2 pixels
at full intensity, label 0) loses the trigger when pruned, and clean predictions do not
move; a record that uses none of the pruned inputs gets exactly the same logits. Through
the real coordinator every aggregate is pruned, in mask and HE mode too, and a whole run
with attacker nodes sending unboosted backdoor updates (``[attack]``, at the wire) ends
with the trigger far less effective than the same run without the defence.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from defence_helpers import UNBOOSTED_BACKDOOR, record_applies, run_table, table
from torch import nn

from crypto.errors import ConfigError
from securepool.architecture import Architecture
from securepool.attacks import TRIGGER_PIXELS, add_trigger, backdoor_success
from securepool.config import Dataset, parse_config
from securepool.coordinator.launch import inprocess_coordinator
from securepool.data import load_arrays
from securepool.defence.config import DefenceConfig
from securepool.defence.pruning import column_scale, first_linear, input_use, prune_inputs
from securepool.models import build_model, flatten, layout_of, load_flat

#: the default threshold
THRESHOLD = DefenceConfig().prune_threshold


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train x, train y, clean split x, clean split y) of the digits, a fixed split."""
    x, y = load_arrays(Dataset.DIGITS)
    order = np.random.default_rng(0).permutation(len(y))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return xt[order[:1200]], yt[order[:1200]], xt[order[1200:]], yt[order[1200:]]


def trained(arch: str, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 15) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(Architecture(arch), n_features=64, n_classes=10, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def poisoned(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The records plus a fifth of them again with the trigger and label 0."""
    k = len(y) // 5
    return torch.cat([x, add_trigger(x[:k])]), torch.cat([y, torch.zeros(k, dtype=y.dtype)])


def test_bad_keys_and_no_holdout_are_refused() -> None:
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="prune_threshold"):
            parse_config({"pool": {"models": [{"id": "lr"}]}, "defence": {"prune_threshold": bad}})
    with pytest.raises(ConfigError, match=r"defence\.prune"):
        parse_config({"pool": {"models": [{"id": "lr"}]}, "defence": {"prune": 1}})
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "pool": {"models": [{"id": "lr"}]},
                "evaluation": {"mode": "federated"},
                "defence": {"prune": True},
            }
        )
    (problem,) = [p for p in err.value.problems if "holdout" in p]
    assert "defence.prune = true" in problem and "tuning_steps" not in problem.split(":")[0]
    assert re.search(r"evaluation\.mode = 'holdout'", problem)
    cfg = parse_config({"pool": {"models": [{"id": "lr"}]}, "defence": {"prune": True}})
    assert cfg.defence.enabled and cfg.defence.tuning_steps == 0


def test_the_scale_cuts_unused_inputs_and_keeps_used_ones() -> None:
    use = np.array([0.0, 0.01, 0.15, 0.3, 1.0])
    np.testing.assert_allclose(column_scale(use, 0.3), [0.0, 0.01 / 0.3, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(column_scale(np.zeros(3), 0.3), np.ones(3))
    _, _, cx, _ = digits()
    scale = column_scale(input_use(cx), THRESHOLD)
    # the trigger's pixels: pixel 0 never used by clean digits, 8 almost never, 1 and 9
    # rarely: all scaled down
    assert scale[0] == 0.0 and scale[8] < 0.01
    assert scale[list(TRIGGER_PIXELS)].max() < 0.7 and scale.min() == 0.0
    assert (scale == 1.0).sum() >= 32  # the digits' strokes are kept as they are


@pytest.mark.parametrize("arch", ["logreg", "mlp"])
def test_pruning_removes_a_trained_backdoor(arch: str) -> None:
    x, y, cx, cy = digits()
    model = trained(arch, *poisoned(x, y))
    before = backdoor_success(model, cx, cy)
    assert before > 0.8  # the trigger works on the clean split
    with torch.no_grad():
        logits = model(cx)
    assert prune_inputs(model, column_scale(input_use(cx), THRESHOLD))
    after = backdoor_success(model, cx, cy)
    assert after < 0.3 and after < before - 0.5
    with torch.no_grad():
        pruned_logits = model(cx)
    # clean predictions: the same argmax on (almost) every clean record
    same = (pruned_logits.argmax(1) == logits.argmax(1)).float().mean()
    assert same >= 0.98


@pytest.mark.parametrize("arch", ["logreg", "mlp"])
def test_records_that_use_no_pruned_input_keep_their_logits(arch: str) -> None:
    """A clean model: every record that is zero on each input the pruning scales gets
    exactly the same logits; over the clean split the argmax holds on >= 99%."""
    x, y, cx, _ = digits()
    model = trained(arch, x, y, epochs=5)
    scale = column_scale(input_use(cx), THRESHOLD)
    with torch.no_grad():
        logits = model(cx)
        prune_inputs(model, scale)
        pruned = model(cx)
    touched = torch.from_numpy(scale < 1.0)
    untouched_rows = (cx[:, touched] == 0).all(dim=1)
    assert untouched_rows.sum() >= 10
    torch.testing.assert_close(pruned[untouched_rows], logits[untouched_rows], rtol=0, atol=0)
    assert (pruned.argmax(1) == logits.argmax(1)).float().mean() >= 0.99


def test_only_a_first_linear_layer_on_the_inputs_is_pruned() -> None:
    cnn = build_model(Architecture.CNN, n_features=64, n_classes=10, seed=3)
    before = flatten(cnn)
    assert first_linear(cnn, 64) is None
    assert not prune_inputs(cnn, np.zeros(64))
    np.testing.assert_array_equal(flatten(cnn), before)
    flat_first = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert first_linear(flat_first, 64) is flat_first[1]
    assert first_linear(nn.Sequential(nn.Linear(32, 10)), 64) is None  # not on the inputs
    assert first_linear(nn.Linear(64, 10), 64) is None  # not a Sequential: order unknown


@pytest.mark.parametrize("mode", ["mask", "he"])
def test_every_aggregate_is_pruned_in_every_mode(mode: str) -> None:
    """Through the coordinator: the new global is exactly the FedAvg aggregate pruned
    on the clean split (spied on), and the columns of never-used inputs are zero."""
    cfg = parse_config(table(defence={"prune": True}, mode=mode, iterations=1))
    loop, nodes = inprocess_coordinator(cfg)
    try:
        tuning = loop.tuning
        assert tuning is not None and loop.holdout is not None
        seen = record_applies(tuning)
        loop.connect()
        record = loop.step()
        assert [g.status for g in record.groups] == ["aggregated"]
        ((aggregated, pruned),) = seen
        np.testing.assert_array_equal(loop.state.globals["lr"], pruned)
        model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
        layout = layout_of(model)
        load_flat(model, aggregated, layout)
        scale = column_scale(input_use(tuning.x), cfg.defence.prune_threshold)
        prune_inputs(model, scale)
        np.testing.assert_array_equal(flatten(model), pruned)
        weight = pruned[: 64 * 10].reshape(10, 64)
        assert (scale == 0).any() and not weight[:, scale == 0].any()
        assert not np.array_equal(aggregated, pruned)
    finally:
        loop.close()
        nodes.close()


def test_unboosted_backdoor_from_the_wire_is_pruned_away() -> None:
    """Two attacker nodes of eight send unboosted backdoor updates every iteration (the
    real attacker node, configured by ``[attack]``); with input pruning the trigger's
    success on the held-out test part falls well below the undefended run's, at no
    more than 2 points of accuracy."""
    attack = UNBOOSTED_BACKDOOR
    out = {}
    for prune in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            out[prune] = run_table(Path(tmp), defence={"prune": prune}, attack=attack)
    off, on = (out[p]["attack"]["backdoor_success"]["lr"] for p in (False, True))
    assert off > 0.8
    assert on < 0.3
    assert out[True]["best_accuracy"] >= out[False]["best_accuracy"] - 0.02
