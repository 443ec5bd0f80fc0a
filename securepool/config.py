"""The one typed run configuration, loaded from TOML (see examples/digits.toml).

Every section is a frozen dataclass; :func:`load_config` reports every problem at
once as a :class:`~crypto.errors.ConfigError` and never returns a half-valid config.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crypto.errors import ConfigError
from protocols.aggregation import AggregationMode, Weighting
from protocols.he.settings import HESettings
from protocols.secagg.settings import MaskSettings
from securepool.architecture import Architecture, parse_factory
from securepool.attacks import AttackConfig, AttackKind
from securepool.audit.config import AuditConfig
from securepool.config_loader import check_float, load_section
from securepool.defence.config import DefenceConfig
from securepool.privacy.config import Mechanism, PrivacyConfig
from securepool.trust.config import TrustConfig, VotingRule

if TYPE_CHECKING:
    from securepool.training import TrainSettings


def participant_ids(n: int) -> list[str]:
    """The participants' ids: p00, p01, ... (zero-padded to the width of n - 1)."""
    width = max(2, len(str(n - 1)))
    return [f"p{i:0{width}d}" for i in range(n)]


class Dataset(str, Enum):
    DIGITS = "digits"
    BREAST_CANCER = "breast_cancer"
    #: the agencies' own tables (securepool/tables.py): ``data.path``, ``data.label``
    CSV = "csv"

    @property
    def is_builtin(self) -> bool:
        """True for scikit-learn's bundled datasets (split by the run itself)."""
        return self is not Dataset.CSV

    @property
    def shape(self) -> tuple[int, int]:
        """(features, classes) of a built-in dataset, known without loading the data (a
        node's first stages need the model's size, not the records; tested against the
        loaded data). ``csv``: see :meth:`DataSection.declared_shape`."""
        if self is Dataset.CSV:
            raise ConfigError(["dataset = 'csv': its shape comes from data.features/classes"])
        return {"digits": (64, 10), "breast_cancer": (30, 2)}[self.value]


class Partition(str, Enum):
    IID = "iid"
    DIRICHLET = "dirichlet"


class Scaling(str, Enum):
    """How a record's features are scaled before the models see them (``data.scaling``)."""

    AUTO = "auto"  # csv without DP: federated; otherwise fixed
    FIXED = "fixed"  # a built-in dataset's published rule; csv: the values as given
    FEDERATED = "federated"  # standardised by the federation's statistics (secure sums)


class EvaluationMode(str, Enum):
    HOLDOUT = "holdout"  # coordinator tests on a held-out test set
    FEDERATED = "federated"  # participants report correct/total on their local test split


class Runtime(str, Enum):
    """Where the roles run: ``inprocess`` (the coordinator and every node in this process,
    exchanging wire bytes over :mod:`securepool.runtime.inprocess`),
    ``multiprocess`` (every participant node in its own OS process, the coordinator
    reaching them only through :mod:`securepool.runtime.multiprocess`) or ``flower``
    (the coordinator is Flower's ServerApp, the nodes are SuperNodes: started by
    ``flwr run``, see :mod:`securepool.coordinator.flower`)."""

    INPROCESS = "inprocess"
    MULTIPROCESS = "multiprocess"
    FLOWER = "flower"


