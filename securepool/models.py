"""The base models of the pool (P1) and the flat-vector view protocols/ works on.

Every built-in architecture here is Opacus-compatible (no BatchNorm: GroupNorm instead),
so the same pool trains with or without differential privacy. ``arch = "custom"`` is the
user's own module, built by its factory and checked (:func:`custom_model`) wherever a
model is built: the coordinator, every node, ``load_pool`` and the audit all come here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

if TYPE_CHECKING:
    from securepool.config import ModelSpec

from crypto.errors import ConfigError
from securepool.architecture import Architecture, parse_factory

log = logging.getLogger("securepool.models")

#: rows of the dummy batch a custom model is checked on
CHECK_ROWS = 2


def build_model(
    arch: Architecture,
    *,
    n_features: int,
    n_classes: int,
    seed: int,
    hidden: int | None = None,
    factory: str = "",
) -> nn.Module:
    """A freshly initialised model; the same (arch, shape, seed) gives the same weights.

    ``hidden`` is the mlp's width (None: 64); the other architectures have none.
    ``factory`` is a custom model's ``"package.module:function"`` (arch custom only);
    a factory that cannot be used is a ConfigError (:func:`custom_model`).
    """
    if arch is Architecture.CUSTOM:
        return custom_model(factory, n_features=n_features, n_classes=n_classes, seed=seed)
    if factory:
        raise ConfigError(
            [f"factory {factory!r} applies to arch = 'custom' only, not {arch.value!r}"]
        )
    torch.manual_seed(seed)
    hidden = 64 if hidden is None else hidden
    if arch is Architecture.LOGREG:
        return nn.Sequential(nn.Linear(n_features, n_classes))
    if arch is Architecture.MLP:
        return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    side = int(round(n_features**0.5))
    if side * side != n_features:
        raise ValueError(f"cnn needs square images; {n_features} features is not a square")
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.GroupNorm(4, 32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4, n_classes),
    )


def build_spec_model(spec: ModelSpec, *, n_features: int, n_classes: int) -> nn.Module:
    """The pool model ``spec`` (a ``[[pool.models]]`` entry) names, freshly initialised:
    what the coordinator, every node, the run's checks and the audit build alike."""
    return build_model(
        spec.arch,
        n_features=n_features,
        n_classes=n_classes,
        seed=spec.seed,
        hidden=spec.hidden,
        factory=spec.factory,
    )


def load_factory(factory: str) -> Callable[..., Any]:
    """The function ``"package.module:function"`` names; ConfigError saying why not
    (bad syntax, the module cannot be imported or raised while importing, no such
    attribute, not callable)."""
    try:
        module_name, attr = parse_factory(factory)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            [
                f"factory {factory!r}: cannot import module {module_name!r} ({exc}); it must "
                "be importable (installed, or on the Python path) wherever models are built: "
                "the coordinator, every node and load_pool"
            ]
        ) from None
    except Exception as exc:
        raise ConfigError(
            [f"factory {factory!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"]
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                [
                    f"factory {factory!r}: {getattr(obj, '__name__', module_name)!r} has no "
                    f"attribute {part!r}"
                ]
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            [f"factory {factory!r} names a {type(obj).__name__!r} object, not a function"]
        )
    return obj  # type: ignore[no-any-return]


def custom_model(factory: str, *, n_features: int, n_classes: int, seed: int) -> nn.Module:
    """The user's module: ``function(n_features, n_classes)`` under ``torch.manual_seed(seed)``.

    Checked before it is used, each failure a ConfigError naming the factory: it must
    return a :class:`torch.nn.Module` with at least one parameter, every parameter
    float32 (the pool's vectors are float32), no persistent buffers (BatchNorm's running
    statistics, say: the pool aggregates and ships parameters only, so a buffer would
    silently differ between the trained pool and every loaded copy), and map a dummy
    batch of :data:`CHECK_ROWS` float32 rows of ``n_features`` to logits of shape
    (:data:`CHECK_ROWS`, ``n_classes``) (checked in eval mode, without gradients).
    """
    fn = load_factory(factory)
    torch.manual_seed(seed)
    try:
        model = fn(n_features, n_classes)
    except Exception as exc:
        raise ConfigError(
            [
                f"factory {factory!r} raised {type(exc).__name__} when called as "
                f"({n_features}, {n_classes}) (n_features, n_classes): {exc}"
            ]
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            [f"factory {factory!r} returned a {type(model).__name__}, not a torch.nn.Module"]
        )
    params = list(model.named_parameters())
    if not params:
        raise ConfigError([f"factory {factory!r}: its module has no parameters to train"])
    wrong = [f"{n} ({p.dtype})" for n, p in params if p.dtype != torch.float32]
    if wrong:
        raise ConfigError(
            [f"factory {factory!r}: parameters must be float32, not {', '.join(wrong[:5])}"]
        )
    buffers = [
        f"{prefix}.{name}" if prefix else name
        for prefix, mod in model.named_modules()
        for name, buf in mod.named_buffers(recurse=False)
        if buf is not None and name not in mod._non_persistent_buffers_set
    ]
    if buffers:
        raise ConfigError(
            [
                f"factory {factory!r}: its module keeps buffers ({', '.join(buffers[:5])}), "
                "which the pool does not aggregate or ship (it carries parameters only): "
                "use GroupNorm or LayerNorm instead of BatchNorm, or register constants "
                "with persistent=False"
            ]
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(CHECK_ROWS, n_features, dtype=torch.float32))
    except Exception as exc:
        raise ConfigError(
            [
                f"factory {factory!r}: its module failed on a batch of shape "
                f"({CHECK_ROWS}, {n_features}) (float32 rows of the dataset's features): "
                f"{type(exc).__name__}: {exc}"
            ]
        ) from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (CHECK_ROWS, n_classes):
        got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
        raise ConfigError(
            [
                f"factory {factory!r}: on a batch of shape ({CHECK_ROWS}, {n_features}) its "
                f"module returned {got}; the pool needs logits of shape "
                f"({CHECK_ROWS}, {n_classes}) (rows x n_classes)"
            ]
        )
    log.debug("custom model %s: %d parameters", factory, sum(p.numel() for _, p in params))
    return model


@dataclass(frozen=True)
class Layout:
    """Names and shapes of a model's parameters, to rebuild tensors from a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))


def layout_of(model: nn.Module) -> Layout:
    names, shapes = zip(*[(n, tuple(p.shape)) for n, p in model.named_parameters()], strict=True)
    return Layout(tuple(names), tuple(shapes))


def flatten(model: nn.Module) -> NDArray[np.float32]:
    with torch.no_grad():
        return (
            torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            .numpy()
            .astype(np.float32)
        )


def load_flat(model: nn.Module, vector: NDArray[np.floating], layout: Layout) -> None:
    if vector.shape != (layout.size,):
        raise ValueError(f"vector has shape {vector.shape}, layout needs ({layout.size},)")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            k = p.numel()
            p.copy_(
                torch.from_numpy(np.asarray(vector[offset : offset + k], dtype=np.float32)).reshape(
                    p.shape
                )
            )
            offset += k


__all__ = [
    "Architecture",
    "Layout",
    "build_model",
    "custom_model",
    "flatten",
    "layout_of",
    "load_factory",
    "load_flat",
]
