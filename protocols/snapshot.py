"""Snapshots of a protocol state machine, for nodes that live one message at a time.

Flower 1.42 starts a new ClientApp process for every message, so a participant's beacon
and SecAgg+ state machines cannot stay in memory between stages. :func:`snapshot`
writes an object's attributes as tagged JSON; :func:`restore` rebuilds it without
running ``__init__`` and puts back the attributes the caller owns (the identity key, the
session history, the settings), which a snapshot never holds.

Only a closed set of types is written: JSON scalars, bytes, lists, tuples, sets,
frozensets, dicts with str keys, float32/uint numpy arrays, members of the enums named,
frozen dataclasses named in ``classes`` (field by field) and the protocol messages named
in ``messages`` (through their own ``to_bytes``/``from_bytes``, so restoring one re-runs
its parser), and X25519 agreement keys. Anything else raises :class:`MessageError`, so a
new attribute of an unsupported type fails loudly in the tests instead of being lost.

Security: a snapshot holds the state machine's secrets (X25519 private keys, the
self-mask seed, the beacon nonce, the plaintext update). It is the node's own file: the
caller writes it with owner-only permissions in the node's state directory and deletes
it when the session ends; it never crosses a link. :func:`restore` only instantiates the
classes the caller names: it is not a general deserialiser.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from crypto.agreement import AgreementKey
from crypto.errors import MessageError

T = TypeVar("T")
VERSION = 1
_ARRAY_DTYPES = ("<f4", "<f8", "<u4", "<u8", "<i8")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class _Codec:
    def __init__(
        self,
        enums: Iterable[type[Enum]],
        classes: Iterable[type],
        messages: Iterable[type],
    ) -> None:
        self.enums = {_qualname(c): c for c in enums}
        self.classes = {_qualname(c): c for c in classes}
        self.messages = {_qualname(c): c for c in messages}

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int | float) and not isinstance(value, Enum):
            return value
        if isinstance(value, bytes):
            return {"t": "bytes", "v": value.hex()}
        if isinstance(value, Enum):
            name = _qualname(type(value))
            if name not in self.enums:
                raise MessageError(f"snapshot: enum {name} is not allowed")
            return {"t": "enum", "c": name, "v": value.name}
        if isinstance(value, AgreementKey):
            return {"t": "x25519", "v": value.private_bytes().hex()}
        if isinstance(value, np.ndarray):
            dtype = value.dtype.newbyteorder("<").str
            if dtype not in _ARRAY_DTYPES or value.ndim != 1:
                raise MessageError(f"snapshot: array of {value.dtype} / {value.ndim}-d")
            raw = np.ascontiguousarray(value, dtype=dtype).tobytes()
            return {"t": "array", "d": dtype, "v": raw.hex()}
        name = _qualname(type(value))
        if name in self.messages:
            return {"t": "msg", "c": name, "v": value.to_bytes().hex()}
        if name in self.classes and dataclasses.is_dataclass(value):
            fields = {
                f.name: self.encode(getattr(value, f.name)) for f in dataclasses.fields(value)
            }
            return {"t": "dc", "c": name, "v": fields}
        if isinstance(value, tuple | list):
            return {"t": type(value).__name__, "v": [self.encode(v) for v in value]}
        if isinstance(value, set | frozenset):
            items = sorted((self.encode(v) for v in value), key=json.dumps)
            return {"t": type(value).__name__, "v": items}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise MessageError("snapshot: dict keys must be str")
            return {"t": "dict", "v": {k: self.encode(v) for k, v in value.items()}}
        raise MessageError(f"snapshot: cannot write a {name}")

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | str | int | float):
            return node
        if not isinstance(node, dict) or "t" not in node or "v" not in node:
            raise MessageError("snapshot: malformed value")
        tag, v = node["t"], node["v"]
        try:
            if tag == "bytes":
                return bytes.fromhex(v)
            if tag == "x25519":
                return AgreementKey.from_private_bytes(bytes.fromhex(v))
            if tag == "array":
                if node["d"] not in _ARRAY_DTYPES:
                    raise MessageError(f"snapshot: array dtype {node['d']!r}")
                return np.frombuffer(bytes.fromhex(v), dtype=node["d"]).copy()
            if tag == "enum":
                return self.enums[node["c"]][v]
            if tag == "msg":
                parse = getattr(self.messages[node["c"]], "from_bytes")  # noqa: B009
                return parse(bytes.fromhex(v))
            if tag == "dc":
                cls = self.classes[node["c"]]
                return cls(**{k: self.decode(x) for k, x in v.items()})
            if tag in ("tuple", "list", "set", "frozenset"):
                items = [self.decode(x) for x in v]
                return {"tuple": tuple, "list": list, "set": set, "frozenset": frozenset}[tag](
                    items
                )
            if tag == "dict":
                return {str(k): self.decode(x) for k, x in v.items()}
        except KeyError as exc:
            raise MessageError(f"snapshot: {exc} is not an allowed class") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise MessageError(f"snapshot: bad {tag} value: {exc}") from None
        raise MessageError(f"snapshot: unknown tag {tag!r}")


def snapshot(
    obj: object,
    *,
    omit: Iterable[str],
    enums: Iterable[type[Enum]] = (),
    classes: Iterable[type] = (),
    messages: Iterable[type] = (),
) -> bytes:
    """``obj``'s attributes (but ``omit``) as versioned, tagged JSON bytes.

    Raises MessageError for an attribute of a type not listed (see the module doc).
    """
    codec = _Codec(enums, classes, messages)
    skip = set(omit)
    state = {k: codec.encode(v) for k, v in sorted(vars(obj).items()) if k not in skip}
    doc = {"version": VERSION, "class": _qualname(type(obj)), "state": state}
    return json.dumps(doc, sort_keys=True).encode()


def restore(
    cls: type[T],
    data: bytes,
    *,
    inject: Mapping[str, Any],
    enums: Iterable[type[Enum]] = (),
    classes: Iterable[type] = (),
    messages: Iterable[type] = (),
) -> T:
    """Rebuild a ``cls`` written by :func:`snapshot`; ``inject`` sets the omitted attributes.

    Raises MessageError if the bytes are not a snapshot of ``cls`` of this version, hold
    a value of a type not listed, or name an attribute that is not plain instance state
    (a dunder such as ``__class__``, or a name the class itself defines, such as a
    method: a snapshot only ever holds ``vars(obj)``).
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MessageError("snapshot: not JSON") from None
    if (
        not isinstance(doc, dict)
        or doc.get("version") != VERSION
        or doc.get("class") != _qualname(cls)
        or not isinstance(doc.get("state"), dict)
    ):
        raise MessageError(f"snapshot: not a version-{VERSION} snapshot of {_qualname(cls)}")
    codec = _Codec(enums, classes, messages)
    obj = cls.__new__(cls)
    for key, value in doc["state"].items():
        if not key.isidentifier() or key.startswith("__") or hasattr(cls, key):
            # e.g. "__class__", or "handle" shadowing a method: never instance state
            raise MessageError(f"snapshot: {key!r} is not an attribute a snapshot restores")
        try:
            setattr(obj, key, codec.decode(value))
        except RecursionError:
            raise MessageError(f"snapshot: {key!r} is nested too deeply") from None
    for key, value in inject.items():
        setattr(obj, key, value)
    return obj
