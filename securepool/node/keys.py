"""A node's identity key file: created by ``securepool keygen``, readable by its owner only.

File format: ``b"SPIK"`` | version byte 1 | the 32-byte Ed25519 seed (RFC 8032). The
public half goes to ``KEYFILE.pub`` (hex, one line): that file is what the PKI
distributes; the key file itself never leaves the node's machine and never goes into a
message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from crypto.errors import ConfigError, KeyMaterialError
from crypto.signing import IdentityKey

MAGIC = b"SPIK\x01"
SEED_BYTES = 32


def public_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".pub")


def keygen(key_file: Path) -> bytes:
    """Create ``key_file`` (mode 0600, refusing to overwrite) and ``KEYFILE.pub``.

    Security: the seed comes from ``os.urandom``; the file is created with
    ``O_CREAT | O_EXCL`` and mode 0600 in one call, so it is never readable by others,
    not even for an instant. Returns the 32-byte public key.
    """
    key_file = Path(key_file)
    public = public_path(key_file)
    if key_file.is_dir():
        raise ConfigError(
            [
                f"--out {key_file} is a directory; keygen writes one key file: name the "
                f"file, e.g. --out {key_file / 'node.key'} (its public key goes beside it, "
                f"{public_path(key_file / 'node.key').name})"
            ]
        )
    for path, what in ((key_file, ""), (public, " (where the public key would go)")):
        if path.exists() or path.is_symlink():
            raise ConfigError(
                [
                    f"{path}{what} already exists: refusing to overwrite it; choose "
                    "another --out, or move the old file away first if it is no longer used"
                ]
            )
    for parent in (key_file.parent, *key_file.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError([f"cannot create {key_file}: {parent} is a file"])
            break
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # new ones private
    seed = os.urandom(SEED_BYTES)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, MAGIC + seed)
        os.fsync(fd)
    finally:
        os.close(fd)
    key = IdentityKey.from_private_bytes(seed).public_bytes()
    public.write_text(key.hex() + "\n", encoding="ascii")
    return key


def load_identity(key_file: Path) -> IdentityKey:
    """Load a key file made by :func:`keygen`.

    Security: refuses (KeyMaterialError) a file that is not a regular file owned by this
    user, or that group or others may read or write (mode & 0o077), like ssh does.
    """
    key_file = Path(key_file)
    try:
        st = os.stat(key_file, follow_symlinks=False)
    except FileNotFoundError:
        raise KeyMaterialError(f"identity key {key_file} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyMaterialError(f"identity key {key_file} is not a regular file")
    if st.st_uid != os.getuid():
        raise KeyMaterialError(f"identity key {key_file} is owned by another user")
    if st.st_mode & 0o077:
        raise KeyMaterialError(
            f"identity key {key_file} has mode {stat.S_IMODE(st.st_mode):04o}: group or "
            "others can access it; chmod 600 it (refusing to use it)"
        )
    raw = key_file.read_bytes()
    if len(raw) != len(MAGIC) + SEED_BYTES or not raw.startswith(MAGIC):
        raise KeyMaterialError(f"{key_file} is not a SecurePool identity key file")
    return IdentityKey.from_private_bytes(raw[len(MAGIC) :])


def load_public(pub_file: Path) -> bytes:
    """A 32-byte public key from a ``.pub`` file (hex)."""
    text = Path(pub_file).read_text(encoding="ascii").strip()
    try:
        public = bytes.fromhex(text)
    except ValueError:
        raise KeyMaterialError(f"{pub_file} is not a hex public key") from None
    if len(public) != 32:
        raise KeyMaterialError(f"{pub_file}: a public key is 32 bytes, got {len(public)}")
    return public


def load_or_create(key_file: Path) -> IdentityKey:
    """The node's key: loaded if the file exists, else created first (demo nodes)."""
    if not Path(key_file).exists():
        keygen(key_file)
    return load_identity(key_file)
