"""Exceptions raised by the storage layer.

Every error callrec raises on purpose derives from ``CallrecError``; each package
has one base below it, and the edges (HTTP, SIP, CLI) translate them in one place.

    CallrecError
    └── StorageError
        ├── ConfigError           settings that cannot work (bad master key, placeholder secret)
        ├── DatabaseUnavailable   the database cannot be reached or refused us
        │   └── AuditChainBroken  the audit chain's head does not match its anchor
        ├── ObjectStoreError
        │   ├── ObjectNotFound    no such key or version
        │   ├── StoreUnavailable  the S3 endpoint cannot be reached
        │   ├── StoreAccessDenied the S3 endpoint refused our credentials or the request
        │   └── BackendUnsupported the S3 endpoint lacks a feature callrec relies on
        ├── EmbeddedS3Error       the embedded SeaweedFS could not be started
        ├── IntegrityError        ciphertext or wrapped key failed authentication
        ├── KeyDestroyed          the key was destroyed: its data is gone for good
        ├── InvalidTransition     a recording cannot move to the state asked for
        └── RecordingExists       the call already has a recording
"""

from collections.abc import Mapping
from typing import ClassVar


class CallrecError(Exception):
    """Base of every error callrec raises on purpose.

    ``code`` is the stable error code shown to clients; a subclass sets its default and
    a raise site may pass a more precise one.
    """

    code = "internal_error"
    # Headers an answer to this error carries (``Allow`` on a 405, say).
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class StorageError(CallrecError):
    """Base of the storage layer's errors."""


class ConfigError(StorageError):
    """The configuration cannot work."""

    code = "config_error"


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or refused the connection."""

    code = "database_unavailable"


class AuditChainBroken(DatabaseUnavailable):
    """The audit chain's newest event does not match its anchor: nothing is appended.

    A database whose audit chain was tampered with cannot take writes that must be
    audited, so to every caller it is a database that is unavailable (the call hook
    answers do-not-record, routes answer 503); appending would re-anchor the tampering.
    """

    code = "audit_chain_broken"


class ObjectStoreError(StorageError):
    """An S3 request failed."""

    code = "storage_error"


class ObjectNotFound(ObjectStoreError):
    """The key (or the version) does not exist."""

    code = "not_found"


class StoreUnavailable(ObjectStoreError):
    """The S3 endpoint cannot be reached."""

    code = "storage_unavailable"


class StoreAccessDenied(ObjectStoreError):
    """The S3 endpoint refused the credentials or the request."""

    code = "storage_access_denied"


class BackendUnsupported(ObjectStoreError):
    """The S3 endpoint does not do something callrec relies on."""

    code = "storage_unsupported"


class EmbeddedS3Error(StorageError):
    """The embedded SeaweedFS could not be started or stopped."""

    code = "embedded_s3_error"


class IntegrityError(StorageError):
    """Ciphertext or a wrapped key failed authentication: tampered, truncated or wrong key."""

    code = "integrity_error"


class KeyDestroyed(StorageError):
    """The key was destroyed; what it protected can never be read again."""

    code = "key_destroyed"


class InvalidTransition(StorageError):
    """A recording cannot move from its current state to the one asked for."""

    code = "invalid_state"


class RecordingExists(StorageError):
    """The call already has a recording (one that did not fail); the database said so."""

    code = "recording_exists"
