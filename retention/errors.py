"""Exceptions raised by the retention layer (the HTTP edge maps each to its status).

CallrecError
└── RetentionError
    ├── NotFound            no such hold or subject request, or another client's
    ├── InvalidRequest      well-formed, but not acceptable (a bad phone number…)
    └── StateConflict       not possible in the current state (a hold already released…)
"""

from storage.errors import CallrecError


class RetentionError(CallrecError):
    """Base of the retention layer's errors."""


class NotFound(RetentionError):
    code = "not_found"


class InvalidRequest(RetentionError):
    code = "invalid_request"


class StateConflict(RetentionError):
    code = "conflict"
