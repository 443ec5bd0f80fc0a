"""The one typed run configuration, loaded from TOML (see examples/digits.toml).

Every section is a frozen dataclass; :func:`load_config` reports every problem at
once as a :class:`~crypto.errors.ConfigError` and never returns a half-valid config.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError
from protocols.aggregation import AggregationMode
from protocols.he.settings import HESettings
from protocols.secagg.settings import MaskSettings
from securepool.attacks import AttackConfig
from securepool.audit.config import AuditConfig
from securepool.config_loader import load_section
from securepool.models import Architecture
from securepool.privacy.config import PrivacyConfig
from securepool.training import TrainSettings
from securepool.trust.config import TrustConfig, VotingRule


class Dataset(str, Enum):
    DIGITS = "digits"
    BREAST_CANCER = "breast_cancer"


class Partition(str, Enum):
    IID = "iid"
    DIRICHLET = "dirichlet"


class EvaluationMode(str, Enum):
    HOLDOUT = "holdout"  # coordinator tests on a held-out test set
    FEDERATED = "federated"  # participants report correct/total on their local test split


@dataclass(frozen=True)
class RunSection:
    seed: int = 0
    record_transcripts: bool = False  # write every role's view (sizes + hashes) to DIR/transcripts
    torch_threads: int = 1  # small models: one thread avoids oversubscription on shared cores

    def problems(self) -> list[str]:
        out = [] if self.seed >= 0 else [f"seed must be >= 0, got {self.seed}"]
        if self.torch_threads < 1:
            out.append(f"torch_threads must be >= 1, got {self.torch_threads}")
        return out


@dataclass(frozen=True)
class DataSection:
    dataset: Dataset = Dataset.DIGITS
    participants: int = 20
    partition: Partition = Partition.IID
    alpha: float = 0.5
    holdout_fraction: float = 0.2
    local_test_fraction: float = 0.2
    min_records: int = 10

    def problems(self) -> list[str]:
        out = []
        if self.participants < 3:
            out.append(f"participants must be >= 3, got {self.participants}")
        if self.alpha <= 0:
            out.append(f"alpha must be > 0, got {self.alpha}")
        for name in ("holdout_fraction", "local_test_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                out.append(f"{name} must be in (0, 1), got {v}")
        if self.min_records < 2:
            out.append(f"min_records must be >= 2, got {self.min_records}")
        return out


@dataclass(frozen=True)
class ModelSpec:
    id: str = ""
    arch: Architecture = Architecture.LOGREG
    seed: int = 0
    hidden: int = 64

    def problems(self) -> list[str]:
        out = []
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            out.append(f"model id must be a non-empty name of letters, digits, - or _: {self.id!r}")
        if self.hidden < 1:
            out.append(f"hidden must be >= 1, got {self.hidden}")
        return out


@dataclass(frozen=True)
class PoolSection:
    models: tuple[ModelSpec, ...] = ()

    def problems(self) -> list[str]:
        out = []
        if not self.models:
            out.append("at least one base model is needed ([[pool.models]])")
        ids = [m.id for m in self.models]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            out.append(f"duplicate model ids: {', '.join(dupes)}")
        return out


@dataclass(frozen=True)
class AssignmentSection:
    min_group_size: int = 3
    min_models: int = 1
    max_models: int = 0  # 0: as many as the pool has
    participation: float = 1.0

    def problems(self) -> list[str]:
        out = []
        if self.min_group_size < 3:
            out.append(f"min_group_size must be >= 3, got {self.min_group_size}")
        if self.min_models < 1:
            out.append(f"min_models must be >= 1, got {self.min_models}")
        if self.max_models and self.max_models < self.min_models:
            out.append(f"max_models ({self.max_models}) < min_models ({self.min_models})")
        if not 0.0 < self.participation <= 1.0:
            out.append(f"participation must be in (0, 1], got {self.participation}")
        return out


@dataclass(frozen=True)
class TrainingSection:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if self.epochs < 1:
            out.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            out.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            out.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            out.append(f"momentum must be in [0, 1), got {self.momentum}")
        return out

    def settings(self) -> TrainSettings:
        return TrainSettings(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum
        )


@dataclass(frozen=True)
class EvaluationSection:
    mode: EvaluationMode = EvaluationMode.HOLDOUT


@dataclass(frozen=True)
class ConvergenceSection:
    """S402/S406: all test errors inside ``error_range`` at once, or stop at the cap."""

    error_range: tuple[float, float] = (0.0, 0.1)
    max_iterations: int = 30

    def problems(self) -> list[str]:
        out = []
        lo, hi = self.error_range
        if not 0.0 <= lo < hi <= 1.0:
            out.append(
                f"error_range must satisfy 0 <= low < high <= 1, got {list(self.error_range)}"
            )
        if self.max_iterations < 1:
            out.append(f"max_iterations must be >= 1, got {self.max_iterations}")
        return out


@dataclass(frozen=True)
class AcceptanceSection:
    """P5: Clopper–Pearson acceptance, then elimination."""

    confidence: float = 0.95
    max_error_bound: float = 0.15
    keep_best: int = 0  # 0: keep all accepted
    duplicate_distance: float = 0.0  # relative L2; 0 disables near-duplicate removal

    def problems(self) -> list[str]:
        out = []
        if not 0.5 <= self.confidence < 1.0:
            out.append(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not 0.0 < self.max_error_bound <= 1.0:
            out.append(f"max_error_bound must be in (0, 1], got {self.max_error_bound}")
        if self.keep_best < 0:
            out.append(f"keep_best must be >= 0, got {self.keep_best}")
        if self.duplicate_distance < 0:
            out.append(f"duplicate_distance must be >= 0, got {self.duplicate_distance}")
        return out


@dataclass(frozen=True)
class AggregationSection:
    mode: AggregationMode = AggregationMode.PLAINTEXT
    mask: MaskSettings = field(default_factory=MaskSettings)
    he: HESettings = field(default_factory=HESettings)


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    pool: PoolSection = field(default_factory=PoolSection)
    assignment: AssignmentSection = field(default_factory=AssignmentSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    convergence: ConvergenceSection = field(default_factory=ConvergenceSection)
    acceptance: AcceptanceSection = field(default_factory=AcceptanceSection)
    aggregation: AggregationSection = field(default_factory=AggregationSection)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def problems(self) -> list[str]:
        out = []
        a, d = self.assignment, self.data
        active = int(d.participants * a.participation)
        if active < a.min_group_size:
            out.append(
                f"assignment: {d.participants} participants x participation {a.participation} "
                f"= {active} active per iteration, fewer than min_group_size {a.min_group_size}"
            )
        if a.min_models > len(self.pool.models) and self.pool.models:
            out.append(
                f"assignment.min_models {a.min_models} exceeds the pool's "
                f"{len(self.pool.models)} models"
            )
        if active < a.min_models * a.min_group_size:
            out.append(
                f"assignment: min_models {a.min_models} x min_group_size {a.min_group_size} "
                f"needs {a.min_models * a.min_group_size} active participants, only {active}"
            )
        if (
            self.trust.enabled
            and self.trust.voting is VotingRule.VALIDATION
            and self.aggregation.mode is not AggregationMode.PLAINTEXT
        ):
            out.append(
                "trust.voting = 'validation' shows every participant its group peers' "
                "individual updates, which secure aggregation exists to hide: allowed only "
                f"with aggregation.mode = 'plaintext', not {self.aggregation.mode.value!r}"
            )
        if d.dataset is not Dataset.DIGITS and any(
            m.arch is Architecture.CNN for m in self.pool.models
        ):
            out.append("pool: the cnn architecture needs square images (dataset = 'digits')")
        return out


def parse_config(table: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a parsed TOML table; raise ConfigError listing all."""
    problems: list[str] = []
    cfg = load_section(RunConfig, table, path="config", problems=problems)
    if problems:
        raise ConfigError(p.removeprefix("config.").removeprefix("config: ") for p in problems)
    return cfg


def load_config(path: Path) -> RunConfig:
    """Read and validate a TOML run configuration."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc}"]) from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(table)
