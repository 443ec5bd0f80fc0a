"""The base-model architectures a pool can hold (torch-free, so configs load fast)."""

from __future__ import annotations

from enum import Enum


class Architecture(str, Enum):
    LOGREG = "logreg"
    MLP = "mlp"
    CNN = "cnn"
    #: the user's own torch module: ``factory = "package.module:function"`` builds it
    #: (:func:`securepool.models.build_model`)
    CUSTOM = "custom"


def parse_factory(factory: str) -> tuple[str, str]:
    """``"package.module:function"`` -> (module, attribute path); ValueError saying what
    is wrong otherwise. Syntax only: nothing is imported here."""
    module, sep, attr = factory.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"factory must be 'package.module:function', got {factory!r}")
    for part in (*module.split("."), *attr.split(".")):
        if not part.isidentifier():
            raise ValueError(
                f"factory {factory!r}: {part!r} is not a Python name "
                "(expected 'package.module:function')"
            )
    return module, attr
