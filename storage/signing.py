"""The Ed25519 key that signs evidence packs: from ``CALLREC_SIGNING_KEY``, or made once.

An inspector checks a pack against the public key the operator publishes
(``GET /v1/evidence/signing-key``), so the key must outlive any one process: unset, it
is generated on first use under ``DATA_DIR/signing.key`` (PKCS#8 PEM, mode 0600). Two
processes starting together must end up with the same key, so the file is written in
full under a temporary name and then hard-linked into place: the link either creates the
file whole or fails because the other process's key is already there, which is then
read. Replicas sharing a database should share ``CALLREC_SIGNING_KEY``: each generated
key is its data dir's own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from storage.errors import ConfigError
from storage.secret_files import create_once
from storage.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "signing.key"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key, in the forms people and tools exchange it."""

    key: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.key.public_bytes(*_RAW)

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """``SHA256:`` and the hex SHA-256 of the raw 32-byte key: short enough to read out."""
        return "SHA256:" + hashlib.sha256(self.raw).hexdigest()

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """The private key: signs, and tells its public half."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = PublicKey(key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def to_pem(self) -> str:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")


def parse_signing_key(text: str) -> SigningKey:
    """A PKCS#8 PEM Ed25519 private key, or its raw 32 bytes as base64 (standard or urlsafe)."""
    # Messages describe the problem, never the value: they end up in logs.
    value = text.strip()
    if value.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(value.encode("ascii"), password=None)
        except (ValueError, TypeError):
            raise ConfigError("signing key: not a readable unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("signing key: the PEM holds a key that is not Ed25519")
        return SigningKey(key)
    padded = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("signing key: neither a PEM key nor base64") from None
    if len(raw) != 32:
        raise ConfigError(f"signing key: an Ed25519 key is 32 bytes, this decodes to {len(raw)}")
    return SigningKey(Ed25519PrivateKey.from_private_bytes(raw))


def parse_public_key(text: str) -> PublicKey:
    """A public key as ``GET /v1/evidence/signing-key`` gives it: PEM or raw base64."""
    value = text.strip()
    if value.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(value.encode("ascii"))
        except (ValueError, TypeError):
            raise ConfigError("public key: not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("public key: the PEM holds a key that is not Ed25519")
        return PublicKey(key)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("public key: neither PEM nor base64") from None
    if len(raw) != 32:
        raise ConfigError(f"public key: an Ed25519 key is 32 bytes, this decodes to {len(raw)}")
    return PublicKey(Ed25519PublicKey.from_public_bytes(raw))


def signing_key(settings: Settings) -> SigningKey:
    """The key from ``CALLREC_SIGNING_KEY``, else the one under DATA_DIR (made if missing)."""
    if settings.signing_key is not None:
        return parse_signing_key(settings.signing_key.get_secret_value())
    path = settings.data_dir / KEY_FILE
    if not path.exists() and create_once(path, SigningKey.generate().to_pem()):
        log.info("generated an evidence signing key at %s", path)
    return parse_signing_key(path.read_text())


def existing_signing_key(settings: Settings) -> SigningKey | None:
    """The key this installation signs with, without making one (for checking packs)."""
    if settings.signing_key is not None:
        return parse_signing_key(settings.signing_key.get_secret_value())
    path = settings.data_dir / KEY_FILE
    return parse_signing_key(path.read_text()) if path.exists() else None
