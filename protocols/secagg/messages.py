"""SecAgg+ messages: one frozen dataclass each, and their versioned wire format.

Wire format: ``b"SA" | version (1) | kind (1) | header length (4, BE) | header | body``.
The header is canonical JSON (bytes as hex); the body carries the masked vector only,
and its length must equal the header's ``length`` x word size. Every message names its
session, so a message of another session (round) is refused.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError

MAGIC = b"SA"
VERSION = 1
_PREFIX = struct.Struct(">2sBBI")
MAX_HEADER = 64 * 1024 * 1024


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client -> server: two X25519 public keys signed by the identity key."""

    KIND: ClassVar[int] = 1
    session: str
    sender: str
    c_pk: bytes  # for encrypting shares
    s_pk: bytes  # for mask agreement
    signature: bytes


@dataclass(frozen=True)
class KeyDirectory:
    """Stage 0, server -> clients: everybody's advertised keys and the session's rules."""

    KIND: ClassVar[int] = 2
    session: str
    keys: dict[str, tuple[str, str, str]]  # pid -> (c_pk, s_pk, signature) hex
    degree: int
    threshold: int
    graph_seed: bytes
    scale: float
    length: int


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, client -> server: AEAD-encrypted Shamir shares, one per neighbour."""

    KIND: ClassVar[int] = 3
    session: str
    sender: str
    ciphertexts: dict[str, bytes]


@dataclass(frozen=True)
class ShareDelivery:
    """Stage 1, server -> client: the ciphertexts addressed to it."""

    KIND: ClassVar[int] = 4
    session: str
    ciphertexts: dict[str, bytes]  # sender -> ciphertext


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, client -> server: the masked vector, and the summary sealed to the auditor."""

    KIND: ClassVar[int] = 5
    session: str
    sender: str
    sealed_summary: bytes
    vector: NDArray[np.unsignedinteger]


@dataclass(frozen=True)
class SurvivorList:
    """Stage 3, server -> clients: who is in the aggregate (masked input in, not flagged)."""

    KIND: ClassVar[int] = 6
    session: str
    survivors: tuple[str, ...]


@dataclass(frozen=True)
class ConsistencySignature:
    """Stage 3, client -> server: the client's signature over the survivor list."""

    KIND: ClassVar[int] = 7
    session: str
    sender: str
    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 4, server -> clients: survivors, dropped, and everybody's consistency signatures."""

    KIND: ClassVar[int] = 8
    session: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: dict[str, bytes]


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 4, client -> server: self-mask shares of survivors, key shares of the dropped."""

    KIND: ClassVar[int] = 9
    session: str
    sender: str
    b_shares: dict[str, bytes]
    s_shares: dict[str, bytes]


Message = (
    AdvertiseKeys
    | KeyDirectory
    | ShareKeys
    | ShareDelivery
    | MaskedInput
    | SurvivorList
    | ConsistencySignature
    | UnmaskRequest
    | UnmaskResponse
)
_TYPES: dict[int, Any] = {
    t.KIND: t
    for t in (
        AdvertiseKeys,
        KeyDirectory,
        ShareKeys,
        ShareDelivery,
        MaskedInput,
        SurvivorList,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"hex"}:
            return bytes.fromhex(value["hex"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


def encode_message(msg: Message) -> bytes:
    """Serialise a message to its wire form."""
    header: dict[str, Any] = {}
    body = b""
    for f in fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, np.ndarray):
            header["__dtype"] = np.dtype(value.dtype).str
            header["__length"] = int(value.size)
            body = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes()
        else:
            header[f.name] = _to_json(value)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, msg.KIND, len(raw)) + raw + body


def decode_message(data: bytes, expected: type[Any] | None = None) -> Any:
    """Parse a wire message; raise MessageError for anything malformed.

    Security: checks magic, version, kind, header length, field names and types, and the
    body length before building the message; never evaluates anything from the input.
    """
    if not isinstance(data, bytes | bytearray) or len(data) < _PREFIX.size:
        raise MessageError("message shorter than its prefix")
    magic, version, kind, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise MessageError("not a SecAgg+ message (bad magic)")
    if version != VERSION:
        raise MessageError(f"message version {version}, expected {VERSION}")
    cls = _TYPES.get(kind)
    if cls is None:
        raise MessageError(f"unknown message kind {kind}")
    if expected is not None and cls is not expected:
        raise MessageError(f"expected {expected.__name__}, got {cls.__name__}")
    if hlen > MAX_HEADER or _PREFIX.size + hlen > len(data):
        raise MessageError("header length out of range")
    try:
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MessageError("header is not an object")
    body = bytes(data[_PREFIX.size + hlen :])
    kwargs: dict[str, Any] = {}
    names = [f.name for f in fields(cls)]
    for f in fields(cls):
        if f.name == "vector":
            try:
                dtype = np.dtype(header.pop("__dtype"))
                length = int(header.pop("__length"))
            except (KeyError, TypeError, ValueError):
                raise MessageError("vector message without a valid dtype/length") from None
            if dtype.str not in ("<u4", "<u8") or len(body) != length * dtype.itemsize:
                raise MessageError(f"vector body has {len(body)} bytes for {length} x {dtype}")
            kwargs["vector"] = np.frombuffer(body, dtype=dtype).astype(dtype.newbyteorder("="))
        elif f.name not in header:
            raise MessageError(f"{cls.__name__} lacks field {f.name!r}")
        else:
            kwargs[f.name] = _from_json(header.pop(f.name))
    if header:
        raise MessageError(f"{cls.__name__} has unknown fields {sorted(header)}")
    if body and "vector" not in names:
        raise MessageError(f"{cls.__name__} carries an unexpected body")
    msg = cls(**kwargs)
    _check_types(msg)
    return msg


_FIELD_TYPES: dict[str, Any] = {
    "session": str,
    "sender": str,
    "c_pk": bytes,
    "s_pk": bytes,
    "signature": bytes,
    "graph_seed": bytes,
    "sealed_summary": bytes,
    "degree": int,
    "threshold": int,
    "length": int,
    "scale": float,
}


def _check_types(msg: Any) -> None:
    for f in fields(msg):
        value = getattr(msg, f.name)
        want = _FIELD_TYPES.get(f.name)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(msg, f.name, float(value))
            continue
        if want is not None and (not isinstance(value, want) or isinstance(value, bool)):
            raise MessageError(f"field {f.name} must be {want.__name__}")
        if f.name in ("ciphertexts", "b_shares", "s_shares", "signatures"):
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, bytes) for k, v in value.items()
            ):
                raise MessageError(f"field {f.name} must map names to bytes")
        if f.name in ("survivors", "dropped"):
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise MessageError(f"field {f.name} must be a list of names")
        if f.name == "keys":
            if not isinstance(value, dict) or not all(
                isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, str) for x in v)
                for v in value.values()
            ):
                raise MessageError("field keys must map names to three hex strings")