@dataclass(frozen=True)
class RunSection:
    seed: int = 0
    runtime: Runtime = Runtime.INPROCESS
    record_transcripts: bool = False  # write every role's view (sizes + hashes) to DIR/transcripts
    transcript_payloads: bool = False  # also the bytes themselves (hex): large; audits only
    torch_threads: int = 1  # small models: one thread avoids oversubscription on shared cores
    registry: str = ""  # runtime = "flower": the directory of every participant's <id>.pub
    stage_timeout: float = 600.0  # split runtimes: seconds a node has to answer one stage
    #: once half a stage's nodes answered, wait for the rest at most max(floor, this x the
    #: median answer time) from the stage's start (securepool.runtime.driver.Patience)
    stage_patience: float = 3.0  # 0: off (a stage may take its whole stage_timeout)
    stage_patience_floor: float = 10.0  # seconds

    def problems(self) -> list[str]:
        out = [] if self.seed >= 0 else [f"seed must be >= 0, got {self.seed}"]
        if self.torch_threads < 1:
            out.append(f"torch_threads must be >= 1, got {self.torch_threads}")
        if not (math.isfinite(self.stage_timeout) and self.stage_timeout > 0):
            out.append(f"stage_timeout must be a number of seconds > 0, got {self.stage_timeout}")
        patience = self.stage_patience
        if not (math.isfinite(patience) and (patience == 0 or patience >= 1)):
            out.append(
                "stage_patience must be 0 (off) or a factor >= 1 of the median node's "
                f"answer time, got {self.stage_patience}"
            )
        if not (math.isfinite(self.stage_patience_floor) and self.stage_patience_floor > 0):
            out.append(
                "stage_patience_floor must be a number of seconds > 0, got "
                f"{self.stage_patience_floor}"
            )
        if self.runtime is Runtime.FLOWER and not self.registry:
            out.append(
                "run.registry must name the directory of the participants' public keys "
                "(<id>.pub, from `securepool keygen`) with run.runtime = 'flower'"
            )
        if self.registry and not Path(self.registry).is_absolute():
            out.append(
                f"run.registry must be an absolute path (the ServerApp's working directory "
                f"is Flower's), got {self.registry!r}"
            )
        if self.registry and self.runtime is not Runtime.FLOWER:
            out.append("run.registry is only used with run.runtime = 'flower'")
        if self.transcript_payloads and not self.record_transcripts:
            out.append("run.transcript_payloads needs run.record_transcripts = true")
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
    #: dataset = "csv": the directory of one table per agency, <participant id>.csv (or
    #: .npz); relative to the working directory. Empty in a deployment (each node's
    #: records file is its own)
    path: str = ""
    label: str = ""  # csv: the label column
    features: tuple[str, ...] = ()  # csv: the input columns (default: all but the label)
    #: csv: COLUMN = [values...], one-hot encoded with this vocabulary
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()  # csv: the labels in order (default: the files' sorted union)
    #: auto (federated for csv without DP, else fixed), fixed or federated
    scaling: Scaling = Scaling.AUTO

    def problems(self) -> list[str]:
        out = []
        if self.participants < 3:
            out.append(f"participants must be >= 3, got {self.participants}")
        out += check_float("alpha", self.alpha, gt=0)
        for name in ("holdout_fraction", "local_test_fraction"):
            out += check_float(name, getattr(self, name), gt=0, lt=1)
        if self.min_records < 2:
            out.append(f"min_records must be >= 2, got {self.min_records}")
        return out + (self._table_problems() if self.dataset is Dataset.CSV else self._builtin())

    def _builtin(self) -> list[str]:
        keys = ("path", "label", "features", "categorical", "classes")
        return [
            f"{k} applies to dataset = 'csv' only, not {self.dataset.value!r}"
            for k in keys
            if getattr(self, k)
        ]

    def _table_problems(self) -> list[str]:
        out = []
        if not self.label:
            out.append("dataset = 'csv' needs label = the name of the label column")
        for name, values in (("features", self.features), ("classes", self.classes)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                out.append(f"{name} lists {', '.join(map(repr, dupes))} more than once")
            if any(not v.strip() for v in values):
                out.append(f"{name} holds an empty name")
        if self.label and self.label in self.features:
            out.append(f"features holds the label column {self.label!r}")
        if len(self.classes) == 1:
            out.append(f"classes must name at least 2 classes, got {list(self.classes)}")
        for column, vocab in self.categorical.items():
            if column == self.label:
                out.append(f"categorical.{column}: the label column is not a feature")
            elif self.features and column not in self.features:
                out.append(f"categorical.{column}: not one of features")
            if not vocab:
                out.append(f"categorical.{column}: an empty vocabulary")
            dupes = sorted({v for v in vocab if vocab.count(v) > 1})
            if dupes:
                out.append(f"categorical.{column} lists {', '.join(map(repr, dupes))} twice")
        return out

    def declared_shape(self) -> tuple[int, int] | None:
        """(model inputs, classes) from the config alone: a built-in dataset's, or a csv
        dataset's when its features and classes are declared; None otherwise."""
        if self.dataset.is_builtin:
            return self.dataset.shape
        if not (self.features and self.classes):
            return None
        width = sum(len(self.categorical.get(f, ())) or 1 for f in self.features)
        return width, len(self.classes)

    def ids(self) -> list[str]:
        """The participants' ids: the agencies' file names under ``path`` (csv), else
        :func:`participant_ids` of ``participants``."""
        if self.dataset is Dataset.CSV and self.path:
            return sorted(agency_files(Path(self.path))[0])
        return participant_ids(self.participants)


def agency_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Every agency's table under ``directory`` (participant id: the file name without
    .csv / .npz; hidden files and other suffixes are not tables) and what is wrong."""
    from crypto.encoding import require_identifier
    from crypto.errors import CryptoError

    if not directory.is_dir():
        return {}, [f"data.path {str(directory)!r} is not a directory"]
    files: dict[str, Path] = {}
    problems = []
    for f in sorted(directory.iterdir()):
        if f.name.startswith(".") or f.suffix.lower() not in (".csv", ".npz") or f.is_dir():
            continue
        pid = f.stem
        try:
            require_identifier("participant id", pid)
        except CryptoError as exc:
            problems.append(f"data.path: {f.name}: the file name is the participant id: {exc}")
            continue
        if pid == "auditor":
            problems.append(f"data.path: {f.name}: 'auditor' is the auditor node's id")
        elif pid in files:
            problems.append(f"data.path: {files[pid].name} and {f.name} are both {pid!r}'s")
        else:
            files[pid] = f
    if not problems and len(files) < 3:
        problems.append(
            f"data.path {str(directory)!r} holds {len(files)} agency table(s) "
            f"({', '.join(sorted(files)) or 'no .csv or .npz file'}): at least 3 are needed"
        )
    return files, problems


@dataclass(frozen=True)
class ModelSpec:
    id: str = ""
    arch: Architecture = Architecture.LOGREG
    seed: int = 0
    hidden: int | None = None  # mlp only: hidden units (None: 64)
    #: custom only: "package.module:function", called as function(n_features, n_classes)
    #: and returning a torch.nn.Module (checked when the run starts: models.build_model)
    factory: str = ""

    def problems(self) -> list[str]:
        out = []
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            out.append(f"model id must be a non-empty name of letters, digits, - or _: {self.id!r}")
        elif not self.id.isascii():
            out.append(f"model id must be ASCII (it names a file of the pool): {self.id!r}")
        if self.arch is Architecture.CUSTOM and not self.factory:
            out.append(
                f"model {self.id!r}: arch = 'custom' needs factory = "
                '"package.module:function" (a function of (n_features, n_classes) '
                "returning a torch.nn.Module)"
            )
        elif self.factory and self.arch is not Architecture.CUSTOM:
            out.append(
                f"model {self.id!r}: factory applies to arch = 'custom' only, "
                f"not {self.arch.value!r}"
            )
        elif self.factory:
            try:
                parse_factory(self.factory)
            except ValueError as exc:
                out.append(f"model {self.id!r}: {exc}")
        if self.hidden is not None:
            if self.arch is not Architecture.MLP:
                out.append(
                    f"model {self.id!r}: hidden applies to arch = 'mlp' only, "
                    f"not {self.arch.value!r}"
                )
            elif self.hidden < 1:
                out.append(f"hidden must be >= 1, got {self.hidden}")
        return out

    @property
    def hidden_units(self) -> int | None:
        """The hidden width of an mlp (64 unless set); None for the other architectures."""
        if self.arch is not Architecture.MLP:
            return None
        return 64 if self.hidden is None else self.hidden


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


class BeaconMode(str, Enum):
    """Where the participants' beacon nonces come from (protocols/beacon.py).

    ``joint``: each participant's OS CSPRNG; nobody controls the assignment (default).
    ``seeded-insecure``: TESTS AND BENCHMARKS ONLY. Nonces derive from the public config
    seed, so the run is reproducible and anyone who knows the seed knows the assignment
    in advance; the beacon still runs and every participant still checks it.
    """

    JOINT = "joint"
    SEEDED_INSECURE = "seeded-insecure"


@dataclass(frozen=True)
class AssignmentSection:
    min_group_size: int = 3
    min_models: int = 1
    max_models: int = 0  # 0: as many as the pool has
    participation: float = 1.0
    beacon: BeaconMode = BeaconMode.JOINT
    #: the largest fraction of the registered participants a beacon outcome may leave
    #: out and still be endorsed (protocols.quorum: it bounds the coordinator's choice)
    max_left_out: float = 0.25

    def problems(self) -> list[str]:
        out = []
        if self.min_group_size < 3:
            out.append(f"min_group_size must be >= 3, got {self.min_group_size}")
        if self.min_models < 1:
            out.append(f"min_models must be >= 1, got {self.min_models}")
        if self.max_models and self.max_models < self.min_models:
            out.append(f"max_models ({self.max_models}) < min_models ({self.min_models})")
        out += check_float("participation", self.participation, gt=0, le=1)
        out += check_float("max_left_out", self.max_left_out, ge=0, lt=1)
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
        out += check_float("lr", self.lr, gt=0)
        out += check_float("momentum", self.momentum, ge=0, lt=1)
        return out

    def settings(self) -> TrainSettings:
        from securepool.training import TrainSettings

        return TrainSettings(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum
        )


@dataclass(frozen=True)
class EvaluationSection:
    mode: EvaluationMode = EvaluationMode.HOLDOUT
    #: dataset = "csv", holdout mode: the coordinator's own test set (same columns)
    holdout: str = ""


@dataclass(frozen=True)
class ConvergenceSection:
    """S402/S406: all test errors inside ``error_range`` at once, or stop at the cap."""

    error_range: tuple[float, float] = (0.0, 0.1)
    max_iterations: int = 30

    def problems(self) -> list[str]:
        out = []
        lo, hi = self.error_range
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 1.0):
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
        out += check_float("confidence", self.confidence, ge=0.5, lt=1)
        out += check_float("max_error_bound", self.max_error_bound, gt=0, le=1)
        if self.keep_best < 0:
            out.append(f"keep_best must be >= 0, got {self.keep_best}")
        out += check_float("duplicate_distance", self.duplicate_distance, ge=0)
        return out


@dataclass(frozen=True)
class AggregationSection:
    """Secure by default: ``mask`` (SecAgg+). ``plaintext`` is the insecure baseline and
    runs only when asked for by name (with a banner)."""

    mode: AggregationMode = AggregationMode.MASK
    weighting: Weighting = Weighting.EQUAL
    mask: MaskSettings = field(default_factory=MaskSettings)
    he: HESettings = field(default_factory=HESettings)

    def problems(self) -> list[str]:
        """What the protocols' own settings checks let through (NaN compares False).

        The settings objects in protocols/ check their ranges themselves (reported
        under ``aggregation.mask`` / ``aggregation.he``); here every float they take is
        also required to be finite, so a NaN or infinity never reaches a protocol.
        """
        out = []
        for section, obj in (("mask", self.mask), ("he", self.he)):
            for f in dataclasses.fields(obj):
                v = getattr(obj, f.name)
                if isinstance(v, float) and not math.isfinite(v):
                    out.append(f"{section}.{f.name} must be a finite number, got {v!r}")
        return out


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
    defence: DefenceConfig = field(default_factory=DefenceConfig)

    def mask_settings(self) -> MaskSettings:
        """Mask mode's settings as every role uses them: under equal weighting every
        weight is 1, so ``max_weight`` is 1 and the fixed-point encoding is
        ``aggregation.mask.max_weight`` (1024) times finer than under ``records``."""
        mask = self.aggregation.mask
        if self.privacy.mechanism is Mechanism.DISTRIBUTED:
            # integers on the DP grid, summed modulo 2^64 (protocols.secagg.stepped)
            mask = dataclasses.replace(mask, bits=64)
        if self.aggregation.weighting is Weighting.EQUAL:
            return dataclasses.replace(mask, max_weight=1.0)
        return mask

    def he_settings(self) -> HESettings:
        """HE mode's settings, with the group-size floor of ``assignment``, with the
        trust check on ``fold_dim = trust.sketch_dim`` (the auditor judges folds), and
        under equal weighting ``equal_weights`` and a ``weight_unit`` of 1."""
        return dataclasses.replace(
            self.aggregation.he,
            min_group_size=self.assignment.min_group_size,
            fold_dim=self.trust.sketch_dim if self.trust.enabled else 0,
            equal_weights=self.aggregation.weighting is Weighting.EQUAL,
            # every weight is 1 under equal weighting: so is its normaliser
            weight_unit=1.0
            if self.aggregation.weighting is Weighting.EQUAL
            else self.aggregation.he.weight_unit,
        )

    def he_problems(self) -> list[str]:
        """HE mode with the trust check, in every runtime: the fold it needs."""
        if self.aggregation.mode is not AggregationMode.HE:
            return []
        fold_dim = self.trust.sketch_dim if self.trust.enabled else 0
        out = []
        if self.trust.enabled and not fold_dim:
            out.append(
                "trust.sketch_dim must be > 0 in HE mode: the auditor judges folds of the "
                "ciphertexts to that many slots, never a raw update"
            )
        if self.aggregation.he.fold_dim not in (0, fold_dim):
            out.append(
                f"aggregation.he.fold_dim = {self.aggregation.he.fold_dim} must be 0 or, with "
                f"the trust check on, trust.sketch_dim ({self.trust.sketch_dim}): it is set from it"
            )
        if fold_dim:
            out += [f"aggregation.he with trust: {p}" for p in self.he_settings().problems()]
        return out

    def table_problems(self) -> list[str]:
        """The agencies' own tables (dataset = 'csv') against the runtime, the evaluation
        and the attack; ``evaluation.holdout`` against the dataset."""
        d, e, runtime = self.data, self.evaluation, self.run.runtime
        out = []
        if e.holdout and d.dataset.is_builtin:
            out.append(
                f"evaluation.holdout applies to dataset = 'csv' only: the coordinator of a "
                f"{d.dataset.value!r} run holds out data.holdout_fraction of it"
            )
        if e.holdout and e.mode is not EvaluationMode.HOLDOUT:
            out.append("evaluation.holdout needs evaluation.mode = 'holdout'")
        if e.holdout and runtime is Runtime.FLOWER and not Path(e.holdout).is_absolute():
            out.append(
                f"evaluation.holdout must be an absolute path (the ServerApp's working "
                f"directory is Flower's), got {e.holdout!r}"
            )
        if d.dataset.is_builtin:
            return out
        if e.mode is EvaluationMode.HOLDOUT and not e.holdout:
            out.append(
                "dataset = 'csv' in holdout evaluation needs evaluation.holdout = FILE (the "
                "coordinator's own labelled records, with the agencies' columns), or "
                "evaluation.mode = 'federated'"
            )
        if e.holdout and d.path and Path(e.holdout).resolve().parent == Path(d.path).resolve():
            out.append(
                f"evaluation.holdout {e.holdout!r} lies in data.path, where every table is an "
                "agency's: keep the coordinator's file elsewhere"
            )
        if runtime is Runtime.FLOWER and d.path:
            out.append(
                "data.path: a deployed coordinator holds no agency's file (each node reads "
                "its own records): remove it and declare data.features and data.classes"
            )
        elif not d.path and runtime is not Runtime.FLOWER:
            out.append(
                "dataset = 'csv' needs data.path = the directory of the agencies' tables "
                "(one <participant id>.csv per agency)"
            )
        elif not d.path and not (d.features and d.classes):
            out.append(
                "dataset = 'csv' under run.runtime = 'flower' needs data.features and "
                "data.classes declared: each node reads only its own records, and every node "
                "and the coordinator must agree on the model's inputs and classes first"
            )
        if self.attack.enabled and d.path:
            ids = set(d.ids())
            unknown = sorted(set(self.attack.participants) - ids)
            if unknown:
                out.append(
                    f"attack.participants: no such participant(s) {', '.join(unknown)} "
                    f"(the files under data.path: {', '.join(sorted(ids))})"
                )
        elif self.attack.enabled and not self.attack.participants:
            out.append(
                "attack.fraction draws the attackers among data.path's agencies: without "
                "data.path, list them in attack.participants"
            )
        return out

    def problems(self) -> list[str]:
        out = self.he_problems()
        a, d = self.assignment, self.data
        p = a.participation
        active = int(d.participants * p) if math.isfinite(p) and 0 < p <= 1 else d.participants
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
        if (
            self.attack.enabled
            and self.attack.kind is AttackKind.SEED_OMISSION
            and not (self.aggregation.mode is AggregationMode.MASK and self.trust.enabled)
        ):
            out.append(
                "attack.kind = 'seed_omission' lies in the mask mode's binding report: it "
                "needs aggregation.mode = 'mask' and trust.enabled = true"
            )
        out += self.table_problems()
        if self.attack.enabled and self.attack.participants and d.dataset.is_builtin:
            # the ids are p00 .. p<n-1>, zero-padded: checked without listing all n of them
            last = _last_participant_id(d.participants)
            width = len(last) - 1
            unknown = sorted(
                pid
                for pid in set(self.attack.participants)
                if not (
                    pid[:1] == "p"
                    and pid[1:].isascii()
                    and pid[1:].isdigit()
                    and len(pid) - 1 == width
                    and int(pid[1:]) < d.participants
                )
            )
            if unknown:
                out.append(
                    f"attack.participants: no such participant(s) {', '.join(unknown)} "
                    f"(ids are p{'0' * width} .. {last})"
                )
        out += self.dp_release_problems()
        out += self.distributed_problems()
        if self.defence.enabled and self.evaluation.mode is not EvaluationMode.HOLDOUT:
            on = ["tuning_steps > 0"] if self.defence.tuning_steps > 0 else []
            on += ["prune = true"] if self.defence.prune else []
            out.append(
                f"defence.{' and defence.'.join(on)} acts on the coordinator's held-out "
                "records: it needs evaluation.mode = 'holdout' (set it explicitly under the "
                "Flower runtime), or defence.tuning_steps = 0 and defence.prune = false"
            )
        from securepool.sizes import size_problems

        out += size_problems(self)
        return out

    def dp_release_problems(self) -> list[str]:
        """With DP on, every release that depends on a participant's records must be a
        noised update under the public schedule: what would release its record count
        or exact statistics of its records is refused, with the reason."""
        if not self.privacy.enabled:
            return []
        out = []
        if self.aggregation.weighting is Weighting.RECORDS:
            out.append(
                "aggregation.weighting = 'records' with privacy.enabled = true: each "
                "update's weight would be its participant's record count, which the "
                "epsilon does not cover (it bounds adding or removing one record with the "
                "count hidden); use weighting = 'equal'"
            )
        if self.evaluation.mode is EvaluationMode.FEDERATED:
            default = (
                " (the default under run.runtime = 'flower')"
                if self.run.runtime is Runtime.FLOWER
                else ""
            )
            out.append(
                f"evaluation.mode = 'federated'{default} with privacy.enabled = true: "
                "participants would report exact error counts on their own records, a "
                "release the epsilon does not cover; set evaluation.mode = 'holdout' "
                "(the coordinator's held-out records)"
            )
        if self.data.scaling is Scaling.FEDERATED:
            out.append(
                "data.scaling = 'federated' with privacy.enabled = true: the statistics "
                "round releases exact sums over every agency's records (their mean and "
                "spread), which the epsilon does not cover; use data.scaling = 'fixed' "
                "(and give the records in comparable units)"
            )
        if self.trust.enabled and self.trust.voting is VotingRule.VALIDATION:
            out.append(
                "trust.voting = 'validation' with privacy.enabled = true: each voter "
                "scores its peers by their loss on its own training records and those "
                "scores and flags are released without noise, which the epsilon does not "
                "cover; use another trust.voting rule"
            )
        return out

    def distributed_problems(self) -> list[str]:
        """``privacy.mechanism = "distributed"`` needs what its noise shares rely on:
        DP on, the masked sum (mask mode) and nothing that releases one member's share."""
        if self.privacy.mechanism is not Mechanism.DISTRIBUTED:
            return []
        out = []
        if not self.privacy.enabled:
            out.append(
                "privacy.mechanism = 'distributed' needs privacy.enabled = true (it says "
                "where the DP-SGD noise is added)"
            )
        if self.aggregation.mode is not AggregationMode.MASK:
            out.append(
                f"privacy.mechanism = 'distributed' with aggregation.mode = "
                f"'{self.aggregation.mode.value}': each member adds only a share of the noise, "
                "which is enough only inside a sum whose parts nobody sees, taken once per "
                "DP-SGD step; that is the mask mode's multi-step SecAgg+ session (set "
                "aggregation.mode = 'mask')"
            )
        if self.trust.enabled:
            out.append(
                "privacy.mechanism = 'distributed' with trust.enabled = true: the trust "
                "check opens per-member summaries of each member's input to the auditor, and "
                "a member's input carries only its share of the noise, which the epsilon "
                "does not cover alone; set trust.enabled = false (or privacy.mechanism = "
                "'local')"
            )
        if self.attack.enabled:
            out.append(
                "privacy.mechanism = 'distributed' with [attack]: the attack kinds lie about a "
                "member's update, and under this mechanism members send noised gradient sums "
                "step by step; run the attacks with privacy.mechanism = 'local'"
            )
        return out


