"""Build the run's components (trainer, aggregator, trust check, attacks) from config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from crypto.errors import ConfigError
from protocols.aggregation import AggregationMode, GroupAggregator, Router
from protocols.plaintext import PlaintextAggregator
from protocols.secagg.aggregator import MaskedAggregator
from protocols.transcript import Transcript
from securepool.config import RunConfig
from securepool.data import FederatedData
from securepool.hooks import AttackHooks, TrustHooks
from securepool.models import build_model, layout_of
from securepool.training import LocalTrainer, PlainTrainer


@dataclass
class Components:
    trainer: LocalTrainer
    aggregator: GroupAggregator
    trust: TrustHooks | None
    attack: AttackHooks | None
    router: Router


def make_router(cfg: RunConfig, data: FederatedData) -> Router:
    """The in-process transport; records each role's view when the config asks for it."""
    if not cfg.run.record_transcripts:
        return Router()
    roles = ["coordinator", "auditor", *data.participants]
    return Router({r: Transcript(r, keep_payloads=False) for r in roles})


def build_components(cfg: RunConfig, data: FederatedData) -> Components:
    """Raise ConfigError (listing every problem) if a component cannot be built."""
    problems: list[str] = []
    router = make_router(cfg, data)
    trainer: LocalTrainer = PlainTrainer()
    models = {
        m.id: build_model(
            m.arch,
            n_features=data.n_features,
            n_classes=data.n_classes,
            seed=m.seed,
            hidden=m.hidden,
        )
        for m in cfg.pool.models
    }
    if cfg.privacy.enabled:
        from securepool.privacy.trainer import DPTrainer, validate_models

        problems += validate_models(models)
        records = {pid: d.n_train for pid, d in data.participants.items()}
        problems += cfg.privacy.problems_for_data(min_records=min(records.values()))
        trainer = DPTrainer(
            cfg.privacy, records=records, planned_rounds=cfg.convergence.max_iterations
        )
    mode = cfg.aggregation.mode
    aggregator: GroupAggregator
    keyholder: Any = None  # HE mode: the key holder (the auditor's other half)
    if mode is AggregationMode.PLAINTEXT:
        aggregator = PlaintextAggregator(
            min_contributors=cfg.assignment.min_group_size, router=router
        )
    elif mode is AggregationMode.MASK:
        aggregator = MaskedAggregator(
            settings=cfg.aggregation.mask,
            min_contributors=cfg.assignment.min_group_size,
            router=router,
        )
    else:
        from protocols.he.aggregator import HEAggregator
        from protocols.he.keyholder import HEKeyHolder

        # the HE binding of P6: the auditor judges folds of the actual ciphertexts
        # (fold_dim = trust.sketch_dim; RunConfig.he_problems checks it, any runtime)
        he_problems = cfg.he_problems()
        problems += he_problems
        he = cfg.he_settings()
        if he_problems:  # raised below; build nothing that folds meanwhile
            he = dataclasses.replace(he, fold_dim=0)
        keyholder = HEKeyHolder(he)
        aggregator = HEAggregator(he, keyholder=keyholder, router=router)
    trust: TrustHooks | None = None
    if cfg.trust.enabled:
        from securepool.trust.check import TrustCheck

        sizes = {m.id: layout_of(models[m.id]).size for m in cfg.pool.models}
        check = TrustCheck(cfg.trust, seed=cfg.run.seed, model_sizes=sizes)
        if keyholder is not None:
            check.attach_keyholder(keyholder)
        trust = check
    attack: AttackHooks | None = None
    if cfg.attack.enabled:
        from securepool.attacks import PublicSketch, UpdateAttack

        attack = UpdateAttack(
            cfg.attack,
            participants=sorted(data.participants),
            sketch=PublicSketch(
                run_seed=cfg.run.seed, dim=cfg.trust.sketch_dim, norm_ratio=cfg.trust.norm_ratio
            ),
        )
    if problems:
        raise ConfigError(problems)
    return Components(
        trainer=trainer, aggregator=aggregator, trust=trust, attack=attack, router=router
    )
