"""DP-SGD: accounting cross-checked independently, budgets, composition, config errors."""

from __future__ import annotations

import pytest
import torch

from crypto.errors import ConfigError
from securepool.config import parse_config
from securepool.models import Architecture, build_model, flatten
from securepool.privacy.accounting import PrivacyLedger, epsilon_of
from securepool.privacy.config import PrivacyConfig
from securepool.privacy.trainer import DPTrainer, validate_models
from securepool.training import TrainSettings

dp_accounting = pytest.importorskip("dp_accounting")


def independent_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    """Google's dp-accounting RDP accountant, a separate implementation."""
    from dp_accounting import rdp

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    acc = rdp.RdpAccountant(orders)
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    acc.compose(event, steps)
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize(
    ("q", "sigma", "steps"),
    [(0.01, 1.1, 1000), (0.2, 1.0, 50), (0.05, 0.8, 300), (0.1, 2.0, 2000), (1.0, 5.0, 10)],
)
def test_accountant_matches_dp_accounting_within_one_percent(
    q: float, sigma: float, steps: int
) -> None:
    ours = epsilon_of([(sigma, q, steps)], delta=1e-5)
    theirs = independent_epsilon(q, sigma, steps, 1e-5)
    assert ours == pytest.approx(theirs, rel=0.01)


def test_composition_across_iterations_and_models() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    ledger.record("a", sigma=1.0, q=0.2, steps=10)  # iteration 3, model logreg
    ledger.record("a", sigma=1.0, q=0.2, steps=10)  # iteration 7, model cnn
    assert ledger.epsilon("a") == pytest.approx(epsilon_of([(1.0, 0.2, 20)], delta=1e-5), rel=1e-9)
    assert ledger.epsilon("a") > epsilon_of([(1.0, 0.2, 10)], delta=1e-5)
    assert ledger.epsilon("b") == 0.0
    restored = PrivacyLedger(delta=1e-5)
    restored.load_state_dict(ledger.state_dict())
    assert restored.epsilon("a") == ledger.epsilon("a")


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


SETTINGS = TrainSettings(epochs=1, batch_size=32, lr=0.1)


def test_dp_trainer_trains_in_place_and_spends_budget_until_it_stops() -> None:
    x, y = _data()
    cfg = PrivacyConfig(enabled=True, noise_multiplier=2.0, secure_rng=False, epsilon_max=3.0)
    trainer = DPTrainer(cfg, records={"a": 96}, planned_rounds=5)
    model = build_model(Architecture.CNN, n_features=64, n_classes=10, seed=0)
    eps = []
    for it in range(40):
        before = flatten(model)
        report = trainer.train(participant="a", model=model, x=x, y=y, settings=SETTINGS, seed=it)
        if report.skipped:
            assert "privacy budget" in report.skipped
            assert (flatten(model) == before).all()  # the model is left unchanged
            break
        assert not (flatten(model) == before).all()
        eps.append(trainer.epsilon("a"))
    else:
        pytest.fail("the budget never stopped training")
    assert eps == sorted(eps) and eps[-1] <= 3.0
    assert not model._forward_hooks and not model._backward_hooks  # no Opacus hooks left
    rep = trainer.report()["a"]
    assert rep["budget_exhausted"] and rep["iterations"] == len(eps)
    assert rep["noise_multiplier"] == 2.0 and rep["sample_rate"] == pytest.approx(1 / 3)


def test_target_epsilon_is_met_after_the_planned_rounds() -> None:
    x, y = _data()
    cfg = PrivacyConfig(enabled=True, target_epsilon=4.0, secure_rng=False)
    trainer = DPTrainer(cfg, records={"a": 96}, planned_rounds=3)
    model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
    for it in range(3):
        trainer.train(participant="a", model=model, x=x, y=y, settings=SETTINGS, seed=it)
    assert trainer.epsilon("a") == pytest.approx(4.0, rel=0.02)
    resumed = DPTrainer(cfg, records={"a": 96}, planned_rounds=3)
    resumed.load_state_dict(trainer.state_dict())
    assert resumed.epsilon("a") == trainer.epsilon("a")


def test_every_privacy_config_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "pool": {"models": [{"id": "a"}]},
                "privacy": {
                    "enabled": True,
                    "noise_multiplier": 1.0,
                    "target_epsilon": -1.0,
                    "delta": 1.5,
                    "epsilon_max": 0.0,
                    "secure_rng": False,
                },
            }
        )
    text = "\n".join(info.value.problems)
    assert "not both" in text
    assert "target_epsilon must be > 0" in text
    assert "delta must be in (0, 1)" in text
    assert "epsilon_max must be > 0" in text


def test_secure_rng_without_torchcsprng_is_a_clear_error() -> None:
    problems = PrivacyConfig(enabled=True, noise_multiplier=1.0, secure_rng=True).problems()
    try:
        import torchcsprng  # noqa: F401
    except ImportError:
        assert any("torchcsprng" in p for p in problems)
    else:
        assert problems == []


def test_delta_must_be_below_one_over_records() -> None:
    cfg = PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=0.05, secure_rng=False)
    assert cfg.problems_for_data(min_records=40)
    assert not cfg.problems_for_data(min_records=10)


def test_batchnorm_model_is_refused() -> None:
    bad = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    assert validate_models({"bn": bad})
    assert not validate_models(
        {"cnn": build_model(Architecture.CNN, n_features=64, n_classes=10, seed=0)}
    )
