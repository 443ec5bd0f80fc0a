"""A base class for objects that hold secret key material.

Security: a secret object never shows its material in ``repr``/``str``/``format`` and
refuses to be pickled or copied through pickle's protocol (``copy.copy``,
``copy.deepcopy``, multiprocessing), raising :class:`SecretPicklingError` (a
``TypeError``), so it cannot leak into logs, checkpoints or messages by accident. It
cannot stop code that deliberately reads its attributes: the raw bytes leave only
through methods whose docstrings say why they exist.
"""

from __future__ import annotations

from typing import NoReturn

from crypto.errors import SecretPicklingError


class SecretHolder:
    """Base class: hides itself in repr and refuses pickling and copying.

    Security: subclasses keep their material in ``__slots__`` (no ``__dict__`` to dump)
    and add no ``__repr__`` of their own.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (secret, hidden)>"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def _refuse(self) -> NoReturn:
        raise SecretPicklingError(
            f"{type(self).__name__} holds secret key material and cannot be pickled or copied"
        )

    def __reduce__(self) -> NoReturn:
        self._refuse()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self._refuse()

    def __getstate__(self) -> NoReturn:
        self._refuse()

    def __copy__(self) -> NoReturn:
        self._refuse()

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse()