def federated_scaling(cfg: RunConfig) -> bool:
    """Whether the run standardises its inputs by the federation's statistics, computed
    under secure aggregation before the first iteration (``data.scaling``)."""
    scaling = cfg.data.scaling
    if scaling is Scaling.AUTO:
        return cfg.data.dataset is Dataset.CSV and not cfg.privacy.enabled
    return scaling is Scaling.FEDERATED


def _last_participant_id(n: int) -> str:
    """The last of :func:`participant_ids` ``(n)`` (without building the list)."""
    width = max(2, len(str(n - 1)))
    return f"p{n - 1:0{width}d}"


def parse_config(table: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a parsed TOML table; raise ConfigError listing all."""
    problems: list[str] = []
    agg = table.get("aggregation")
    he = agg.get("he") if isinstance(agg, dict) else None
    if isinstance(he, dict) and "min_group_size" in he:
        problems.append(
            "config.aggregation.he.min_group_size: not a setting of its own; HE mode uses "
            "assignment.min_group_size (remove this key)"
        )
    mask = agg.get("mask") if isinstance(agg, dict) else None
    weighting = agg.get("weighting", Weighting.EQUAL.value) if isinstance(agg, dict) else "equal"
    for section, key in ((mask, "max_weight"), (he, "weight_unit")):
        if isinstance(section, dict) and key in section and weighting == Weighting.EQUAL.value:
            where = "mask" if section is mask else "he"
            problems.append(
                f"config.aggregation.{where}.{key}: applies under aggregation.weighting = "
                '"records" only; under "equal" every weight is 1 (remove this key, or '
                "weigh by records)"
            )
    if isinstance(he, dict) and "equal_weights" in he:
        problems.append(
            "config.aggregation.he.equal_weights: not a setting of its own; HE mode uses "
            "aggregation.weighting (remove this key)"
        )
    run = table.get("run")
    evaluation = table.get("evaluation")
    table = _with_agencies(table, problems)
    if (
        isinstance(run, dict)
        and run.get("runtime") == Runtime.FLOWER.value
        and not (isinstance(evaluation, dict) and ("mode" in evaluation or "holdout" in evaluation))
    ):
        # a deployed coordinator holds no test set: participants report error counts
        table = {**table, "evaluation": {**(evaluation or {}), "mode": "federated"}}
    cfg = load_section(RunConfig, table, path="config", problems=problems)
    if problems:
        raise ConfigError(p.removeprefix("config.").removeprefix("config: ") for p in problems)
    return cfg


#: [data] keys of a built-in dataset's split, not of the agencies' own tables
_SPLIT_KEYS = ("partition", "alpha", "holdout_fraction")


def _with_agencies(table: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """``table`` with ``data.participants`` set to the number of agency tables under
    ``data.path`` (dataset = 'csv'), so that every check of the run's size sees them;
    the keys of a built-in split are refused there (they would be ignored)."""
    data = table.get("data")
    if not isinstance(data, dict) or data.get("dataset") != Dataset.CSV.value:
        return table
    problems += [
        f"config.data.{k}: splits a built-in dataset; with dataset = 'csv' each agency's "
        "table is its share (remove this key)"
        for k in _SPLIT_KEYS
        if k in data
    ]
    path = data.get("path")
    if not isinstance(path, str) or not path:
        return table
    if "participants" in data:
        problems.append(
            "config.data.participants: with data.path, the participants are its files "
            "(one per agency): remove this key"
        )
    files, found = agency_files(Path(path))
    problems += [f"config.{p}" for p in found]
    if len(files) < 3:
        return table
    return {**table, "data": {**data, "participants": len(files)}}


def load_config(path: Path) -> RunConfig:
    """Read and validate a TOML run configuration."""
    return parse_config(parse_toml(read_config_text(path), path))


def read_config_text(path: Path) -> str:
    """The text of a config file; ConfigError (one line) if it is missing or not text."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config path is a directory, not a TOML file: {path}"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"{path}: not a text file (invalid UTF-8 at byte {exc.start}); a TOML file is needed"]
        ) from None


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """Parse TOML text; ConfigError naming the file and the TOML error otherwise."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
