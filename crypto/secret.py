"""A base class for objects that hold secret key material.

Security: a secret object never shows its material in ``repr``/``str`` and refuses to
be pickled, so it cannot leak into logs, checkpoints or messages by accident.
"""

from __future__ import annotations

from typing import NoReturn


class SecretHolder:
    """Mixin: hides itself in repr and refuses pickling."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (secret, hidden)>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret key material and cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret key material and cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret key material and cannot be pickled")
