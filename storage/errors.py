"""Exceptions raised by the storage layer.

Every error callrec raises on purpose derives from ``CallrecError``; each package
has one base below it, and the edges (HTTP, SIP, CLI) translate them in one place.

    CallrecError
    └── StorageError
        ├── ConfigError           settings that cannot work (bad master key, placeholder secret)
        ├── DatabaseUnavailable   the database cannot be reached or refused us
        ├── ObjectStoreError
        │   ├── ObjectNotFound    no such key or version
        │   ├── StoreUnavailable  the S3 endpoint cannot be reached
        │   ├── StoreAccessDenied the S3 endpoint refused our credentials or the request
        │   └── BackendUnsupported the S3 endpoint lacks a feature callrec relies on
        ├── EmbeddedS3Error       the embedded SeaweedFS could not be started
        ├── IntegrityError        ciphertext or wrapped key failed authentication
        ├── KeyDestroyed          the key was destroyed: its data is gone for good
        └── InvalidTransition     a recording cannot move to the state asked for
"""


class CallrecError(Exception):
    """Base of every error callrec raises on purpose."""


class StorageError(CallrecError):
    """Base of the storage layer's errors."""


class ConfigError(StorageError):
    """The configuration cannot work."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or refused the connection."""


class ObjectStoreError(StorageError):
    """An S3 request failed."""


class ObjectNotFound(ObjectStoreError):
    """The key (or the version) does not exist."""


class StoreUnavailable(ObjectStoreError):
    """The S3 endpoint cannot be reached."""


class StoreAccessDenied(ObjectStoreError):
    """The S3 endpoint refused the credentials or the request."""


class BackendUnsupported(ObjectStoreError):
    """The S3 endpoint does not do something callrec relies on."""


class EmbeddedS3Error(StorageError):
    """The embedded SeaweedFS could not be started or stopped."""


class IntegrityError(StorageError):
    """Ciphertext or a wrapped key failed authentication: tampered, truncated or wrong key."""


class KeyDestroyed(StorageError):
    """The key was destroyed; what it protected can never be read again."""


class InvalidTransition(StorageError):
    """A recording cannot move from its current state to the one asked for."""
