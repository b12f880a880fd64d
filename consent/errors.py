"""Exceptions raised by the consent layer (the HTTP edge maps each to its status).

CallrecError
└── ConsentError
    ├── NotFound            unknown id, or another tenant's: the same answer for both
    ├── AlreadyExists       the id is taken
    ├── Unauthenticated     no key, or a key that is unknown or revoked
    ├── PermissionDenied    the key's role may not do this
    ├── InvalidRequest      well-formed, but not acceptable (bad phone, bad purpose…)
    ├── PayloadTooLarge     the body is over the configured limit
    ├── UnsupportedMedia    a content type callrec does not take
    └── StateConflict       not possible in the current state (no consent for the call…)
"""

from storage.errors import CallrecError


class ConsentError(CallrecError):
    """Base of the consent layer's errors."""


class NotFound(ConsentError):
    code = "not_found"


class AlreadyExists(ConsentError):
    code = "already_exists"


class Unauthenticated(ConsentError):
    code = "unauthorized"


class PermissionDenied(ConsentError):
    code = "forbidden"


class InvalidRequest(ConsentError):
    code = "invalid_request"


class PayloadTooLarge(ConsentError):
    code = "payload_too_large"


class UnsupportedMedia(ConsentError):
    code = "unsupported_media_type"


class StateConflict(ConsentError):
    code = "conflict"
