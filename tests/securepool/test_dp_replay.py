"""The replay attack on DP noise, performed as the coordinator would (issue 11).

The coordinator holds the config (run seed), the global model and the participant's DP
update. It reruns the participant's training from the config on records it chooses and
subtracts. With ``secure_rng = false`` (the labelled, reproducible mode) the replayed
noise is the real one and the attack recovers the record or wins the replace-one game
every time; with the default ``secure_rng = true`` the noise comes from the participant's
own OS-entropy stream and the same attack fails.
"""

from __future__ import annotations

import numpy as np
import torch

from securepool.models import Architecture, build_model, flatten
from securepool.privacy.config import PrivacyConfig
from securepool.privacy.trainer import ParticipantDP
from securepool.training import TrainSettings

#: batch_size is the public divisor of the noised sum: 1, as the one record's batch is
SETTINGS = TrainSettings(epochs=1, batch_size=1, lr=1.0)
SEED = 1234  # what the loop derives from (run.seed, iteration, k): known to the coordinator


def dp_update(record: torch.Tensor, label: int, *, secure: bool, sigma: float = 1.0) -> np.ndarray:
    """One participant with one record, one DP-SGD step (q = 1) on the logreg model."""
    cfg = PrivacyConfig(
        enabled=True,
        noise_multiplier=sigma,
        max_grad_norm=1.0,
        secure_rng=secure,
        sample_rate=1.0,
        steps=1,
    )
    participant = ParticipantDP("p07", cfg, planned_rounds=1)
    model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
    before = flatten(model)
    participant.train(
        model=model, x=record[None, :], y=torch.tensor([label]), settings=SETTINGS, seed=SEED
    )
    return flatten(model) - before


def record_from_gradient(grad: np.ndarray) -> np.ndarray:
    """Closed-form inversion for logreg: weight row / bias entry of the true class."""
    w, b = grad[: 64 * 10].reshape(10, 64), grad[64 * 10 :]
    c = int(np.argmax(np.abs(b)))
    return w[c] / b[c]


def replay_and_subtract(update: np.ndarray, *, secure: bool) -> np.ndarray:
    """The coordinator's attack: replay with a dummy record, subtract, invert."""
    dummy = torch.zeros(64)
    dummy_update = dp_update(dummy, 0, secure=secure)
    # update = -lr * (clip(g(x)) + noise); dummy_update = -lr * (clip(g(0)) + noise')
    clipped_x_minus_dummy = -(update - dummy_update) / SETTINGS.lr
    # the dummy's own clipped gradient is known to the attacker: zero weights, bias row
    model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
    loss = torch.nn.functional.cross_entropy(
        model(dummy[None, :]), torch.tensor([0]), reduction="sum"
    )
    grads = torch.autograd.grad(loss, list(model.parameters()))
    g0 = torch.cat([g.reshape(-1) for g in grads]).numpy()
    g0 = g0 * min(1.0, 1.0 / (np.linalg.norm(g0) + 1e-6))
    return record_from_gradient(clipped_x_minus_dummy + g0)


def secret_record() -> torch.Tensor:
    return torch.rand(64, generator=torch.Generator().manual_seed(99))


def test_reproducible_mode_is_broken_by_replay_as_documented() -> None:
    record = secret_record()
    recovered = replay_and_subtract(dp_update(record, 3, secure=False), secure=False)
    assert np.allclose(recovered, record.numpy(), atol=1e-3)


def test_replay_fails_with_the_default_secure_noise() -> None:
    record = secret_record()
    recovered = replay_and_subtract(dp_update(record, 3, secure=True), secure=True)
    # the residual is two independent noise draws: far from the record
    assert np.linalg.norm(recovered - record.numpy()) > 0.5 * np.linalg.norm(record.numpy())


def test_same_config_same_seed_draws_different_noise() -> None:
    record = secret_record()
    first, second = dp_update(record, 3, secure=True), dp_update(record, 3, secure=True)
    assert not np.array_equal(first, second)
    # and the difference is noise-sized, not rounding-sized
    assert np.linalg.norm(first - second) > 1.0


def test_replace_one_game() -> None:
    """The coordinator knows the record is x0 or x1; it replays both from the config and
    picks the nearer. Reproducible noise: won every time. Secure noise: about a coin flip
    (sigma = 8 bounds the advantage; 40 rounds, winning 36 has probability < 1e-6)."""
    gen = torch.Generator().manual_seed(5)
    x0, x1 = torch.rand(64, generator=gen), torch.rand(64, generator=gen)
    for secure, rounds in ((False, 10), (True, 40)):
        wins = 0
        for r in range(rounds):
            b = r % 2
            observed = dp_update((x0, x1)[b], 3, secure=secure, sigma=8.0)
            guesses = [dp_update(x, 3, secure=secure, sigma=8.0) for x in (x0, x1)]
            guess = int(np.argmin([np.linalg.norm(observed - g) for g in guesses]))
            wins += guess == b
        if secure:
            assert wins < 36, wins
        else:
            assert wins == rounds
