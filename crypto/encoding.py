"""Injective encodings of what gets signed, MACed, bound as AAD or used as HPKE ``info``.

Joining fields with a separator (``b"|"``, ``b"\\x00"``) is not injective: the fields
``("a|b", "c")`` and ``("a", "b|c")`` give the same bytes, so a signature over one is a
signature over the other. :func:`bind` instead writes a versioned domain tag and every
field with a fixed-width length prefix, so two different field tuples (or domains)
never give the same bytes.

Layout: ``b"SPB1" | u16 len(domain) | domain | u32 count | (u32 len(field) | field)*``,
all big-endian.

Identifiers that enter a bound payload (participant ids, session strings) are checked
by :func:`require_identifier` where they enter, so that the same id cannot be spelled
two ways (Unicode look-alikes, surrounding whitespace, control characters).
"""

from __future__ import annotations

import re
import struct
from typing import Final

from crypto._validate import require_bytes
from crypto.errors import CryptoError, CryptoTypeError

_TAG: Final = b"SPB1"
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
MAX_IDENTIFIER: Final = 128
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*\Z")


def bind(domain: bytes, *fields: bytes | str | int) -> bytes:
    """The injective encoding of ``fields`` under ``domain`` (see the module docstring).

    ``str`` fields are encoded as UTF-8 and ``int`` fields as 8-byte big-endian
    two's-complement, each with a one-byte type tag, so ``"1"`` and ``1`` and ``b"1"``
    differ too.

    Security: for any two calls, equal outputs imply equal domains and equal field
    tuples (same types, same values): a signature or MAC over the output commits to
    every field exactly. Put the protocol, message kind and version into ``domain``.
    Raises CryptoTypeError for a field of another type and CryptoError for a field
    longer than 2^32 - 1 bytes or an int outside the signed 64-bit range.
    """
    domain = require_bytes("domain", domain)
    if len(domain) > 0xFFFF:
        raise CryptoError(f"domain tag must be at most 65535 bytes, got {len(domain)}")
    parts = [_TAG, _U16.pack(len(domain)), domain, _U32.pack(len(fields))]
    for i, field in enumerate(fields):
        if isinstance(field, bool):
            raise CryptoTypeError(f"field {i} must be bytes, str or int, got bool")
        if isinstance(field, bytes):
            raw = b"b" + field
        elif isinstance(field, str):
            raw = b"s" + field.encode("utf-8")
        elif isinstance(field, int):
            if not -(1 << 63) <= field < (1 << 63):
                raise CryptoError(f"int field {i} is outside the signed 64-bit range")
            raw = b"i" + field.to_bytes(8, "big", signed=True)
        else:
            raise CryptoTypeError(
                f"field {i} must be bytes, str or int, got {type(field).__name__}"
            )
        if len(raw) > 0xFFFFFFFF:
            raise CryptoError(f"field {i} is longer than 2^32 - 1 bytes")
        parts += [_U32.pack(len(raw)), raw]
    return b"".join(parts)


def require_identifier(name: str, value: object) -> str:
    """``value`` if it is a valid participant id or session string, else an error.

    Valid: 1 to 128 ASCII characters, starting with a letter or digit, then letters,
    digits and ``. _ : / @ + -``. No whitespace, control or non-ASCII characters.

    Security: one identity has one spelling, so an id checked here cannot alias
    another in a bound payload, a file name or a log line. Raises CryptoTypeError for a
    non-``str`` and CryptoError (naming ``name``) for an invalid string.
    """
    if not isinstance(value, str):
        raise CryptoTypeError(f"{name} must be str, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_IDENTIFIER or not _IDENTIFIER.match(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise CryptoError(
            f"{name} {shown!r} is not a valid identifier (1-{MAX_IDENTIFIER} ASCII "
            "letters, digits and . _ : / @ + -, starting with a letter or digit)"
        )
    return value
