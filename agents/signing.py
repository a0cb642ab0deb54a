"""Bundle provenance: ed25519 signatures over a bundle's manifest (optional, off by default).

A bundle's ``manifest.json`` holds the sha256 of every other file, so signing the manifest
signs the bundle. Signing writes the signer (algorithm, key id, public key) into the manifest
and then signs the manifest's exact bytes; the signature goes to ``signature.json``, which is
NOT listed in the manifest (it could not hash itself). Verifying checks, in order: the bundle
has a ``signature.json``; its key is one of the trusted keys; it is the signer the manifest
records; the signature matches the manifest's bytes. The manifest's hashes are checked by the
loader as always, so changing any file (and re-hashing the manifest) breaks the signature.

Key files::

    coinrl-signing.key      the private key, PEM (PKCS#8), mode 0600
    coinrl-signing.pub      one line: ``ed25519 <base64 public key> <comment>``

A trusted-keys file is such lines, one per key (``#`` comments and blank lines ignored), like
an ssh ``authorized_keys`` file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coinrl.pipeline.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ALGORITHM = "ed25519"
SIGNATURE_FILE = "signature.json"
SIGNATURE_FORMAT = "coinrl.signature"

TrustedKeys = Mapping[str, bytes]
"""Trusted public keys: key id -> the 32 raw bytes of an ed25519 public key."""


def key_id(public_raw: bytes) -> str:
    """A key's id: the first 16 hex digits of the sha256 of its raw public bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise DataError(f"{what} is not base64 ({e})") from e


def public_key_line(public_raw: bytes, comment: str = "") -> str:
    """The one-line text form of a public key (the ``.pub`` file, a trusted-keys line)."""
    return f"{ALGORITHM} {_b64(public_raw)} {comment}".rstrip()


def generate_keypair(private_path: str | Path, *, comment: str = "") -> tuple[Path, Path]:
    """Write a new ed25519 key pair: ``private_path`` (0600 PEM) and ``<private_path>.pub``.

    Raises:
        ConfigError: either file exists already (keys are never overwritten).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv = Path(private_path)
    pub = priv.with_name(priv.name + ".pub")
    for p in (priv, pub):
        if p.exists():
            raise ConfigError(f"{p} exists; keys are never overwritten: pick another path")
    priv.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub.write_text(public_key_line(raw, comment or f"coinrl key {key_id(raw)}") + "\n", encoding="utf-8")
    logger.info("keygen key_id=%s private=%s public=%s", key_id(raw), priv, pub)
    return priv, pub


def load_private_key(path: str | Path) -> Any:
    """The ed25519 private key in ``path`` (PEM, readable by its owner only).

    Raises:
        ConfigError: missing, readable by group/others, or not an ed25519 PEM key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"signing key {p} does not exist; create one with `coinrl bundle keygen`")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"signing key {p} has permissions {mode:04o}: too open; chmod 600 {p}")
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{p} is not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{p} holds a {type(key).__name__}, not an ed25519 key")
    return key


def load_trusted_keys(path: str | Path) -> dict[str, bytes]:
    """Parse a trusted-keys file (``ed25519 <base64> [comment]`` per line).

    Raises:
        ConfigError: missing file, a malformed line (with its number), or no key at all.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"trusted-keys file {p} is unreadable ({e})") from e
    keys: dict[str, bytes] = {}
    for n, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(maxsplit=2)
        try:
            raw = _unb64(parts[1], "key") if len(parts) >= 2 and parts[0] == ALGORITHM else b""
        except DataError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                f"{p}:{n} is not a key line; expected 'ed25519 <base64 of 32 bytes> [comment]' "
                "as written by `coinrl bundle keygen` (*.pub)"
            )
        keys[key_id(raw)] = raw
    if not keys:
        raise ConfigError(f"trusted-keys file {p} holds no key; add the signers' .pub lines")
    return keys


def signer_entry(public_raw: bytes) -> dict[str, str]:
    """What the manifest records about its signer."""
    return {"algorithm": ALGORITHM, "key_id": key_id(public_raw), "public_key": _b64(public_raw)}


def sign_manifest(folder: str | Path, private_key: Any) -> dict[str, Any]:
    """Record the signer in ``folder/manifest.json``, sign its bytes, write ``signature.json``.

    The caller has verified the manifest's hashes. Returns the signature record.
    """
    from cryptography.hazmat.primitives import serialization

    root = Path(folder)
    mpath = root / "manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    manifest["signer"] = signer_entry(raw)
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    mpath.write_bytes(body)
    record = {
        "format": SIGNATURE_FORMAT,
        **signer_entry(raw),
        "manifest_sha256": hashlib.sha256(body).hexdigest(),
        "signed_ts_ms": int(time.time() * 1000),
        "signature": _b64(private_key.sign(body)),
    }
    (root / SIGNATURE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("signed bundle path=%s key_id=%s", root, record["key_id"])
    return record


def verify_signature(folder: str | Path, trusted: TrustedKeys) -> dict[str, str]:
    """Check ``folder``'s signature against ``trusted`` keys; return the signer entry.

    Raises:
        DataError: unsigned, signed by an untrusted key, a signer other than the manifest's,
            or a signature that does not match the manifest (modified after signing).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    root = Path(folder)
    spath = root / SIGNATURE_FILE
    if not spath.is_file():
        raise DataError(
            f"{root} is not signed (no {SIGNATURE_FILE}) and trusted keys were given; sign it "
            "with `coinrl bundle sign BUNDLE --key KEY`, or get a signed copy from its author"
        )
    try:
        record = json.loads(spath.read_text(encoding="utf-8"))
        body = (root / "manifest.json").read_bytes()
        manifest = json.loads(body.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{root}: the signature or manifest is unreadable ({e})") from e
    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM:
        raise DataError(f"{root}: {SIGNATURE_FILE} is not an {ALGORITHM} signature")
    raw = _unb64(record.get("public_key", ""), f"{root}: the signer's public key")
    kid = key_id(raw)
    if trusted.get(kid) != raw:
        raise DataError(
            f"{root} is signed by key {kid}, which is not one of the {len(trusted)} trusted "
            "keys; do not run it unless you trust that signer (then add its .pub line)"
        )
    signer = manifest.get("signer") if isinstance(manifest, dict) else None
    if signer != signer_entry(raw):
        raise DataError(f"{root}: the manifest does not record key {kid} as its signer (modified)")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(_unb64(record.get("signature", ""), "signature"), body)
    except InvalidSignature as e:
        raise DataError(
            f"{root}: the signature does not match manifest.json: the bundle was modified after "
            f"key {kid} signed it; do not use it"
        ) from e
    return dict(signer)


__all__ = [
    "ALGORITHM",
    "SIGNATURE_FILE",
    "TrustedKeys",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_trusted_keys",
    "public_key_line",
    "sign_manifest",
    "signer_entry",
    "verify_signature",
]
