"""A participant node's own state files, authenticated under a key only the node holds.

A node keeps two files in its state directory (:mod:`securepool.node.app`):
``node_state.json`` (its privacy ledger and its last beacon and SecAgg+ iterations, the
counters that refuse replayed rounds) and, while an iteration is open, ``session.json``
(its beacon and SecAgg+ state machines). Each is a JSON object written by
:func:`seal_node_file`: the object, plus ``format``, ``kind`` (the file's name) and
``node`` (the node id), plus a last member ``"mac"``, the HMAC-SHA256 tag
(:class:`crypto.mac.MacKey`) of the exact bytes before it. The key is derived from the
node's identity key (:func:`node_file_key`), so nobody without that key can write a file
the node accepts, and the tag binds the format version, the file kind and the node id:
a ``session.json`` is never accepted as a ``node_state.json``, nor one node's file by
another node. The file stays readable JSON (an operator, or a test, can look at it).

:func:`open_node_file` checks the tag over the raw bytes before parsing anything, and
raises only typed errors: MessageError (no tag in the place it is written: not a file
of this format, or cut short), InvalidSignature (the tag does not verify: an edit,
another node's file, a torn write), SecurityViolation (a verified file that names
another format, kind or node: a bug, never an attacker without the key).

What a MAC cannot give: freshness. An older copy of the node's own file verifies (the
caller binds what it can, e.g. the session file to the counters it was written at), and
anyone who can read the node's identity key can write files the node accepts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crypto.encoding import bind
from crypto.errors import InvalidSignature, MessageError, SecurityViolation
from crypto.mac import TAG_SIZE, MacKey
from crypto.signing import IdentityKey

FORMAT = "securepool/node-file/v1"
#: the HKDF label of the key (one key per node, for all its state files)
MAC_KEY_LABEL = b"securepool/node-file/mac-key/v1"
_TAG_LABEL = b"securepool/node-file/v1"
_HEAD = b',"mac":"'
_END = b'"}\n'
_TAIL_SIZE = len(_HEAD) + 2 * TAG_SIZE + len(_END)
_HEX = frozenset(b"0123456789abcdef")
_RESERVED = ("format", "kind", "node", "mac")


def node_file_key(identity: IdentityKey) -> MacKey:
    """The key a node's state files are authenticated under (derived from its identity
    key, the same after every restart).

    Security: only the identity key's holder can compute it (HKDF under its own label,
    :meth:`crypto.signing.IdentityKey.derive_mac_key`); it is used for nothing else.
    """
    return identity.derive_mac_key(label=MAC_KEY_LABEL)


def _tagged(body: bytes, *, kind: str, node: str) -> bytes:
    return bind(_TAG_LABEL, FORMAT, kind, node, body)


def seal_node_file(doc: Mapping[str, Any], *, key: MacKey, kind: str, node: str) -> bytes:
    """``doc`` as the bytes of an authenticated state file (see the module docstring).

    Security: the tag covers every byte of the file before it, with the format, the
    ``kind`` and the ``node`` bound in (an injective encoding, :func:`crypto.encoding.bind`);
    ``doc`` may not set those members itself (MessageError).
    """
    clash = [k for k in _RESERVED if k in doc]
    if clash:
        raise MessageError(f"{kind}: {clash} are the file's own members")
    body = json.dumps({**doc, "format": FORMAT, "kind": kind, "node": node}, sort_keys=True)
    raw = body.encode()
    tag = key.tag(_tagged(raw, kind=kind, node=node), label=_TAG_LABEL)
    return raw[:-1] + _HEAD + tag.hex().encode() + _END


def open_node_file(data: bytes, *, key: MacKey, kind: str, node: str) -> dict[str, Any]:
    """The object a :func:`seal_node_file` file holds, once its tag verifies under ``key``
    for this ``kind`` and ``node``.

    Security: nothing of ``data`` is parsed before its tag verified (the tag sits at a
    fixed place at the end, lower-case hex, so there is exactly one accepted encoding of
    each file); raises MessageError, InvalidSignature or SecurityViolation, nothing
    else. It does not say the file is the newest one the node wrote.
    """
    if not isinstance(data, bytes):
        raise MessageError(f"{kind}: expected bytes, got {type(data).__name__}")
    tail = data[-_TAIL_SIZE:]
    hexed = tail[len(_HEAD) : len(_HEAD) + 2 * TAG_SIZE]
    if (
        len(data) <= _TAIL_SIZE + 1
        or not tail.startswith(_HEAD)
        or not tail.endswith(_END)
        or not set(hexed) <= _HEX
    ):
        raise MessageError(
            f"{kind}: no MAC where this format writes it (not a {FORMAT} file, or cut short)"
        )
    raw = data[:-_TAIL_SIZE] + b"}"
    try:
        key.verify(
            _tagged(raw, kind=kind, node=node), bytes.fromhex(hexed.decode()), label=_TAG_LABEL
        )
    except InvalidSignature:
        raise InvalidSignature(
            f"{kind}: its MAC does not verify under {node}'s key (edited, torn, or "
            "another node's file)"
        ) from None
    try:  # the bytes are this node's own from here on
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SecurityViolation(f"{kind}: a verified file that is not JSON") from None
    if not isinstance(doc, dict):
        raise SecurityViolation(f"{kind}: a verified file that is not an object")
    found = (doc.get("format"), doc.get("kind"), doc.get("node"))
    if found != (FORMAT, kind, node):
        raise SecurityViolation(
            f"{kind}: a verified file naming {found}, not {(FORMAT, kind, node)}"
        )
    for k in _RESERVED:
        doc.pop(k, None)
    return doc
