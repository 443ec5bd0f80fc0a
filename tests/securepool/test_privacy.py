"""DP-SGD: accounting cross-checked independently, budgets, composition, config errors."""

from __future__ import annotations

import numpy as np
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
    cfg = PrivacyConfig(enabled=True, noise_multiplier=2.0, epsilon_max=3.0)
    trainer = DPTrainer(cfg, participants=["a"], planned_rounds=5)
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
    # the ledger records the effective multiplier: sigma / (1 + rounding inflation)
    assert 2.0 / (1 + 2**-10) <= rep["noise_multiplier"] < 2.0
    assert rep["sample_rate"] == cfg.sample_rate  # the public rate, not one of 96 records
    assert "os.urandom" in rep["noise_source"] and 0 < rep["sampler_delta"] < 1e-9


def test_target_epsilon_is_met_after_the_planned_rounds() -> None:
    x, y = _data()
    cfg = PrivacyConfig(enabled=True, target_epsilon=4.0)
    trainer = DPTrainer(cfg, participants=["a"], planned_rounds=3)
    model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
    for it in range(3):
        trainer.train(participant="a", model=model, x=x, y=y, settings=SETTINGS, seed=it)
    assert trainer.epsilon("a") == pytest.approx(4.0, rel=0.02)
    resumed = DPTrainer(cfg, participants=["a"], planned_rounds=3)
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
                },
            }
        )
    text = "\n".join(info.value.problems)
    assert "not both" in text
    assert "target_epsilon must be a finite number > 0" in text
    assert "delta must be in (0, 1)" in text
    assert "epsilon_max must be a finite number > 0" in text


def test_secure_rng_is_the_default_and_needs_nothing_extra() -> None:
    cfg = PrivacyConfig(enabled=True, noise_multiplier=1.0)
    assert cfg.secure_rng and cfg.problems() == []


def test_removed_keys_are_refused_with_the_reason() -> None:
    for section in (
        {"user_level": {"enabled": True, "clip": 1.0, "noise_multiplier": 1.0}},
        {"user_level": {"enabled": False}},
        {"poisson_sampling": False},
        {"poisson_sampling": True},
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(
                {"pool": {"models": [{"id": "a"}]}, "privacy": {"noise_multiplier": 1.0, **section}}
            )
        text = "\n".join(info.value.problems)
        assert ("user_level is not supported" in text) or ("poisson_sampling was removed" in text)


@pytest.mark.parametrize(
    "key", ["noise_multiplier", "target_epsilon", "max_grad_norm", "epsilon_max", "delta"]
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_non_finite_privacy_numbers_are_refused(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"pool": {"models": [{"id": "a"}]}, "privacy": {key: value}})
    assert any(key in p for p in info.value.problems)


def test_released_gradient_is_on_the_grid() -> None:
    """Mironov's attack needs floating-point noise; the released sum is an exact
    multiple of the power-of-two grid."""
    from opacus.grad_sample import GradSampleModule

    from crypto.entropy import SecureStream
    from securepool.privacy.noise import GridNoiseOptimizer, grid_for

    model = build_model(Architecture.MLP, n_features=64, n_classes=10, seed=0)
    d = sum(p.numel() for p in model.parameters())
    grid = grid_for(noise_multiplier=1.0, max_grad_norm=1.0, dimension=d)
    assert grid.step == 2.0 ** round(np.log2(grid.step))
    assert grid.step * np.sqrt(d) <= 2**-10
    gsm = GradSampleModule(model, loss_reduction="sum")
    opt = GridNoiseOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1),
        stream=SecureStream(),
        grid=grid,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=1,
        loss_reduction="sum",
    )
    x, y = _data(8)
    torch.nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    opt.pre_step()
    for p in model.parameters():
        units = p.grad.double() / grid.step
        assert torch.equal(units, units.round())
    gsm._close()


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
